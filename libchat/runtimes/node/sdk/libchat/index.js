'use strict';
/**
 * libchat — Node.js SDK for libchat tool programs (CommonJS, zero dependencies).
 *
 * libchat starts one process per dialog:
 *
 *     node programs/<intent>/<intent>.js --socket=PATH --port=API_PORT
 *
 * The program connects to the Unix socket PATH (libchat already listens on it)
 * and both sides exchange frames: a 16-byte big-endian header
 * (magic u32, version u16, type u16, length u32, reserved u32) followed by
 * `length` bytes of UTF-8 JSON.
 *
 * Typical program:
 *
 *     const chat = require('libchat');
 *     chat.onMessage(async (msg) => {
 *       chat.reply(`echo: ${msg.content}`);
 *       if (msg.content === 'bye') chat.end();
 *     });
 *
 * The runtime (socket connection, parent watchdog) starts on the next tick
 * after the first use of the runtime API (onMessage, onClose, reply, ...), so
 * requiring the module only for the pure helpers (encodeFrame, FrameDecoder,
 * parseArgs) has no side effects.
 *
 * Environment: LIBCHAT_TOKEN (memory API bearer token), LIBCHAT_MAGIC
 * (decimal or 0x-hex), LIBCHAT_MAX_FRAME (bytes), LIBCHAT_API_HOST.
 */

const fs = require('fs');
const net = require('net');
// `http` is loaded on the first memory call, not at start: programs that never
// use memory start a few ms sooner (cold start is Node's start plus this file).
let http = null;

/** Default frame magic, "LCHT". */
const MAGIC = 0x4c434854;
/** Protocol version written and accepted. */
const VERSION = 1;
/** Header size in bytes. */
const HEADER_SIZE = 16;
/** Default maximum body size (4 MiB). */
const MAX_FRAME = 4 * 1024 * 1024;

const EV = { MESSAGE: 1001, CLOSE: 1002, REPLY: 2001, END: 2002, UNSUPPORTED: 2003, ERROR: 2004 };

// ---------------------------------------------------------------------------
// Pure pieces
// ---------------------------------------------------------------------------

/**
 * Error thrown by FrameDecoder (code 'BAD_FRAME' or 'MSG_TOO_LARGE') and
 * reported to its onInvalid callback (code 'BAD_REQUEST').
 */
class FrameError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'FrameError';
    this.code = code;
  }
}

function checkMagic(magic) {
  if (!Number.isInteger(magic) || magic < 0 || magic > 0xffffffff) {
    throw new RangeError(`magic must be a uint32, got ${magic}`);
  }
  return magic;
}

/**
 * Encode one event as a frame.
 * @param {object} event JSON object with an integer `event_type` (0..65535).
 * @param {number} [magic=MAGIC]
 * @returns {Buffer}
 */
function encodeFrame(event, magic = MAGIC) {
  if (!event || typeof event !== 'object' || Array.isArray(event)) {
    throw new TypeError('event must be a JSON object');
  }
  const type = event.event_type;
  if (!Number.isInteger(type) || type < 0 || type > 0xffff) {
    throw new RangeError(`event_type must be a uint16, got ${type}`);
  }
  const json = JSON.stringify(event);
  const length = Buffer.byteLength(json, 'utf8'); // bytes, not UTF-16 units
  const frame = Buffer.allocUnsafe(HEADER_SIZE + length);
  frame.writeUInt32BE(checkMagic(magic), 0);
  frame.writeUInt16BE(VERSION, 4);
  frame.writeUInt16BE(type, 6);
  frame.writeUInt32BE(length, 8);
  frame.writeUInt32BE(0, 12);
  frame.write(json, HEADER_SIZE, 'utf8');
  return frame;
}

/**
 * Incremental frame decoder. Feed it chunks as they arrive; it returns the
 * events completed by each chunk.
 *
 * A bad magic, unknown version or a length over `maxFrame` makes push() throw
 * a FrameError (the stream cannot be trusted any more; every later push
 * throws too). The length is checked as soon as the header is complete, so
 * an oversize body is never buffered. A well-framed body that is not a JSON
 * object, or whose `event_type` differs from the header type, is skipped
 * (the stream stays in sync) and reported to `onInvalid(err)` with
 * `err.code === 'BAD_REQUEST'` and `err.frameType`.
 */
class FrameDecoder {
  /**
   * @param {object} [opts]
   * @param {number} [opts.magic=MAGIC]
   * @param {number} [opts.maxFrame=MAX_FRAME] maximum body length in bytes
   * @param {(err: FrameError) => void} [opts.onInvalid]
   */
  constructor({ magic = MAGIC, maxFrame = MAX_FRAME, onInvalid } = {}) {
    this.magic = checkMagic(magic);
    this.maxFrame = maxFrame;
    this.onInvalid = onInvalid || null;
    this._buf = null; // one growable buffer holding unread bytes in [_start, _end)
    this._start = 0;
    this._end = 0;
    this._error = null;
  }

  /** Number of buffered, not yet decoded bytes. */
  get pending() {
    return this._end - this._start;
  }

  /**
   * @param {Buffer|Uint8Array} chunk
   * @returns {object[]} events completed by this chunk, in order
   */
  push(chunk) {
    if (this._error) throw this._error;
    if (!Buffer.isBuffer(chunk)) chunk = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let buf, pos, end;
    const direct = this._start === this._end; // nothing pending: decode straight from the chunk
    if (direct) {
      buf = chunk; pos = 0; end = chunk.length;
    } else {
      this._append(chunk);
      buf = this._buf; pos = this._start; end = this._end;
    }
    const events = [];
    while (end - pos >= HEADER_SIZE) {
      const length = this._header(buf, pos, events);
      if (end - pos - HEADER_SIZE < length) break;
      const type = buf.readUInt16BE(pos + 6);
      const text = buf.toString('utf8', pos + HEADER_SIZE, pos + HEADER_SIZE + length);
      pos += HEADER_SIZE + length;
      this._body(type, text, events);
    }
    if (direct) {
      this._start = this._end = 0;
      if (pos < end) this._append(chunk.subarray(pos, end));
    } else if (pos === end) {
      this._start = this._end = 0;
      if (this._buf.length > 1 << 20) this._buf = null; // drop the memory of one huge frame
    } else {
      this._start = pos;
    }
    return events;
  }

  /** Validate the header at pos; return the body length or throw. */
  _header(buf, pos, events) {
    let err = null;
    const magic = buf.readUInt32BE(pos);
    const version = buf.readUInt16BE(pos + 4);
    const length = buf.readUInt32BE(pos + 8);
    if (magic !== this.magic) {
      err = new FrameError('BAD_FRAME', `bad magic 0x${magic.toString(16).padStart(8, '0')}`);
    } else if (version !== VERSION) {
      err = new FrameError('BAD_FRAME', `unsupported version ${version}`);
    } else if (length > this.maxFrame) {
      err = new FrameError('MSG_TOO_LARGE', `frame body of ${length} bytes exceeds ${this.maxFrame}`);
    }
    if (err) {
      err.events = events; // what this push decoded before the bad header
      this._error = err;
      this._buf = null;
      this._start = this._end = 0;
      throw err;
    }
    return length;
  }

  _body(type, text, events) {
    let event, problem = null;
    try {
      event = JSON.parse(text);
      if (!event || typeof event !== 'object' || Array.isArray(event)) problem = 'body is not a JSON object';
      else if (event.event_type !== type) problem = `header type ${type} != event_type ${event.event_type}`;
    } catch (e) {
      problem = `body is not JSON: ${e.message}`;
    }
    if (!problem) {
      events.push(event);
    } else if (this.onInvalid) {
      const err = new FrameError('BAD_REQUEST', problem);
      err.frameType = type;
      this.onInvalid(err);
    }
  }

  /** Append bytes after _end; grows geometrically so copying stays linear. */
  _append(bytes) {
    const n = bytes.length;
    if (n === 0) return;
    const unread = this._end - this._start;
    const cap = this._buf ? this._buf.length : 0;
    if (cap - this._end < n) {
      if (this._buf && unread + n <= cap >>> 1) {
        // Compact only when it frees at least half: each byte is moved O(1) times.
        this._buf.copy(this._buf, 0, this._start, this._end);
      } else {
        const grown = Buffer.allocUnsafe(Math.max(unread + n, cap * 2, 4096));
        if (this._buf) this._buf.copy(grown, 0, this._start, this._end);
        this._buf = grown;
      }
      this._start = 0;
      this._end = unread;
    }
    this._buf.set(bytes, this._end);
    this._end += n;
  }
}

/**
 * Parse the program's command line. Accepts `--socket=PATH` / `--socket PATH`
 * and `--port=N` / `--port N`; other arguments are ignored, so both
 * process.argv and process.argv.slice(2) work.
 * @param {string[]} [argv=process.argv.slice(2)]
 * @returns {{socket: string|null, port: number|null}}
 * @throws {Error} when --port is not an integer in 1..65535
 */
function parseArgs(argv = process.argv.slice(2)) {
  const out = { socket: null, port: null };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(socket|port)(?:=(.*))?$/s.exec(argv[i]);
    if (!m) continue;
    const value = m[2] !== undefined ? m[2] : argv[++i];
    if (value !== undefined && value !== '') out[m[1]] = value;
  }
  if (out.port !== null) {
    const port = /^\d+$/.test(out.port) ? Number(out.port) : NaN;
    if (!(port >= 1 && port <= 65535)) throw new Error(`invalid --port: ${out.port}`);
    out.port = port;
  }
  return out;
}

/** Parse LIBCHAT_MAGIC-style text: decimal or 0x-hex uint32. */
function parseMagic(text) {
  const s = String(text).trim();
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^\d+$/.test(s) ? Number(s) : NaN;
  return checkMagic(n);
}

/** Non-200 answer (or unreadable answer) from the memory API. */
class MemoryError extends Error {
  /**
   * @param {string} message
   * @param {number} status HTTP status (0 when no answer was received)
   * @param {string} body raw response body text
   */
  constructor(message, status, body) {
    super(message);
    this.name = 'MemoryError';
    this.status = status;
    this.body = body;
    try { this.json = JSON.parse(body); } catch { this.json = null; }
    this.code = this.json && this.json.code;
  }
}

/**
 * Client for libchat's memory API (`POST /memory`). Memory is scoped per
 * (user, program) by libchat; the token decides which.
 */
class MemoryClient {
  /**
   * @param {object} opts
   * @param {string} [opts.host='127.0.0.1']
   * @param {number} opts.port
   * @param {string} opts.token bearer token (LIBCHAT_TOKEN)
   * @param {string|(() => string)} opts.userId user id, or a function returning it
   * @param {number} [opts.timeout=30000] ms
   */
  constructor({ host = '127.0.0.1', port, token, userId, timeout = 30000 }) {
    Object.assign(this, { host, port, token, userId, timeout });
  }

  /**
   * Read a value; resolves null when nothing is stored.
   * @param {string} key
   * @returns {Promise<any>}
   */
  async get(key) {
    const res = await this._post({ event_type: 3000, action: 'query_tool_memory', key: checkKey(key), user_id: this._user() });
    return res.value === undefined ? null : res.value;
  }

  /**
   * Store a JSON-serialisable value; resolves true.
   * @param {string} key
   * @param {any} value
   * @returns {Promise<true>}
   */
  async set(key, value) {
    await this._post({
      event_type: 3000, action: 'save_tool_memory', key: checkKey(key),
      value: value === undefined ? null : value, user_id: this._user(),
    });
    return true;
  }

  _user() {
    const user = typeof this.userId === 'function' ? this.userId() : this.userId;
    if (!user) throw new Error('memory: no user yet (no message has arrived)');
    return user;
  }

  _post(payload) {
    if (!this.port) return Promise.reject(new Error('memory: no API port (--port missing)'));
    if (!this.token) return Promise.reject(new Error('memory: LIBCHAT_TOKEN is not set'));
    const body = Buffer.from(JSON.stringify(payload), 'utf8');
    if (!http) http = require('http');
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: this.host, port: this.port, path: '/memory', method: 'POST',
        agent: false, // no pooled keep-alive socket lingering after the call
        headers: {
          Authorization: `Bearer ${this.token}`,
          'Content-Type': 'application/json',
          'Content-Length': body.length,
        },
      }, (res) => {
        const parts = [];
        res.on('data', (d) => parts.push(d));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          if (res.statusCode !== 200) {
            reject(new MemoryError(`memory API answered ${res.statusCode}: ${text}`, res.statusCode, text));
            return;
          }
          try {
            const data = JSON.parse(text);
            if (!data || typeof data !== 'object') throw new Error('not an object');
            resolve(data);
          } catch (e) {
            reject(new MemoryError(`memory API answered unreadable JSON: ${e.message}`, 200, text));
          }
        });
      });
      req.setTimeout(this.timeout, () => req.destroy(new MemoryError('memory API timed out', 0, '')));
      req.on('error', reject);
      req.end(body);
    });
  }
}

function checkKey(key) {
  if (typeof key !== 'string' || key === '') throw new TypeError('memory key must be a non-empty string');
  return key;
}

// ---------------------------------------------------------------------------
// Runtime (one per process)
// ---------------------------------------------------------------------------

const USAGE = 'usage: node <program>.js --socket=PATH [--port=API_PORT]';

const state = {
  used: false, // runtime API touched: connect on the next tick
  tickPassed: false,
  started: false,
  args: null,
  magic: MAGIC,
  maxFrame: MAX_FRAME,
  socket: null,
  outbox: [], // frames written this event-loop turn, sent together (one syscall)
  dialog: null, // {dialogId, userId}
  latest: null, // latest 1001 event (for ids of outgoing frames)
  current: null, // 1001 being handled
  queue: [],
  draining: false,
  messageHandler: null,
  closeHandler: null,
  disconnectHandler: null,
  ended: false,
  exiting: false,
  memory: null,
};

function log(line) {
  process.stderr.write(`[libchat] ${line}\n`);
}

function touch() {
  if (state.used) return;
  state.used = true;
  if (state.tickPassed) start();
}

process.nextTick(() => {
  state.tickPassed = true;
  if (state.used) start();
});

function envInt(name, fallback, parse) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  try {
    return parse(raw);
  } catch (e) {
    log(`ignoring bad ${name}=${raw}: ${e.message}`);
    return fallback;
  }
}

function start() {
  if (state.started) return;
  state.started = true;
  try {
    state.args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e.message}\n${USAGE}\n`);
    process.exit(2);
  }
  if (!state.args.socket) {
    process.stderr.write(`missing --socket\n${USAGE}\n`);
    process.exit(2);
  }
  state.magic = envInt('LIBCHAT_MAGIC', MAGIC, parseMagic);
  state.maxFrame = envInt('LIBCHAT_MAX_FRAME', MAX_FRAME, (s) => {
    if (!/^\d+$/.test(s.trim())) throw new Error('not an integer');
    return Number(s);
  });
  const decoder = new FrameDecoder({
    magic: state.magic,
    maxFrame: state.maxFrame,
    onInvalid: (err) => log(`ignoring invalid frame (type ${err.frameType}): ${err.message}`),
  });
  const socket = net.createConnection(state.args.socket);
  state.socket = socket;
  setImmediate(warmUp);
  let failed = false;
  socket.on('data', (chunk) => {
    let events;
    try {
      events = decoder.push(chunk);
    } catch (err) {
      log(`bad frame from libchat (${err.code}): ${err.message}; disconnecting`);
      failed = true;
      socket.destroy();
      return;
    }
    for (const event of events) dispatch(event);
  });
  socket.on('error', (err) => {
    failed = true;
    log(`socket error: ${err.message}`);
  });
  socket.on('close', () => {
    if (state.exiting) return;
    const reason = failed ? 'socket_error' : 'socket_closed';
    runHook(state.disconnectHandler, reason, failed ? 1 : 0, `connection closed (${reason})`);
  });
  watchParent();
}

/**
 * Run the SDK's per-message path (decode, message object, reply encoding) on a
 * dummy message, never the program's handler, so V8 has compiled it before the
 * first real message: a warm instance then answers in about a millisecond
 * instead of several.
 */
function warmUp() {
  const decoder = new FrameDecoder({ magic: state.magic, maxFrame: state.maxFrame });
  const dummy = {
    event_type: EV.MESSAGE, dialog_id: 'warm-up', user_id: 'warm-up', message_id: 'warm-up',
    messages: { content: 'warm-up', attachments: [] },
  };
  for (let i = 0; i < 3; i++) {
    for (const e of decoder.push(encodeFrame(dummy, state.magic))) {
      const msg = Object.assign({}, e, { content: e.messages.content, attachments: e.messages.attachments });
      encodeFrame({
        event_type: EV.REPLY, dialog_id: msg.dialog_id, user_id: msg.user_id,
        message_id: msg.message_id, messages: toMessages(msg.content),
      }, state.magic);
    }
  }
}

/** libchat gives us a stdin pipe and never writes to it: EOF means it died. */
function watchParent() {
  let st;
  try { st = fs.fstatSync(0); } catch { return; }
  if (!st.isFIFO() && !st.isSocket()) return; // tty or /dev/null: no watchdog
  const stdin = process.stdin;
  const gone = () => {
    if (state.exiting) return;
    log('stdin closed: libchat is gone, exiting');
    exit(0);
  };
  stdin.on('end', gone);
  stdin.on('error', gone);
  stdin.on('data', () => {}); // discard; only EOF matters
  stdin.resume();
  if (typeof stdin.unref === 'function') stdin.unref(); // must not keep the process alive
}

function dispatch(event) {
  if (typeof event.dialog_id === 'string' && typeof event.user_id === 'string') {
    state.dialog = { dialogId: event.dialog_id, userId: event.user_id };
  }
  switch (event.event_type) {
    case EV.MESSAGE: {
      const messages = event.messages && typeof event.messages === 'object' ? event.messages : {};
      const msg = Object.assign({}, event, {
        content: typeof messages.content === 'string' ? messages.content : '',
        attachments: Array.isArray(messages.attachments) ? messages.attachments : [],
      });
      state.latest = msg;
      state.queue.push(msg);
      drain();
      break;
    }
    case EV.CLOSE:
      // Not queued behind a running handler: libchat SIGTERMs us soon anyway.
      runHook(state.closeHandler, event, 0, 'dialog closed by the user');
      break;
    case EV.ERROR:
      log(`libchat error ${event.code}: ${event.message}`);
      break;
    default:
      log(`ignoring unexpected event_type ${event.event_type}`);
  }
}

/** Handle 1001s strictly one at a time, in arrival order. */
async function drain() {
  if (state.draining) return;
  state.draining = true;
  try {
    while (state.messageHandler && state.queue.length && !state.exiting) {
      const msg = state.queue.shift();
      if (state.ended) {
        // Sent to us before libchat saw our 2002/2003: hand it back so libchat
        // routes it anew instead of it being lost.
        handBack(msg);
        continue;
      }
      state.current = msg;
      try {
        await state.messageHandler(msg);
      } catch (err) {
        log(`handler failed for message ${msg.message_id}: ${(err && err.stack) || err}`);
      } finally {
        state.current = null;
      }
    }
  } finally {
    state.draining = false;
  }
}

/** A 2003 marked `handback`: libchat re-dispatches the message. */
function handBack(msg) {
  send({
    event_type: EV.UNSUPPORTED, dialog_id: msg.dialog_id, user_id: msg.user_id,
    message_id: msg.message_id, messages: msg.messages, handback: true,
  });
}

/**
 * Run an onClose/onDisconnect hook, then exit unless it returned false.
 * Waits at most 2 s for the hook.
 */
function runHook(hook, arg, code, why) {
  if (!hook) {
    log(`${why}, exiting`);
    exit(code);
    return;
  }
  let timer;
  const limit = new Promise((resolve) => { timer = setTimeout(resolve, 2000, 'timeout'); });
  Promise.race([Promise.resolve().then(() => hook(arg)), limit]).then(
    (result) => {
      clearTimeout(timer);
      if (result === false) return; // the program keeps itself alive
      exit(code);
    },
    (err) => {
      clearTimeout(timer);
      log(`hook failed: ${(err && err.stack) || err}`);
      exit(code);
    },
  );
}

function send(event) {
  const frame = encodeFrame(event, state.magic);
  if (frame.length - HEADER_SIZE > state.maxFrame) {
    throw new RangeError(`frame body of ${frame.length - HEADER_SIZE} bytes exceeds LIBCHAT_MAX_FRAME ${state.maxFrame}`);
  }
  const socket = state.socket;
  if (!socket || socket.destroyed || !socket.writable) {
    log(`not connected; dropping event ${event.event_type}`);
    return false;
  }
  // Coalesce: a burst of replies (several messages handled in one turn) goes
  // out in one write, so libchat wakes once for it, not once per frame.
  if (state.outbox.push(frame) === 1) setImmediate(flushOutbox);
  return true;
}

/** Write what send() queued this turn. */
function flushOutbox() {
  const frames = state.outbox;
  if (!frames.length) return;
  state.outbox = [];
  const socket = state.socket;
  if (!socket || socket.destroyed || !socket.writable) {
    log(`not connected; dropping ${frames.length} queued frame(s)`);
    return;
  }
  socket.write(frames.length === 1 ? frames[0] : Buffer.concat(frames));
}

function requireDialog(what) {
  touch();
  if (!state.dialog) throw new Error(`${what}: no dialog yet (no message has arrived)`);
  return state.dialog;
}

function toMessages(content, opts) {
  if (content && typeof content === 'object') {
    opts = Object.assign({}, content, opts);
    content = content.content;
  }
  const attachments = (opts && opts.attachments) || [];
  return { content: content === undefined || content === null ? '' : String(content), attachments };
}

// ---------------------------------------------------------------------------
// Public runtime API
// ---------------------------------------------------------------------------

/**
 * Register the handler for user messages (1001). Messages are handled one at
 * a time in arrival order; the next waits until the returned promise settles.
 * A handler that throws is logged; nothing is sent for that message.
 * @param {(msg: object) => any} handler receives the 1001 event plus
 *   `msg.content` (string) and `msg.attachments` (array)
 */
function onMessage(handler) {
  if (typeof handler !== 'function') throw new TypeError('handler must be a function');
  state.messageHandler = handler;
  touch();
  drain();
}

/**
 * Register the hook for 1002 (the user closed the dialog). After it resolves
 * (or after 2 s) the process exits with code 0 — unless it returns/resolves
 * `false`, in which case the program stays alive and is responsible for
 * exiting. Without a hook the process exits on 1002 at once.
 * @param {(event: object) => any} hook
 */
function onClose(hook) {
  state.closeHandler = hook;
  touch();
}

/**
 * Register the hook for losing the socket (libchat closed it or it failed).
 * Called with 'socket_closed' or 'socket_error'; same exit rules as onClose
 * (exit code 0, or 1 after an error). Without a hook the process exits at once.
 * @param {(reason: string) => any} hook
 */
function onDisconnect(hook) {
  state.disconnectHandler = hook;
  touch();
}

/**
 * Send a reply (2001) to the user of the current dialog. The message_id is
 * that of the user message being handled (or the latest one), unless
 * `opts.message_id` is given.
 * @param {string|{content: string, attachments?: object[]}} content
 * @param {{attachments?: object[], message_id?: string}} [opts]
 * @returns {boolean} false when the socket is gone and the reply was dropped
 * @throws {Error} before the first message (no dialog yet)
 * @throws {RangeError} when the frame would exceed LIBCHAT_MAX_FRAME
 */
function reply(content, opts) {
  const dialog = requireDialog('reply');
  const messages = toMessages(content, opts);
  const src = state.current || state.latest;
  const messageId = (opts && opts.message_id) || (content && typeof content === 'object' && content.message_id) || (src && src.message_id);
  const event = { event_type: EV.REPLY, dialog_id: dialog.dialogId, user_id: dialog.userId };
  if (messageId) event.message_id = messageId;
  event.messages = messages;
  return send(event);
}

/**
 * Give the foreground back to the expert (2002). The process may keep working
 * in the background (later reply() calls still reach the user); the socket is
 * unref()'d so the process exits by itself once its own work is done.
 * Sent at most once.
 */
function end() {
  const dialog = requireDialog('end');
  if (state.ended) return;
  state.ended = true;
  send({ event_type: EV.END, dialog_id: dialog.dialogId, user_id: dialog.userId });
  if (state.socket) state.socket.unref();
}

/**
 * Decline a message (2003): libchat lets the expert pick another tool and
 * stops this instance. Like end(), the socket is unref()'d afterwards.
 * @param {object} [msg] the user message declined (default: the one being
 *   handled, else the latest)
 */
function unsupported(msg) {
  const dialog = requireDialog('unsupported');
  const src = msg || state.current || state.latest;
  const event = { event_type: EV.UNSUPPORTED, dialog_id: dialog.dialogId, user_id: dialog.userId };
  if (src) {
    if (src.message_id !== undefined) event.message_id = src.message_id;
    if (src.messages !== undefined) event.messages = src.messages;
  }
  send(event);
  state.ended = true;
  if (state.socket) state.socket.unref();
}

/**
 * Exit the process after flushing what was written to the socket (at most 2 s).
 * @param {number} [code=0]
 */
function exit(code = 0) {
  if (state.exiting) return;
  state.exiting = true;
  process.exitCode = code; // in case the loop drains before the flush callback
  const done = () => process.exit(code);
  flushOutbox();
  const socket = state.socket;
  if (socket && !socket.destroyed && socket.writable) {
    setTimeout(done, 2000).unref();
    socket.end(done);
  } else {
    done();
  }
}

/** Memory API of this dialog's user (see MemoryClient). */
const memory = {
  /** @param {string} key @returns {Promise<any>} the value, or null */
  get: (key) => memoryClient().get(key),
  /** @param {string} key @param {any} value @returns {Promise<true>} */
  set: (key, value) => memoryClient().set(key, value),
};

function memoryClient() {
  touch();
  if (!state.memory) {
    let port = null;
    try { port = parseArgs(process.argv.slice(2)).port; } catch { /* reported by start() */ }
    state.memory = new MemoryClient({
      host: process.env.LIBCHAT_API_HOST || '127.0.0.1',
      port,
      token: process.env.LIBCHAT_TOKEN,
      userId: () => state.dialog && state.dialog.userId,
    });
  }
  return state.memory;
}

module.exports = {
  // runtime
  onMessage,
  onClose,
  onDisconnect,
  reply,
  end,
  unsupported,
  exit,
  memory,
  /** @type {{dialogId: string, userId: string} | null} set once the first frame arrived */
  get dialog() {
    return state.dialog ? Object.assign({}, state.dialog) : null;
  },
  // pure pieces
  encodeFrame,
  FrameDecoder,
  FrameError,
  parseArgs,
  MemoryClient,
  MemoryError,
  MAGIC,
  VERSION,
  HEADER_SIZE,
  MAX_FRAME,
};
