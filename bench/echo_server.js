'use strict';
// Reference bound: a Node echo server on a Unix socket speaking libchat's
// frames with the SDK's own decoder/encoder, answering each 1001 with a 2001
// like a program would. Usage: node echo_server.js PATH  (prints "ready").
const net = require('net');
const fs = require('fs');
const { encodeFrame, FrameDecoder } = require('../libchat/runtimes/node/sdk/libchat');

const path = process.argv[2];
try { fs.unlinkSync(path); } catch { /* not there */ }
const server = net.createServer((socket) => {
  const decoder = new FrameDecoder();
  socket.on('data', (chunk) => {
    const out = [];
    for (const e of decoder.push(chunk)) {
      out.push(encodeFrame({ event_type: 2001, dialog_id: e.dialog_id, user_id: e.user_id,
        message_id: e.message_id, messages: e.messages }));
    }
    if (out.length) socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
  });
  socket.on('error', () => socket.destroy());
});
server.listen(path, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => { server.close(); process.exit(0); });
