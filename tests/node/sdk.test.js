'use strict';
// Tests for the Node SDK (libchat/runtimes/node/sdk/libchat/). Run: node --test tests/node/
const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const SDK_DIR = path.join(ROOT, 'libchat', 'runtimes', 'node', 'sdk');
const chat = require(path.join(SDK_DIR, 'libchat'));
const { encodeFrame, FrameDecoder, parseArgs, MAGIC, VERSION, MemoryClient, MemoryError } = chat;

const TIMEOUT = 10000;

function header({ magic = MAGIC, version = VERSION, type = 1001, length = 0 } = {}) {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(magic, 0);
  h.writeUInt16BE(version, 4);
  h.writeUInt16BE(type, 6);
  h.writeUInt32BE(length, 8);
  return h;
}

const sample = (i) => ({ event_type: 1001, dialog_id: 'd1', user_id: 'u1', message_id: `m${i}`, messages: { content: `hi ${i}`, attachments: [] } });

describe('encodeFrame / FrameDecoder', () => {
  test('round trip with non-ASCII uses the UTF-8 byte length', () => {
    const event = { event_type: 2001, dialog_id: 'd', user_id: 'u', messages: { content: '你好, wörld 🚀', attachments: [] } };
    const frame = encodeFrame(event);
    const json = JSON.stringify(event);
    assert.equal(frame.readUInt32BE(0), MAGIC);
    assert.equal(frame.readUInt16BE(4), VERSION);
    assert.equal(frame.readUInt16BE(6), 2001);
    assert.equal(frame.readUInt32BE(8), Buffer.byteLength(json));
    assert.notEqual(Buffer.byteLength(json), json.length);
    assert.equal(frame.readUInt32BE(12), 0);
    assert.equal(frame.length, 16 + Buffer.byteLength(json));
    assert.deepEqual(new FrameDecoder().push(frame), [event]);
  });

  test('custom magic', () => {
    const frame = encodeFrame(sample(0), 0x12345678);
    assert.equal(frame.readUInt32BE(0), 0x12345678);
    assert.deepEqual(new FrameDecoder({ magic: 0x12345678 }).push(frame), [sample(0)]);
    assert.throws(() => new FrameDecoder().push(frame), { code: 'BAD_FRAME' });
  });

  test('encodeFrame rejects bad events', () => {
    assert.throws(() => encodeFrame(null), TypeError);
    assert.throws(() => encodeFrame([1]), TypeError);
    assert.throws(() => encodeFrame({ event_type: 'x' }), RangeError);
    assert.throws(() => encodeFrame({ event_type: 70000 }), RangeError);
  });

  test('frames split at every byte', () => {
    const stream = Buffer.concat([encodeFrame(sample(1)), encodeFrame({ event_type: 2001, dialog_id: 'd', user_id: 'u', messages: { content: 'ü€😀' } }), encodeFrame(sample(3))]);
    const dec = new FrameDecoder();
    const got = [];
    for (let i = 0; i < stream.length; i++) got.push(...dec.push(stream.subarray(i, i + 1)));
    assert.equal(got.length, 3);
    assert.deepEqual(got[0], sample(1));
    assert.equal(got[1].messages.content, 'ü€😀');
    assert.deepEqual(got[2], sample(3));
    assert.equal(dec.pending, 0);
  });

  test('many frames in one chunk, plus a partial tail', () => {
    const frames = [];
    for (let i = 0; i < 500; i++) frames.push(encodeFrame(sample(i)));
    const all = Buffer.concat(frames);
    const dec = new FrameDecoder();
    const tail = frames[499].length - 5;
    const got = dec.push(all.subarray(0, all.length - tail));
    assert.equal(got.length, 499);
    assert.deepEqual(got[498], sample(498));
    assert.deepEqual(dec.push(all.subarray(all.length - tail)), [sample(499)]);
  });

  test('large frame in small chunks', () => {
    const event = { event_type: 1001, dialog_id: 'd', user_id: 'u', messages: { content: 'x'.repeat(3 * 1024 * 1024) } };
    const frame = encodeFrame(event);
    const dec = new FrameDecoder();
    const got = [];
    for (let i = 0; i < frame.length; i += 1000) got.push(...dec.push(frame.subarray(i, i + 1000)));
    assert.equal(got.length, 1);
    assert.equal(got[0].messages.content.length, 3 * 1024 * 1024);
  });

  test('oversize length is rejected from the header alone', () => {
    const dec = new FrameDecoder({ maxFrame: 1024 });
    assert.deepEqual(dec.push(header({ length: 1025 }).subarray(0, 15)), []);
    assert.throws(() => dec.push(header({ length: 1025 }).subarray(15)), { code: 'MSG_TOO_LARGE' });
    assert.equal(dec.pending, 0, 'no body bytes buffered');
    assert.throws(() => dec.push(Buffer.alloc(10)), { code: 'MSG_TOO_LARGE' }, 'stays failed');
    // Exactly the maximum is fine.
    const ok = new FrameDecoder({ maxFrame: Buffer.byteLength(JSON.stringify(sample(1))) });
    assert.deepEqual(ok.push(encodeFrame(sample(1))), [sample(1)]);
  });

  test('default maximum is 4 MiB', () => {
    assert.throws(() => new FrameDecoder().push(header({ length: 4 * 1024 * 1024 + 1 })), { code: 'MSG_TOO_LARGE' });
  });

  test('bad magic and bad version are rejected', () => {
    assert.throws(() => new FrameDecoder().push(Buffer.alloc(32, 0x5a)), { code: 'BAD_FRAME' });
    assert.throws(() => new FrameDecoder().push(header({ version: 2 })), { code: 'BAD_FRAME' });
    // Frames decoded before the bad header are handed over on the error.
    try {
      new FrameDecoder().push(Buffer.concat([encodeFrame(sample(1)), Buffer.alloc(16)]));
      assert.fail('should throw');
    } catch (err) {
      assert.equal(err.code, 'BAD_FRAME');
      assert.deepEqual(err.events, [sample(1)]);
    }
  });

  test('bad bodies are reported and skipped, the stream stays in sync', () => {
    const invalid = [];
    const dec = new FrameDecoder({ onInvalid: (e) => invalid.push(e) });
    const body = (text, type = 1001) => Buffer.concat([header({ type, length: Buffer.byteLength(text) }), Buffer.from(text)]);
    const got = dec.push(Buffer.concat([body('not json'), body('[1,2]'), body('{"event_type":1002}', 1001), encodeFrame(sample(7))]));
    assert.deepEqual(got, [sample(7)]);
    assert.deepEqual(invalid.map((e) => e.code), ['BAD_REQUEST', 'BAD_REQUEST', 'BAD_REQUEST']);
  });
});

describe('parseArgs', () => {
  test('forms and defaults', () => {
    assert.deepEqual(parseArgs(['--socket=/tmp/a.sock', '--port=8083']), { socket: '/tmp/a.sock', port: 8083 });
    assert.deepEqual(parseArgs(['--socket', '/tmp/b', '--port', '1']), { socket: '/tmp/b', port: 1 });
    assert.deepEqual(parseArgs(['/usr/bin/node', 'x.js', '--socket=/s=x']), { socket: '/s=x', port: null });
    assert.deepEqual(parseArgs([]), { socket: null, port: null });
    assert.throws(() => parseArgs(['--port=abc']));
    assert.throws(() => parseArgs(['--port=70000']));
  });
});

describe('MemoryClient', () => {
  let server;
  const seen = [];
  after(() => server && server.close());

  test('get/set send the right body and Authorization header', async () => {
    const store = new Map();
    server = http.createServer((req, res) => {
      let text = '';
      req.on('data', (d) => { text += d; });
      req.on('end', () => {
        const body = JSON.parse(text);
        seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, type: req.headers['content-type'], body });
        res.setHeader('Content-Type', 'application/json');
        if (req.headers.authorization !== 'Bearer s3cret') {
          res.statusCode = 401;
          res.end(JSON.stringify({ code: 'UNAUTHORIZED', message: 'bad token' }));
        } else if (body.action === 'save_tool_memory') {
          store.set(body.key, body.value);
          res.end(JSON.stringify({ event_type: 3000, action: 'save_tool_memory', key: body.key, ok: true }));
        } else {
          res.end(JSON.stringify({ event_type: 3000, action: 'get_tool_memory', key: body.key, value: store.has(body.key) ? store.get(body.key) : null }));
        }
      });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const port = server.address().port;
    const mem = new MemoryClient({ port, token: 's3cret', userId: () => 'u1' });

    assert.equal(await mem.get('name'), null);
    assert.equal(await mem.set('name', { first: 'Ada', n: [1, '二'] }), true);
    assert.deepEqual(await mem.get('name'), { first: 'Ada', n: [1, '二'] });
    assert.deepEqual(seen[0], {
      method: 'POST', url: '/memory', auth: 'Bearer s3cret', type: 'application/json',
      body: { event_type: 3000, action: 'query_tool_memory', key: 'name', user_id: 'u1' },
    });
    assert.deepEqual(seen[1].body, { event_type: 3000, action: 'save_tool_memory', key: 'name', value: { first: 'Ada', n: [1, '二'] }, user_id: 'u1' });

    const bad = new MemoryClient({ port, token: 'wrong', userId: 'u1' });
    await assert.rejects(bad.get('name'), (err) => {
      assert.ok(err instanceof MemoryError);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'UNAUTHORIZED');
      assert.deepEqual(JSON.parse(err.body), { code: 'UNAUTHORIZED', message: 'bad token' });
      return true;
    });
    await assert.rejects(mem.get(''), TypeError);
  });
});

// ---------------------------------------------------------------------------
// End to end: the test plays libchat's part.
// ---------------------------------------------------------------------------

/** A Unix socket "libchat" side: accepts one program connection. */
async function listen({ magic = MAGIC } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'libchat-test-'));
  fs.chmodSync(dir, 0o700);
  const sockPath = path.join(dir, 'p.sock');
  const server = net.createServer();
  const events = [];
  let waiters = [];
  const conn = new Promise((resolve) => server.once('connection', resolve));
  server.on('connection', (sock) => {
    const dec = new FrameDecoder({ magic });
    sock.on('data', (d) => {
      events.push(...dec.push(d));
      waiters = waiters.filter((w) => !w());
    });
    sock.on('error', () => {});
  });
  await new Promise((r) => server.listen(sockPath, r));
  fs.chmodSync(sockPath, 0o600);
  return {
    sockPath,
    events,
    conn,
    async send(event) { (await conn).write(encodeFrame(event, magic)); },
    /** Resolve once `count` events arrived (bounded). */
    waitEvents(count, ms = TIMEOUT) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timeout waiting for ${count} events, got ${JSON.stringify(events)}`)), ms);
        const check = () => {
          if (events.length < count) return false;
          clearTimeout(timer);
          resolve(events.slice());
          return true;
        };
        if (!check()) waiters.push(check);
      });
    },
    close() {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const children = new Set();
const cleanups = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const fn of cleanups) fn();
});

function run(program, args, env = {}) {
  const dir = path.dirname(program);
  const child = spawn(process.execPath, [program, ...args], {
    cwd: dir,
    env: { ...process.env, NODE_PATH: SDK_DIR, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  child.output = '';
  child.stdout.on('data', (d) => { child.output += d; });
  child.stderr.on('data', (d) => { child.output += d; });
  child.exited = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${program} did not exit; output: ${child.output}`)), TIMEOUT);
    timer.unref();
    child.on('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal }); });
  });
  child.exited.catch(() => {}); // only awaited by some tests
  return child;
}

const msg = (content, id = 'm1') => ({ event_type: 1001, dialog_id: 'dlg-1', user_id: 'user-1', message_id: id, messages: { content, attachments: [] } });

describe('end to end', () => {
  test('echo: 1001 -> 2001, then 1002 -> process exits 0', async () => {
    const lc = await listen();
    cleanups.push(() => lc.close());
    const child = run(path.join(ROOT, 'programs', 'echo', 'echo.js'), [`--socket=${lc.sockPath}`, '--port=1']);
    await lc.send(msg('héllo 你好'));
    const [ev] = await lc.waitEvents(1);
    assert.deepEqual(ev, {
      event_type: 2001, dialog_id: 'dlg-1', user_id: 'user-1', message_id: 'm1',
      messages: { content: 'echo: héllo 你好', attachments: [] },
    });
    await lc.send({ event_type: 1002, dialog_id: 'dlg-1', user_id: 'user-1' });
    assert.deepEqual(await child.exited, { code: 0, signal: null });
  });

  test('messages are handled one at a time, in order; "bye" sends 2002', async () => {
    const lc = await listen();
    cleanups.push(() => lc.close());
    const child = run(path.join(ROOT, 'programs', 'echo', 'echo.js'), [`--socket=${lc.sockPath}`]);
    const conn = await lc.conn;
    // Three messages in one write.
    conn.write(Buffer.concat([encodeFrame(msg('a', 'm1')), encodeFrame(msg('b', 'm2')), encodeFrame(msg('bye', 'm3'))]));
    const events = await lc.waitEvents(4);
    assert.deepEqual(events.map((e) => [e.event_type, e.message_id, e.messages && e.messages.content]), [
      [2001, 'm1', 'echo: a'], [2001, 'm2', 'echo: b'], [2001, 'm3', 'echo: bye'], [2002, undefined, undefined],
    ]);
    // After 2002 the socket is unref()'d: the program exits by itself.
    assert.equal((await child.exited).code, 0);
  });

  test('stdin EOF (libchat died) makes the program exit', async () => {
    const lc = await listen();
    cleanups.push(() => lc.close());
    const child = run(path.join(ROOT, 'programs', 'echo', 'echo.js'), [`--socket=${lc.sockPath}`]);
    await lc.conn;
    child.stdin.end();
    assert.equal((await child.exited).code, 0);
  });

  test('socket closed by libchat makes the program exit', async () => {
    const lc = await listen();
    cleanups.push(() => lc.close());
    const child = run(path.join(ROOT, 'programs', 'echo', 'echo.js'), [`--socket=${lc.sockPath}`]);
    (await lc.conn).end();
    assert.equal((await child.exited).code, 0);
  });

  test('bad frame from libchat: program disconnects and exits 1', async () => {
    const lc = await listen();
    cleanups.push(() => lc.close());
    const child = run(path.join(ROOT, 'programs', 'echo', 'echo.js'), [`--socket=${lc.sockPath}`]);
    (await lc.conn).write(Buffer.alloc(32, 0x5a));
    assert.equal((await child.exited).code, 1);
    assert.match(child.output, /bad frame/);
  });

  test('missing --socket prints usage and exits 2', async () => {
    const child = run(path.join(ROOT, 'programs', 'echo', 'echo.js'), []);
    assert.equal((await child.exited).code, 2);
    assert.match(child.output, /usage/);
  });

  test('LIBCHAT_MAGIC is honoured', async () => {
    const lc = await listen({ magic: 0x01020304 });
    cleanups.push(() => lc.close());
    const child = run(path.join(ROOT, 'programs', 'echo', 'echo.js'), [`--socket=${lc.sockPath}`], { LIBCHAT_MAGIC: '16909060' });
    await lc.send(msg('x'));
    const [ev] = await lc.waitEvents(1);
    assert.equal(ev.messages.content, 'echo: x');
    child.kill();
  });

  test('a throwing handler is logged and skipped; dialog; onClose hook runs before exit', async () => {
    const lc = await listen();
    cleanups.push(() => lc.close());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'libchat-prog-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const prog = path.join(dir, 'p.js');
    fs.writeFileSync(prog, `
      const chat = require('libchat');
      chat.onMessage(async (msg) => {
        if (msg.content === 'boom') throw new Error('kaboom');
        await new Promise((r) => setTimeout(r, 50)); // the next message must wait
        chat.reply(JSON.stringify({ dialog: chat.dialog, content: msg.content, attachments: msg.attachments }));
      });
      chat.onClose(async (event) => { chat.reply('bye ' + event.dialog_id); });
    `);
    const child = run(prog, [`--socket=${lc.sockPath}`]);
    (await lc.conn).write(Buffer.concat([encodeFrame(msg('boom', 'm1')), encodeFrame(msg('a', 'm2')), encodeFrame(msg('b', 'm3'))]));
    const events = await lc.waitEvents(2);
    assert.deepEqual(events.map((e) => JSON.parse(e.messages.content)), [
      { dialog: { dialogId: 'dlg-1', userId: 'user-1' }, content: 'a', attachments: [] },
      { dialog: { dialogId: 'dlg-1', userId: 'user-1' }, content: 'b', attachments: [] },
    ]);
    assert.deepEqual(events.map((e) => e.message_id), ['m2', 'm3']);
    assert.match(child.output, /kaboom/);
    await lc.send({ event_type: 1002, dialog_id: 'dlg-1', user_id: 'user-1' });
    assert.deepEqual(await child.exited, { code: 0, signal: null });
    assert.equal(lc.events[2].messages.content, 'bye dlg-1');
  });

  test('memory fixture: memory API calls carry token and user', async () => {
    const lc = await listen();
    cleanups.push(() => lc.close());
    const bodies = [];
    const api = http.createServer((req, res) => {
      let text = '';
      req.on('data', (d) => { text += d; });
      req.on('end', () => {
        const body = JSON.parse(text);
        bodies.push({ auth: req.headers.authorization, body });
        res.setHeader('Content-Type', 'application/json');
        if (body.key === 'forbidden') {
          res.statusCode = 403;
          res.end('{"code":"FORBIDDEN","message":"nope"}');
        } else if (body.action === 'save_tool_memory') {
          res.end(JSON.stringify({ event_type: 3000, action: 'save_tool_memory', key: body.key, ok: true }));
        } else {
          res.end(JSON.stringify({ event_type: 3000, action: 'get_tool_memory', key: body.key, value: 'v 1' }));
        }
      });
    });
    await new Promise((r) => api.listen(0, '127.0.0.1', r));
    cleanups.push(() => api.close());
    const child = run(path.join(ROOT, 'tests', 'programs', 'memory', 'memory.js'),
      [`--socket=${lc.sockPath}`, `--port=${api.address().port}`], { LIBCHAT_TOKEN: 'tok-123', LIBCHAT_API_HOST: '127.0.0.1' });
    await lc.send(msg('set k v 1', 'm1'));
    await lc.send(msg('get k', 'm2'));
    await lc.send(msg('get forbidden', 'm3'));
    const events = await lc.waitEvents(3);
    assert.deepEqual(events.map((e) => e.messages.content), ['saved k', '"v 1"', '{"code":"FORBIDDEN","message":"nope"}']);
    assert.deepEqual(bodies[0], { auth: 'Bearer tok-123', body: { event_type: 3000, action: 'save_tool_memory', key: 'k', value: 'v 1', user_id: 'user-1' } });
    assert.deepEqual(bodies[1].body, { event_type: 3000, action: 'query_tool_memory', key: 'k', user_id: 'user-1' });
    child.kill();
  });
});
