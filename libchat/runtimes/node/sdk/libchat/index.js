'use strict';
/**
 * libchat — Node.js SDK for libchat tool programs (CommonJS, zero dependencies).
 *
 * libchat starts one process per dialog:
 *
 *     node programs/<intent>/<intent>.js --socket=PATH --port=API_PORT
 *
 * The program connects to the Unix socket PATH (libchat already listens on it)
 * and both sides exchange frames (see docs/protocol.md). Typical program:
 *
 *     const chat = require('libchat');
 *     chat.onMessage(async (msg) => {
 *       chat.reply(`echo: ${msg.content}`);
 *       if (msg.content === 'bye') chat.end();
 *     });
 *
 * The pieces, one file each:
 *   frame.js    encodeFrame, FrameDecoder (the wire format; pure)
 *   args.js     --socket/--port and the LIBCHAT_* environment (pure)
 *   memory.js   MemoryClient for the memory API (TCP or Unix socket)
 *   runtime.js  onMessage/reply/end/unsupported/onClose/onDisconnect: reading,
 *               dispatch one message at a time, hand-back, warm-up
 *   channel.js  writing: frames of one event-loop turn in one write; exit()
 *   state.js    the one dialog's state the two share
 */

const frame = require('./frame.js');
const args = require('./args.js');
const memoryApi = require('./memory.js');
const runtime = require('./runtime.js');

module.exports = {
  // runtime
  onMessage: runtime.onMessage,
  onClose: runtime.onClose,
  onDisconnect: runtime.onDisconnect,
  reply: runtime.reply,
  end: runtime.end,
  unsupported: runtime.unsupported,
  exit: runtime.exit,
  memory: runtime.memory,
  /** @type {{dialogId: string, userId: string} | null} set once the first frame arrived */
  get dialog() {
    return runtime.currentDialog();
  },
  // pure pieces
  encodeFrame: frame.encodeFrame,
  FrameDecoder: frame.FrameDecoder,
  FrameError: frame.FrameError,
  parseArgs: args.parseArgs,
  MemoryClient: memoryApi.MemoryClient,
  MemoryError: memoryApi.MemoryError,
  MAGIC: frame.MAGIC,
  VERSION: frame.VERSION,
  HEADER_SIZE: frame.HEADER_SIZE,
  MAX_FRAME: frame.MAX_FRAME,
};
