'use strict';
// Misbehaves at the wire level (no SDK): answers the first frame with 32
// bytes of junk (bad magic), then just waits.
const net = require('net');

const arg = process.argv.find((a) => a.startsWith('--socket='));
if (!arg) process.exit(2);
const socket = net.createConnection(arg.slice('--socket='.length));
let sent = false;
socket.on('data', () => {
  if (sent) return;
  sent = true;
  socket.write(Buffer.alloc(32, 0x5a)); // magic 0x5A5A5A5A
});
socket.on('error', (err) => console.error(`garbage: ${err.message}`));
setInterval(() => {}, 1000);
