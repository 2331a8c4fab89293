'use strict';
/**
 * Writing to libchat: frames sent while one callback runs (a chunk of
 * messages handled) go out in one write, flushed by process.nextTick in the
 * same event-loop turn: libchat wakes once per burst, not once per frame, and
 * no extra turn (setImmediate) delays the reply. exit() flushes what was
 * written before the process ends.
 */

const { HEADER_SIZE, encodeFrame } = require('./frame.js');
const { state, log } = require('./state.js');

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
  // Coalesce: a burst of replies (several messages handled in one callback)
  // goes out in one write, so libchat wakes once for it, not once per frame.
  if (state.outbox.push(frame) === 1) process.nextTick(flushOutbox);
  return true;
}

/** Write what send() queued during this callback. */
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

module.exports = { send, flushOutbox, exit };
