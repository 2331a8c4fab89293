'use strict';
// A minimal RFC 6455 client (text frames, ping -> pong, close), no npm
// dependency: Node 20 has no built-in WebSocket client. Shared by the
// post-office kit (postoffice.js) and bench/po_loadgen.js.
const net = require('net');
const crypto = require('crypto');

function frame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const buf = Buffer.alloc(head + 4 + len);
  buf[0] = 0x80 | opcode;
  if (len < 126) buf[1] = 0x80 | len;
  else if (len < 65536) { buf[1] = 0x80 | 126; buf.writeUInt16BE(len, 2); }
  else { buf[1] = 0x80 | 127; buf.writeBigUInt64BE(BigInt(len), 2); }
  const mask = crypto.randomBytes(4);
  mask.copy(buf, head);
  for (let i = 0; i < len; i++) buf[head + 4 + i] = payload[i] ^ mask[i & 3];
  return buf;
}

class Client {
  // opts: {host, port, path, headers: {}, onText(text), onClose()}
  constructor(opts) {
    this.opts = opts;
    this.buf = Buffer.alloc(0);
    this.open = false;
  }
  connect() {
    const { host = '127.0.0.1', port, path, headers = {} } = this.opts;
    return new Promise((resolve, reject) => {
      const s = this.socket = net.createConnection(port, host);
      s.setNoDelay(true);
      const key = crypto.randomBytes(16).toString('base64');
      const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      s.on('connect', () => s.write(
        `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`));
      s.on('error', (e) => { if (!this.open) reject(e); });
      s.on('close', () => {
        if (!this.open) reject(new Error('closed before the upgrade'));
        this.open = false;
        if (this.opts.onClose) this.opts.onClose();
      });
      s.on('data', (chunk) => {
        this.buf = Buffer.concat([this.buf, chunk]);
        if (!this.open) {
          const end = this.buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = this.buf.slice(0, end).toString();
          if (!head.startsWith('HTTP/1.1 101')) { s.destroy(); return reject(new Error(head.split('\r\n')[0])); }
          this.open = true;
          this.buf = this.buf.slice(end + 4);
          resolve(this);
        }
        this.parse();
      });
    });
  }
  parse() {
    for (;;) {
      if (this.buf.length < 2) return;
      const op = this.buf[0] & 0x0f;
      let len = this.buf[1] & 0x7f, off = 2;
      if (len === 126) { if (this.buf.length < 4) return; len = this.buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (this.buf.length < 10) return; len = Number(this.buf.readBigUInt64BE(2)); off = 10; }
      if (this.buf.length < off + len) return;
      const payload = this.buf.slice(off, off + len);
      this.buf = this.buf.slice(off + len);
      if (op === 1) this.opts.onText(payload.toString());
      else if (op === 9) this.socket.write(frame(10, payload));
      else if (op === 8) { this.socket.end(frame(8, payload)); }
    }
  }
  send(text) { this.socket.write(frame(1, Buffer.from(text))); }
  close() { if (this.socket) this.socket.destroy(); }
}

module.exports = { Client, frame };
