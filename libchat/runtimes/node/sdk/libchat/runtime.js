'use strict';
/**
 * The program side of one dialog (one runtime per process): connect to the
 * socket libchat gave us, hand each 1001 to the handler one at a time, send
 * the replies, exit when libchat closes the dialog or the socket, or dies.
 * It starts on the next tick after the first use of its API, so requiring
 * the SDK only for the pure helpers has no side effects.
 * Three things keep the per-message path short: a handler that returns no
 * promise is run synchronously (no microtask per message), writes are
 * coalesced per callback (send() queues, one process.nextTick writes, still in
 * the same event-loop turn), and warmUp() runs the per-message path once so V8
 * has compiled it before the first real message.
 */

const fs = require('fs');
const net = require('net');
const { EV, FrameDecoder, encodeFrame } = require('./frame.js');
const { USAGE, settings } = require('./args.js');
const { MemoryClient } = require('./memory.js');

const { state, log } = require('./state.js');
const { send, flushOutbox, exit } = require('./channel.js');

function touch() {
  if (state.used) return;
  state.used = true;
  if (state.tickPassed) start();
}

process.nextTick(() => {
  state.tickPassed = true;
  if (state.used) start();
});

/** The launch settings, read once (warnings logged once). */
function launch() {
  if (!state.launch) {
    try {
      state.launch = settings(process.argv.slice(2), process.env, log);
    } catch (error) {
      state.launch = { error };
    }
  }
  return state.launch;
}

function start() {
  if (state.started) return;
  state.started = true;
  const config = launch();
  if (config.error) {
    process.stderr.write(`${config.error.message}\n${USAGE}\n`);
    process.exit(2);
  }
  state.magic = config.magic;
  state.maxFrame = config.maxFrame;
  const decoder = new FrameDecoder({
    magic: state.magic,
    maxFrame: state.maxFrame,
    onInvalid: (err) => log(`ignoring invalid frame (type ${err.frameType}): ${err.message}`),
  });
  const socket = net.createConnection(config.socket);
  state.socket = socket;
  setImmediate(warmUp);
  if (!process.env.LIBCHAT_DIALOG_ID) setImmediate(warmSocketPath);
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
 * Run the per-message path (decode, message object, reply encoding) on a
 * dummy message, never the handler: a warm instance then answers in about a
 * millisecond instead of several.
 */
function warmUp() {
  const decoder = new FrameDecoder({ magic: state.magic, maxFrame: state.maxFrame });
  const dummy = {
    event_type: EV.MESSAGE, dialog_id: 'warm-up', user_id: 'warm-up', message_id: 'warm-up',
    messages: { content: 'warm-up', attachments: [] },
  };
  for (let i = 0; i < 3; i++) {
    for (const e of decoder.push(encodeFrame(dummy, state.magic))) {
      const msg = toMessage(e);
      encodeFrame({
        event_type: EV.REPLY, dialog_id: msg.dialog_id, user_id: msg.user_id,
        message_id: msg.message_id, messages: toMessages(msg.content),
      }, state.magic);
    }
  }
}

/**
 * A warm instance (started ahead of need: no LIBCHAT_DIALOG_ID) has time to
 * spare before its first message: run Node's own socket path (a read event,
 * a frame decoded, a reply encoded and written, at both ends) a few times
 * over a loopback connection of its own, so the first real message does not
 * pay for V8 compiling Node's stream internals on first use (a fresh Node
 * process answers its first message on a Unix socket in ~1.0 ms, later ones
 * in ~0.3 ms, ~0.6 ms after this warm-up; libchat's warm first reply went
 * 2.25 -> 1.9 ms p50). The program's handler never runs and nothing reaches
 * libchat; the port is open for a few milliseconds, on 127.0.0.1 only. A
 * cold start skips it: its first message is already waiting.
 */
function warmSocketPath() {
  const frameOf = (i) => encodeFrame({
    event_type: EV.REPLY, dialog_id: 'warm-up', user_id: 'warm-up', message_id: `warm-up-${i}`,
    messages: { content: 'warm-up', attachments: [] },
  }, state.magic);
  const server = net.createServer((peer) => {
    const decoder = new FrameDecoder({ magic: state.magic, maxFrame: state.maxFrame });
    peer.on('data', (chunk) => {
      for (const e of decoder.push(chunk)) peer.write(frameOf(toMessage(e).content.length));
    });
    peer.on('error', () => {});
  });
  server.on('error', () => {});
  server.listen(0, '127.0.0.1', () => {
    const client = net.createConnection(server.address().port, '127.0.0.1');
    const decoder = new FrameDecoder({ magic: state.magic, maxFrame: state.maxFrame });
    let rounds = 0;
    const done = () => { client.destroy(); server.close(); };
    client.on('data', (chunk) => {
      for (const e of decoder.push(chunk)) {
        toMessage(e);
        if (++rounds >= 5) { done(); return; }
        client.write(frameOf(rounds));
      }
    });
    client.on('error', done);
    client.on('connect', () => client.write(frameOf(0)));
  });
  server.unref();
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

/**
 * The message object a handler gets: the 1001 plus `content` and
 * `attachments`. The decoded event is ours alone, so it is extended in place
 * rather than copied.
 */
function toMessage(event) {
  const messages = event.messages && typeof event.messages === 'object' ? event.messages : {};
  event.content = typeof messages.content === 'string' ? messages.content : '';
  event.attachments = Array.isArray(messages.attachments) ? messages.attachments : [];
  return event;
}

function dispatch(event) {
  const dialog = state.dialog;
  if (typeof event.dialog_id === 'string' && typeof event.user_id === 'string'
      && (!dialog || dialog.dialogId !== event.dialog_id || dialog.userId !== event.user_id)) {
    state.dialog = { dialogId: event.dialog_id, userId: event.user_id };
  }
  switch (event.event_type) {
    case EV.MESSAGE: {
      const msg = toMessage(event);
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

/**
 * Handle 1001s strictly one at a time, in arrival order. A handler that
 * returns no promise is done when it returns: the next message is handled in
 * the same turn (no microtask per message), so the replies to a chunk of
 * messages leave in one write. A promise holds the queue until it settles.
 */
function drain() {
  if (state.draining) return;
  state.draining = true;
  while (state.messageHandler && state.queue.length && !state.exiting) {
    const msg = state.queue.shift();
    if (state.ended) {
      // Sent to us before libchat saw our 2002/2003: hand it back so libchat
      // routes it anew instead of it being lost.
      handBack(msg);
      continue;
    }
    state.current = msg;
    let result;
    try {
      result = state.messageHandler(msg);
    } catch (err) {
      handlerFailed(msg, err);
      result = undefined;
    }
    if (result && (typeof result === 'object' || typeof result === 'function')
        && typeof result.then === 'function') {
      result.then(handled, (err) => { handlerFailed(msg, err); handled(); });
      return; // still draining: the promise's settlement goes on
    }
    state.current = null;
  }
  state.draining = false;
}

/** A handler's promise settled: the next message may go. */
function handled() {
  state.current = null;
  state.draining = false;
  drain();
}

function handlerFailed(msg, err) {
  log(`handler failed for message ${msg.message_id}: ${(err && err.stack) || err}`);
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

// Public runtime API

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
 * (or after 2 s) the process exits 0, unless it resolves `false` (the program
 * then exits by itself). Without a hook the process exits on 1002 at once.
 * @param {(event: object) => any} hook
 */
function onClose(hook) {
  state.closeHandler = hook;
  touch();
}

/**
 * Register the hook for losing the socket: called with 'socket_closed' or
 * 'socket_error'; exit rules as onClose (code 0, or 1 after an error).
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
  const src = state.current || state.latest;
  const messageId = (opts && opts.message_id) || (content && typeof content === 'object' && content.message_id) || (src && src.message_id);
  const event = { event_type: EV.REPLY, dialog_id: dialog.dialogId, user_id: dialog.userId };
  if (messageId) event.message_id = messageId;
  event.messages = toMessages(content, opts);
  return send(event);
}

/**
 * Give the foreground back to the front service (2002, sent at most once).
 * The process may keep working in the background (later replies still reach
 * the user); the socket is unref()'d so it exits once its own work is done.
 */
function end() {
  const dialog = requireDialog('end');
  if (state.ended) return;
  state.ended = true;
  send({ event_type: EV.END, dialog_id: dialog.dialogId, user_id: dialog.userId });
  if (state.socket) state.socket.unref();
}

/**
 * Decline a message (2003): libchat tells the front service to pick another
 * way and stops this instance. Like end(), the socket is unref()'d afterwards.
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

function memoryClient() {
  touch();
  if (!state.memory) {
    const config = launch(); // a bad launch is reported (exit 2) by start()
    state.memory = new MemoryClient({
      host: config.apiHost, port: config.port, socketPath: config.apiSocket,
      token: config.token, userId: () => state.dialog && state.dialog.userId,
    });
  }
  return state.memory;
}

/** Memory API of this dialog's user (see MemoryClient). */
const memory = {
  /** @param {string} key @returns {Promise<any>} the value, or null */
  get: (key) => memoryClient().get(key),
  /** @param {string} key @param {any} value @returns {Promise<true>} */
  set: (key, value) => memoryClient().set(key, value),
};

/** @returns {{dialogId: string, userId: string} | null} set once the first frame arrived */
function currentDialog() {
  return state.dialog ? Object.assign({}, state.dialog) : null;
}

module.exports = { onMessage, onClose, onDisconnect, reply, end, unsupported, exit, memory, currentDialog };
