'use strict';
// Launch arguments and environment (sdk/libchat/args.js).
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const { SDK } = require('./helpers');

const { parseArgs, parseMagic, settings, UsageError, USAGE } = require(`${SDK}/args.js`);
const { MAGIC, MAX_FRAME } = require(`${SDK}/frame.js`);

describe('parseArgs', () => {
  test('forms and defaults', () => {
    assert.deepEqual(parseArgs(['--socket=/tmp/a.sock', '--port=8083']), { socket: '/tmp/a.sock', port: 8083 });
    assert.deepEqual(parseArgs(['--socket', '/tmp/b', '--port', '1']), { socket: '/tmp/b', port: 1 });
    assert.deepEqual(parseArgs(['/usr/bin/node', 'x.js', '--socket=/s=x']), { socket: '/s=x', port: null });
    assert.deepEqual(parseArgs([]), { socket: null, port: null });
  });

  test('--port=0 means "no TCP port" and is accepted', () => {
    assert.deepEqual(parseArgs(['--socket=/s', '--port=0']), { socket: '/s', port: 0 });
  });

  test('a port that is not an integer in 0..65535 is a UsageError', () => {
    assert.throws(() => parseArgs(['--port=abc']), UsageError);
    assert.throws(() => parseArgs(['--port=70000']), UsageError);
    assert.throws(() => parseArgs(['--port=-1']), UsageError);
  });
});

describe('settings', () => {
  test('defaults when libchat sets nothing but --socket', () => {
    assert.deepEqual(settings(['--socket=/s'], {}), {
      socket: '/s', port: null, magic: MAGIC, maxFrame: MAX_FRAME,
      token: null, apiHost: '127.0.0.1', apiSocket: null,
    });
  });

  test('reads every LIBCHAT_* variable', () => {
    const env = {
      LIBCHAT_MAGIC: '0x01020304', LIBCHAT_MAX_FRAME: '1024', LIBCHAT_TOKEN: 't',
      LIBCHAT_API_HOST: '::1', LIBCHAT_API_SOCKET: '/run/api.sock',
    };
    assert.deepEqual(settings(['--socket=/s', '--port=0'], env), {
      socket: '/s', port: 0, magic: 0x01020304, maxFrame: 1024,
      token: 't', apiHost: '::1', apiSocket: '/run/api.sock',
    });
  });

  test('missing --socket is a UsageError; the usage line names both arguments', () => {
    assert.throws(() => settings([], {}), { name: 'UsageError', message: 'missing --socket' });
    assert.match(USAGE, /--socket=PATH.*--port=API_PORT/);
  });

  test('a bad environment value is reported and replaced by its default', () => {
    const warnings = [];
    const got = settings(['--socket=/s'], { LIBCHAT_MAGIC: 'LCHT', LIBCHAT_MAX_FRAME: '1e6' }, (w) => warnings.push(w));
    assert.equal(got.magic, MAGIC);
    assert.equal(got.maxFrame, MAX_FRAME);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0], /ignoring bad LIBCHAT_MAGIC=LCHT/);
    assert.match(warnings[1], /ignoring bad LIBCHAT_MAX_FRAME=1e6/);
  });

  test('parseMagic takes decimal or 0x-hex uint32 only', () => {
    assert.equal(parseMagic('16909060'), 0x01020304);
    assert.equal(parseMagic(' 0x4C434854 '), MAGIC);
    assert.throws(() => parseMagic('0x1ffffffff'), RangeError);
    assert.throws(() => parseMagic('-1'), RangeError);
  });
});
