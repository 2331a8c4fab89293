'use strict';
// Benchmark program without the SDK: plain `net`, frames decoded and encoded
// by hand, every 1001 answered with a 2001 of the same content in the same
// turn. The SDK's bench program is measured against it (bench/run.py).
const net = require('net');

const arg = process.argv.find((a) => a.startsWith('--socket='));
if (!arg) { process.stderr.write('usage: node netecho.js --socket=PATH\n'); process.exit(2); }
const MAGIC = process.env.LIBCHAT_MAGIC ? Number(process.env.LIBCHAT_MAGIC) : 0x4c434854;

const socket = net.createConnection(arg.slice('--socket='.length));
let pending = null; // bytes of an incomplete frame
socket.on('data', (chunk) => {
  let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
  pending = null;
  let pos = 0;
  const out = [];
  while (buf.length - pos >= 16) {
    const length = buf.readUInt32BE(pos + 8);
    if (buf.length - pos - 16 < length) break;
    const e = JSON.parse(buf.toString('utf8', pos + 16, pos + 16 + length));
    pos += 16 + length;
    if (e.event_type === 1002) { socket.end(() => process.exit(0)); return; }
    if (e.event_type !== 1001) continue;
    const json = JSON.stringify({ event_type: 2001, dialog_id: e.dialog_id, user_id: e.user_id,
      message_id: e.message_id, messages: { content: e.messages.content, attachments: [] } });
    const n = Buffer.byteLength(json);
    const frame = Buffer.allocUnsafe(16 + n);
    frame.writeUInt32BE(MAGIC, 0);
    frame.writeUInt16BE(1, 4);
    frame.writeUInt16BE(2001, 6);
    frame.writeUInt32BE(n, 8);
    frame.writeUInt32BE(0, 12);
    frame.write(json, 16, 'utf8');
    out.push(frame);
  }
  if (pos < buf.length) pending = buf.subarray(pos);
  if (out.length) socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
});
socket.on('close', () => process.exit(0));
socket.on('error', () => process.exit(1));
