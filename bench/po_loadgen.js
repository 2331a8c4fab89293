'use strict';
// Load generator for bench/postoffice.py: `clients` WebSocket clients of the
// post-office hub, `rate` envelopes per second in all (each to a random other
// client), for `seconds` after `warmup`. Node and a hand-rolled RFC 6455
// client (examples/node/ws.js; Node 20 has no WebSocket; no npm dependency) so that the generator
// is not the bottleneck it measures. Prints one JSON object.
//
//   node po_loadgen.js '{"port":N,"token":"...","clients":1000,"rate":10000,"seconds":10}'
const { Client: WsClient } = require('../examples/node/ws.js');

const cfg = JSON.parse(process.argv[2]);
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const fail = (why) => { process.stderr.write(`po_loadgen: ${why}\n`); process.exit(1); };
setTimeout(() => fail('timed out'), (cfg.seconds + cfg.warmup + 120) * 1000).unref();

class Client extends WsClient {
  constructor(id, onText) {
    super({ port: cfg.port, path: `/ws?clientID=${encodeURIComponent(id)}&token=${cfg.token}`, onText });
    this.id = id;
  }
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
