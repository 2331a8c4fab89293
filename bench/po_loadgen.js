'use strict';
// Load generator for bench/postoffice.py: `clients` WebSocket clients of the
// post-office hub, `rate` envelopes per second in all (each to a random other
// client), for `seconds` after `warmup`. Node and a hand-rolled RFC 6455
// client (Node 20 has no WebSocket; no npm dependency) so that the generator
// is not the bottleneck it measures. Prints one JSON object.
//
//   node po_loadgen.js '{"port":N,"token":"...","clients":1000,"rate":10000,"seconds":10}'
const net = require('net');
const crypto = require('crypto');

const cfg = JSON.parse(process.argv[2]);
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const fail = (why) => { process.stderr.write(`po_loadgen: ${why}\n`); process.exit(1); };
setTimeout(() => fail('timed out'), (cfg.seconds + cfg.warmup + 120) * 1000).unref();

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
  constructor(id, onText) {
    this.id = id;
    this.onText = onText;
    this.buf = Buffer.alloc(0);
    this.open = false;
  }
  connect() {
    return new Promise((resolve, reject) => {
      const s = this.socket = net.createConnection(cfg.port, '127.0.0.1');
      s.setNoDelay(true);
      const key = crypto.randomBytes(16).toString('base64');
      s.on('connect', () => s.write(
        `GET /ws?clientID=${encodeURIComponent(this.id)}&token=${cfg.token} HTTP/1.1\r\n` +
        `Host: 127.0.0.1:${cfg.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
      s.on('error', reject);
      s.on('data', (chunk) => {
        this.buf = Buffer.concat([this.buf, chunk]);
        if (!this.open) {
          const end = this.buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = this.buf.slice(0, end).toString();
          if (!head.startsWith('HTTP/1.1 101')) return reject(new Error(head.split('\r\n')[0]));
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
      if (op === 1) this.onText(payload.toString());
      else if (op === 9) this.socket.write(frame(10, payload));
    }
  }
  send(text) { this.socket.write(frame(1, Buffer.from(text))); }
}

async function main() {
  const lat = [];
  let received = 0, errors = 0, measuring = false;
  const onText = (text) => {
    const m = JSON.parse(text);
    if (m.type === 'error') { errors++; return; }
    received++;
    if (measuring && m.sent_at) lat.push(now() - m.sent_at);
  };
  const clients = [];
  for (let i = 0; i < cfg.clients; i += 50) {  // connect in batches of 50
    const batch = [];
    for (let j = i; j < Math.min(cfg.clients, i + 50); j++) {
      batch.push(new Client(`/bench/c${j}`, onText).connect());
    }
    clients.push(...await Promise.all(batch));
  }
  let sent = 0;
  const tick = 10; // ms
  const perTick = cfg.rate * tick / 1000;
  let carry = 0, k = 0;
  const start = now();
  const timer = setInterval(() => {
    const t = now() - start;
    measuring = t >= cfg.warmup * 1000;
    carry += perTick;
    while (carry >= 1) {
      carry -= 1;
      const from = clients[k++ % clients.length];
      let to = clients[Math.floor(Math.random() * clients.length)];
      if (to === from) to = clients[(k + 1) % clients.length];
      from.send(JSON.stringify({ from: from.id, to: to.id, subject: 'bench', content: 'x'.repeat(64),
                                 type: 'msg', createTime: Date.now(), sent_at: now() }));
      if (measuring) sent++;
    }
  }, tick);
  const measureStart = start + cfg.warmup * 1000;
  await new Promise((r) => setTimeout(r, (cfg.warmup + cfg.seconds) * 1000));
  clearInterval(timer);
  const measured = (now() - measureStart) / 1000;
  await new Promise((r) => setTimeout(r, 1000)); // the last deliveries
  lat.sort((a, b) => a - b);
  const p = (q) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : null);
  process.stdout.write(JSON.stringify({
    clients: clients.length, sent, delivered_measured: lat.length, received, errors,
    seconds: measured, offered_rate: sent / measured, delivered_rate: lat.length / measured,
    p50_ms: p(0.5), p99_ms: p(0.99), max_ms: lat.length ? lat[lat.length - 1] : null,
  }) + '\n');
  for (const c of clients) c.socket.destroy();
}
main().catch((e) => fail(e.stack || String(e)));
