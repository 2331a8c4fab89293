'use strict';
// The runtime end to end (sdk/libchat/runtime.js): real program processes, the
// test plays libchat's part on the program's Unix socket.
const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { ROOT, SDK, cleanup, tempDir, listen, run, program, memoryApi, msg } = require('./helpers');

const { encodeFrame } = require(`${SDK}/frame.js`);

after(cleanup);

const ECHO = path.join(ROOT, 'programs', 'echo', 'echo.js');
const MEMORY = path.join(ROOT, 'tests', 'programs', 'memory', 'memory.js');
const close = { event_type: 1002, dialog_id: 'dlg-1', user_id: 'user-1' };

describe('messages and replies', () => {
  test('echo: 1001 -> 2001, then 1002 -> process exits 0', async () => {
    const lc = await listen();
    const child = run(ECHO, [`--socket=${lc.sockPath}`, '--port=1']);
    await lc.send(msg('héllo 你好'));
    const [ev] = await lc.waitEvents(1);
    assert.deepEqual(ev, {
      event_type: 2001, dialog_id: 'dlg-1', user_id: 'user-1', message_id: 'm1',
      messages: { content: 'echo: héllo 你好', attachments: [] },
    });
    await lc.send(close);
    assert.deepEqual(await child.exited, { code: 0, signal: null });
  });

  test('messages are handled one at a time, in order; "bye" sends 2002', async () => {
    const lc = await listen();
    const child = run(ECHO, [`--socket=${lc.sockPath}`]);
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

  test('a throwing handler is logged and skipped; dialog; onClose hook runs before exit', async () => {
    const lc = await listen();
    const prog = program(`
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
    await lc.send(close);
    assert.deepEqual(await child.exited, { code: 0, signal: null });
    assert.equal(lc.events[2].messages.content, 'bye dlg-1');
  });

  test('replies sent in one event-loop turn leave in one socket write', async () => {
    const lc = await listen();
    const prog = program(`
      const net = require('net');
      let writes = 0;
      const write = net.Socket.prototype.write;
      // libchat's socket only (a warm instance's loopback warm-up writes over TCP)
      net.Socket.prototype.write = function (...a) { if (this !== process.stderr && this.remotePort === undefined) writes++; return write.apply(this, a); };
      const chat = require('libchat');
      chat.onMessage((msg) => { for (const n of [1, 2, 3]) chat.reply(msg.content + n); });
      chat.onClose(() => { process.stderr.write('writes=' + writes + '\\n'); });
    `);
    const child = run(prog, [`--socket=${lc.sockPath}`]);
    await lc.send(msg('r'));
    const events = await lc.waitEvents(3);
    assert.deepEqual(events.map((e) => e.messages.content), ['r1', 'r2', 'r3']);
    await lc.send(close);
    assert.equal((await child.exited).code, 0);
    assert.match(child.output, /writes=1\n/);
  });

  test('a chunk of messages to a synchronous handler is answered in one write, in order', async () => {
    const lc = await listen();
    const prog = program(`
      const net = require('net');
      let writes = 0;
      const write = net.Socket.prototype.write;
      // libchat's socket only (a warm instance's loopback warm-up writes over TCP)
      net.Socket.prototype.write = function (...a) { if (this !== process.stderr && this.remotePort === undefined) writes++; return write.apply(this, a); };
      const chat = require('libchat');
      chat.onMessage((msg) => { chat.reply(msg.content + '!'); });
      chat.onClose(() => { process.stderr.write('writes=' + writes + '\\n'); });
    `);
    const child = run(prog, [`--socket=${lc.sockPath}`]);
    (await lc.conn).write(Buffer.concat([encodeFrame(msg('a', 'm1')), encodeFrame(msg('b', 'm2')), encodeFrame(msg('c', 'm3'))]));
    const events = await lc.waitEvents(3);
    assert.deepEqual(events.map((e) => [e.message_id, e.messages.content]), [['m1', 'a!'], ['m2', 'b!'], ['m3', 'c!']]);
    await lc.send(close);
    assert.equal((await child.exited).code, 0);
    assert.match(child.output, /writes=1\n/);
  });

  test('messages that arrive after end() are handed back (2003 handback), not handled', async () => {
    const lc = await listen();
    const prog = program(`
      const chat = require('libchat');
      chat.onMessage((msg) => { chat.reply('got ' + msg.content); if (msg.content === 'stop') chat.end(); });
    `);
    const child = run(prog, [`--socket=${lc.sockPath}`]);
    (await lc.conn).write(Buffer.concat([encodeFrame(msg('stop', 'm1')), encodeFrame(msg('later', 'm2'))]));
    const events = await lc.waitEvents(3);
    assert.deepEqual(events, [
      { event_type: 2001, dialog_id: 'dlg-1', user_id: 'user-1', message_id: 'm1', messages: { content: 'got stop', attachments: [] } },
      { event_type: 2002, dialog_id: 'dlg-1', user_id: 'user-1' },
      { event_type: 2003, dialog_id: 'dlg-1', user_id: 'user-1', message_id: 'm2', messages: { content: 'later', attachments: [] }, handback: true },
    ]);
    assert.equal((await child.exited).code, 0);
  });

  test('LIBCHAT_MAGIC is honoured', async () => {
    const lc = await listen({ magic: 0x01020304 });
    const child = run(ECHO, [`--socket=${lc.sockPath}`], { LIBCHAT_MAGIC: '16909060' });
    await lc.send(msg('x'));
    const [ev] = await lc.waitEvents(1);
    assert.equal(ev.messages.content, 'echo: x');
    child.kill();
  });
});

describe('lifetime', () => {
  test('stdin EOF (libchat died) makes the program exit', async () => {
    const lc = await listen();
    const child = run(ECHO, [`--socket=${lc.sockPath}`]);
    await lc.conn;
    child.stdin.end();
    assert.equal((await child.exited).code, 0);
  });

  test('socket closed by libchat makes the program exit', async () => {
    const lc = await listen();
    const child = run(ECHO, [`--socket=${lc.sockPath}`]);
    (await lc.conn).end();
    assert.equal((await child.exited).code, 0);
  });

  test('bad frame from libchat: program disconnects and exits 1', async () => {
    const lc = await listen();
    const child = run(ECHO, [`--socket=${lc.sockPath}`]);
    (await lc.conn).write(Buffer.alloc(32, 0x5a));
    assert.equal((await child.exited).code, 1);
    assert.match(child.output, /bad frame/);
  });

  test('missing --socket prints usage and exits 2', async () => {
    const child = run(ECHO, []);
    assert.equal((await child.exited).code, 2);
    assert.match(child.output, /missing --socket\nusage/);
  });

  test('a bad --port prints usage and exits 2', async () => {
    const lc = await listen();
    const child = run(ECHO, [`--socket=${lc.sockPath}`, '--port=http']);
    assert.equal((await child.exited).code, 2);
    assert.match(child.output, /invalid --port: http\nusage/);
  });
});

describe('memory', () => {
  test('memory calls over TCP carry the token and the dialog user', async () => {
    const lc = await listen();
    const api = await memoryApi({ port: 0 });
    const child = run(MEMORY, [`--socket=${lc.sockPath}`, `--port=${api.port}`],
      { LIBCHAT_TOKEN: 'tok-123', LIBCHAT_API_HOST: '127.0.0.1' });
    await lc.send(msg('set k v 1', 'm1'));
    await lc.send(msg('get k', 'm2'));
    await lc.send(msg('get forbidden', 'm3'));
    const events = await lc.waitEvents(3);
    assert.deepEqual(events.map((e) => e.messages.content), ['saved k', '"v 1"', '{"code":"FORBIDDEN","message":"nope"}']);
    assert.deepEqual(api.seen[0].auth, 'Bearer tok-123');
    assert.deepEqual(api.seen[0].body, { event_type: 3000, action: 'save_tool_memory', key: 'k', value: 'v 1', user_id: 'user-1' });
    assert.deepEqual(api.seen[1].body, { event_type: 3000, action: 'query_tool_memory', key: 'k', user_id: 'user-1' });
    child.kill();
  });

  test('with LIBCHAT_API_SOCKET and --port=0 the program runs and memory goes over the Unix socket', async () => {
    const lc = await listen();
    const socketPath = path.join(tempDir('libchat-api-'), 'api.sock');
    const api = await memoryApi({ socketPath });
    const child = run(MEMORY, [`--socket=${lc.sockPath}`, '--port=0'],
      { LIBCHAT_TOKEN: 'tok-123', LIBCHAT_API_SOCKET: socketPath, LIBCHAT_API_HOST: '192.0.2.1' });
    await lc.send(msg('set colour blue', 'm1'));
    await lc.send(msg('get colour', 'm2'));
    const events = await lc.waitEvents(2);
    assert.deepEqual(events.map((e) => e.messages.content), ['saved colour', '"blue"']);
    assert.deepEqual(api.seen.map((s) => [s.auth, s.body.action, s.body.user_id]), [
      ['Bearer tok-123', 'save_tool_memory', 'user-1'], ['Bearer tok-123', 'query_tool_memory', 'user-1'],
    ]);
    assert.equal(child.exitCode, null, 'still running, no exit 2');
    child.kill();
  });

  test('--port=0 without LIBCHAT_API_SOCKET: the program runs, a memory call says why it failed', async () => {
    const lc = await listen();
    const child = run(MEMORY, [`--socket=${lc.sockPath}`, '--port=0'], { LIBCHAT_TOKEN: 'tok-123' });
    await lc.send(msg('get k', 'm1'));
    const [ev] = await lc.waitEvents(1);
    assert.match(ev.messages.content, /^error: memory: no API endpoint/);
    child.kill();
  });
});
