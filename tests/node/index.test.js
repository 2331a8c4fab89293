'use strict';
// The package's public face (sdk/libchat/index.js): the same API as before the
// split into files, and requiring it for the pure helpers has no side effects.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { SDK, SDK_DIR } = require('./helpers');

test('index.js exports the whole public API', () => {
  const chat = require(SDK);
  assert.deepEqual(Object.keys(chat).sort(), [
    'FrameDecoder', 'FrameError', 'HEADER_SIZE', 'MAGIC', 'MAX_FRAME', 'MemoryClient', 'MemoryError',
    'VERSION', 'dialog', 'encodeFrame', 'end', 'exit', 'memory', 'onClose', 'onDisconnect',
    'onMessage', 'parseArgs', 'reply', 'unsupported',
  ]);
  assert.equal(chat.encodeFrame, require(`${SDK}/frame.js`).encodeFrame);
  assert.equal(chat.MemoryClient, require(`${SDK}/memory.js`).MemoryClient);
  assert.equal(chat.dialog, null);
  assert.deepEqual([chat.MAGIC, chat.VERSION, chat.HEADER_SIZE, chat.MAX_FRAME], [0x4c434854, 1, 16, 4 << 20]);
});

test("require('libchat') for encodeFrame alone starts no runtime (no socket, no exit 2)", () => {
  const out = spawnSync(process.execPath, ['-e', `
    const { encodeFrame, FrameDecoder } = require('libchat');
    const [e] = new FrameDecoder().push(encodeFrame({ event_type: 2001, x: 1 }));
    setTimeout(() => console.log('still here', e.x), 20);
  `], { env: { ...process.env, NODE_PATH: SDK_DIR }, encoding: 'utf8', timeout: 10000 });
  assert.equal(out.status, 0, out.stderr);
  assert.equal(out.stdout, 'still here 1\n');
  assert.equal(out.stderr, '');
});

test('the package has no dependencies and says which Node it needs', () => {
  const pkg = require(`${SDK}/package.json`);
  assert.equal(pkg.name, 'libchat');
  assert.equal(pkg.main, 'index.js');
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.engines.node, '>=18');
});
