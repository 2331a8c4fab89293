'use strict';
// Shared by the SDK tests (not a test file itself): the test plays libchat's
// part on a Unix socket, runs programs as libchat does, and serves a fake
// memory API over TCP or a Unix socket.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
/** What libchat puts on NODE_PATH, so programs can `require('libchat')`. */
const SDK_DIR = path.join(ROOT, 'libchat', 'runtimes', 'node', 'sdk');
/** The package directory itself, for requiring its files one by one. */
const SDK = path.join(SDK_DIR, 'libchat');
const TIMEOUT = 10000;

const { encodeFrame, FrameDecoder, MAGIC } = require(`${SDK}/frame.js`);

const children = new Set();
const cleanups = [];

/** Kill what is still running and remove what was made; pass to after(). */
function cleanup() {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const fn of cleanups.splice(0)) fn();
}

function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o700);
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Resolve `fn()` once it is truthy; reject after `ms` with `what()`. */
function waitFor(check, what, ms = TIMEOUT) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timeout waiting for ${what()}`)), ms);
    const poll = () => {
      const value = check();
      if (value) {
        clearTimeout(timer);
        resolve(value);
        return true;
      }
      return false;
    };
    if (!poll()) waitFor.waiters.push(poll);
  });
}
waitFor.waiters = [];
/** Re-check every pending waitFor (called whenever new data arrived). */
function recheck() {
  waitFor.waiters = waitFor.waiters.filter((w) => !w());
}

/** A Unix socket "libchat" side: accepts one program connection. */
async function listen({ magic = MAGIC } = {}) {
  const sockPath = path.join(tempDir('libchat-test-'), 'p.sock');
  const server = net.createServer();
  const events = [];
  const chunks = [];
  const conn = new Promise((resolve) => server.once('connection', resolve));
  server.on('connection', (sock) => {
    const dec = new FrameDecoder({ magic });
    sock.on('data', (d) => {
      chunks.push(d);
      events.push(...dec.push(d));
      recheck();
    });
    sock.on('error', () => {});
  });
  await new Promise((r) => server.listen(sockPath, r));
  fs.chmodSync(sockPath, 0o600);
  cleanups.push(() => server.close());
  return {
    sockPath,
    events,
    chunks,
    conn,
    async send(event) { (await conn).write(encodeFrame(event, magic)); },
    /** Resolve once `count` events arrived (bounded). */
    waitEvents(count, ms = TIMEOUT) {
      return waitFor(() => events.length >= count && events.slice(),
        () => `${count} events, got ${JSON.stringify(events)}`, ms);
    },
  };
}

/** Start `node program args...` the way libchat does (cwd, NODE_PATH, stdin pipe). */
function run(program, args, env = {}) {
  const child = spawn(process.execPath, [program, ...args], {
    cwd: path.dirname(program),
    env: { ...process.env, NODE_PATH: SDK_DIR, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  child.output = '';
  const take = (d) => { child.output += d; recheck(); };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  child.exited = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${program} did not exit; output: ${child.output}`)), TIMEOUT);
    timer.unref();
    child.on('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal }); });
  });
  child.exited.catch(() => {}); // only awaited by some tests
  /** Resolve once the program's output matches `re` (bounded). */
  child.expectOutput = (re) => waitFor(() => re.test(child.output), () => `${re} in output: ${child.output}`);
  return child;
}

/** Write a throw-away program and return its path. */
function program(source) {
  const file = path.join(tempDir('libchat-prog-'), 'p.js');
  fs.writeFileSync(file, source);
  return file;
}

/**
 * A fake memory API: answers 3000 bodies from a Map, records what it got.
 * `where` is {port: 0} (TCP on 127.0.0.1) or {socketPath} (Unix socket).
 * Bodies with key 'forbidden' get a 403.
 */
async function memoryApi(where = { port: 0 }, token = 'tok-123') {
  const store = new Map();
  const seen = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (d) => { text += d; });
    req.on('end', () => {
      const body = JSON.parse(text);
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, type: req.headers['content-type'], body });
      res.setHeader('Content-Type', 'application/json');
      if (req.headers.authorization !== `Bearer ${token}`) {
        res.statusCode = 401;
        res.end(JSON.stringify({ code: 'UNAUTHORIZED', message: 'bad token' }));
      } else if (body.key === 'forbidden') {
        res.statusCode = 403;
        res.end('{"code":"FORBIDDEN","message":"nope"}');
      } else if (body.action === 'save_tool_memory') {
        store.set(body.key, body.value);
        res.end(JSON.stringify({ event_type: 3000, action: 'save_tool_memory', key: body.key, ok: true }));
      } else {
        const value = store.has(body.key) ? store.get(body.key) : null;
        res.end(JSON.stringify({ event_type: 3000, action: 'get_tool_memory', key: body.key, value }));
      }
    });
  });
  if (where.socketPath) await new Promise((r) => server.listen(where.socketPath, r));
  else await new Promise((r) => server.listen(where.port, '127.0.0.1', r));
  cleanups.push(() => server.close());
  return { server, store, seen, port: where.socketPath ? null : server.address().port };
}

const msg = (content, id = 'm1') => ({ event_type: 1001, dialog_id: 'dlg-1', user_id: 'user-1', message_id: id, messages: { content, attachments: [] } });

module.exports = { ROOT, SDK_DIR, SDK, TIMEOUT, cleanup, tempDir, listen, run, program, memoryApi, msg };
