'use strict';
// On the first message: writes 3000 replies (1.5 MB) in one go and exits the moment the
// kernel has them (no goodbye). libchat must still deliver all 3000 before the
// 2002 program_exited.
const net = require('net');
const { encodeFrame } = require('libchat');

const path = process.argv.find((a) => a.startsWith('--socket=')).slice('--socket='.length);
const socket = net.createConnection(path);
socket.once('data', () => {
  const frames = [];
  for (let n = 1; n <= 3000; n++) {
    frames.push(encodeFrame({ event_type: 2001, messages: { content: `${n} ${'x'.repeat(500)}` } }));
  }
  socket.write(Buffer.concat(frames), () => process.exit(0));
});
socket.on('error', () => process.exit(1));
