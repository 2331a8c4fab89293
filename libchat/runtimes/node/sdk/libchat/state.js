'use strict';
/**
 * The one runtime's state (one dialog per process), shared by runtime.js
 * (reading, dispatch, the public API) and channel.js (writing).
 */

const { MAGIC, MAX_FRAME } = require('./frame.js');

const state = {
  used: false, // runtime API touched: connect on the next tick
  tickPassed: false,
  started: false,
  launch: null, // settings() result, or {error}
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

module.exports = { state, log };
