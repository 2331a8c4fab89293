'use strict';
// Load generator for the libchat benchmark. Written in Node, not Python, so
// that the generator is never the bottleneck it measures.
//
//   node loadgen.js '<json config>'   -> one JSON object on stdout
//
// config.mode:
//   throughput  closed loop: `dialogs` dialogs x `inflight` messages in flight,
//               `rounds` windows of `seconds` each after `warmup` seconds;
//               with `marks`, prints `round-start N`/`round-end N` around each
//               window (bench/cpu.py reads /proc CPU times at those lines)
//   first       `count` new dialogs one after another (`gap_ms` apart): the
//               latency of each first reply
//   storm       `talkers` dialogs each sending every `every_ms`; after `pre_ms`,
//               `storm` new dialogs at once; talker latency before/during
//   hold        `dialogs` dialogs, `messages` each, then prints "held" and
//               keeps them until stdin closes (memory is measured meanwhile)
//   fill        `count` dialogs that no program matches (2003 each): idle records
// config.target: {"kind": "front"|"raw", "path": unix socket path}. "raw" is
// the reference echo server: one connection per dialog, as a program has.
const net = require('net');
const { encodeFrame, FrameDecoder } = require('../libchat/runtimes/node/sdk/libchat');

const cfg = JSON.parse(process.argv[2]);
const RUN = cfg.run || Math.random().toString(36).slice(2, 8);
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const fail = (why) => { process.stderr.write(`loadgen: ${why}\n`); process.exit(1); };
const deadline = (ms, what) => setTimeout(() => fail(`timed out: ${what}`), ms).unref();

class Conn {
  constructor(path, onEvent) {
    this.socket = net.createConnection(path);
    this.decoder = new FrameDecoder({ maxFrame: 64 << 20 });
    this.corked = false;
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('error', reject);
    });
    this.socket.on('data', (chunk) => { for (const e of this.decoder.push(chunk)) onEvent(e); });
    this.socket.on('error', (e) => fail(`socket: ${e.message}`));
  }
  send(event) {
    // cork until the next tick: many frames, one writev
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => { this.corked = false; this.socket.uncork(); });
    }
    this.socket.write(encodeFrame(event));
  }
  close() { this.socket.end(); }
}

/** Dialogs over connections; replies matched by message_id. */
class Client {
  constructor(target, conns) {
    this.target = target;
    this.pending = new Map(); // message_id -> {t, dialog, resolve?}
    this.onReply = null; // (dialog, latency_ms, sentAt) for closed loops
    this.ended = new Map(); // dialog_id -> resolve of a 2002 wait
    this.conns = [];
    this.byDialog = new Map();
    this.n = 0;
    this.errors = 0;
    this.nConns = conns;
  }
  async open(dialogIds) {
    const per = this.target.kind === 'raw' ? dialogIds.length : this.nConns;
    for (let i = 0; i < per; i++) this.conns.push(new Conn(this.target.path, (e) => this.event(e)));
    await Promise.all(this.conns.map((c) => c.ready));
    dialogIds.forEach((d, i) => this.byDialog.set(d, this.conns[i % this.conns.length]));
  }
  event(e) {
    const t = now();
    if (e.event_type === 2001 || e.event_type === 2003) {
      const p = this.pending.get(e.message_id);
      if (!p) return;
      this.pending.delete(e.message_id);
      if (p.resolve) p.resolve(t - p.t);
      else if (this.onReply) this.onReply(p.dialog, t - p.t, p.t);
    } else if (e.event_type === 2002) {
      const r = this.ended.get(e.dialog_id);
      if (r) { this.ended.delete(e.dialog_id); r(); }
    } else if (e.event_type === 2004) {
      this.errors++;
      process.stderr.write(`loadgen: 2004 ${e.code} ${e.message}\n`);
      const p = this.pending.get(e.message_id);
      if (p && p.resolve) { this.pending.delete(e.message_id); p.resolve(NaN); }
    }
  }
  send(dialog, content, extra) {
    const id = `${dialog}.${++this.n}`;
    const t = now();
    const entry = { t, dialog, resolve: null };
    this.pending.set(id, entry);
    this.byDialog.get(dialog).send(Object.assign({ event_type: 1001, dialog_id: dialog, user_id: 'bench',
      message_id: id, messages: { content, attachments: [] } }, extra || {}));
    return entry;
  }
  ask(dialog, content, extra) {
    const entry = this.send(dialog, content, extra);
    return new Promise((resolve) => { entry.resolve = resolve; });
  }
  async close(dialogs) {
    if (this.target.kind === 'front') {
      const waits = dialogs.map((d) => new Promise((r) => this.ended.set(d, r)));
      for (const d of dialogs) this.byDialog.get(d).send({ event_type: 1002, dialog_id: d, user_id: 'bench' });
      await Promise.all(waits);
    }
  }
  shutdown() { for (const c of this.conns) c.close(); }
}

function stats(samples) {
  const a = Float64Array.from(samples.filter((x) => !Number.isNaN(x))).sort();
  const q = (p) => (a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))] : null);
  return { n: a.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: a.length ? a[a.length - 1] : null };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ids = (prefix, n) => Array.from({ length: n }, (_, i) => `${RUN}-${prefix}${i}`);
const intent = () => (cfg.intent ? { intent: cfg.intent } : {});

async function throughput() {
  const dialogs = ids('t', cfg.dialogs);
  const c = new Client(cfg.target, cfg.conns || 4);
  await c.open(dialogs);
  deadline(60000 + 1000 * (cfg.warmup + cfg.rounds * cfg.seconds), 'throughput');
  await Promise.all(dialogs.map((d) => c.ask(d, 'hello', intent()))); // instances up
  let count = 0;
  let lat = [];
  let running = true;
  const payload = 'x'.repeat(cfg.size || 64);
  c.onReply = (d, ms) => {
    count++;
    lat.push(ms);
    if (running) c.send(d, payload);
  };
  for (const d of dialogs) for (let i = 0; i < cfg.inflight; i++) c.send(d, payload);
  await sleep(cfg.warmup * 1000);
  const rounds = [];
  for (let r = 0; r < cfg.rounds; r++) {
    count = 0; lat = [];
    if (cfg.marks) process.stdout.write(`round-start ${r}\n`); // bench/cpu.py samples /proc
    const t0 = now();
    await sleep(cfg.seconds * 1000);
    const secs = (now() - t0) / 1000;
    const done = count;
    if (cfg.marks) process.stdout.write(`round-end ${r}\n`);
    rounds.push(Object.assign({ rate: done / secs, count: done }, stats(lat)));
  }
  running = false;
  while (c.pending.size) await sleep(5);
  await c.close(dialogs);
  c.shutdown();
  return { rounds, errors: c.errors };
}

async function first() {
  const c = new Client(cfg.target, 1);
  const dialogs = ids('f', cfg.count);
  await c.open(dialogs);
  deadline(30000 + cfg.count * (cfg.gap_ms + 2000), 'first replies');
  const lat = [];
  for (const d of dialogs) {
    lat.push(await c.ask(d, 'first', intent()));
    await c.close([d]);
    await sleep(cfg.gap_ms);
  }
  c.shutdown();
  return Object.assign({ samples: lat }, stats(lat));
}

async function storm() {
  const talkers = ids('s-talk', cfg.talkers);
  const newcomers = ids('s-new', cfg.storm);
  const c = new Client(cfg.target, cfg.conns || 4);
  await c.open(talkers.concat(newcomers));
  deadline(120000, 'storm');
  await Promise.all(talkers.map((d) => c.ask(d, 'hello', { intent: cfg.talk_intent })));
  const samples = []; // [sentAt, latency]
  c.onReply = (d, ms, sentAt) => samples.push([sentAt, ms]);
  const timers = talkers.map((d, i) => {
    const tick = () => c.send(d, 'tick');
    return setTimeout(() => { tick(); timers[i] = setInterval(tick, cfg.every_ms); },
      (i * cfg.every_ms) / talkers.length);
  });
  await sleep(cfg.pre_ms);
  const t0 = now();
  const firsts = await Promise.all(newcomers.map((d) => c.ask(d, 'first', { intent: cfg.storm_intent })));
  const t1 = now();
  await sleep(cfg.post_ms || 0);
  for (const t of timers) { clearTimeout(t); clearInterval(t); }
  while (c.pending.size) await sleep(5);
  const before = samples.filter(([s]) => s < t0).map(([, ms]) => ms);
  const during = samples.filter(([s]) => s >= t0 && s <= t1).map(([, ms]) => ms);
  await c.close(talkers.concat(newcomers));
  c.shutdown();
  // t0/t1: CLOCK_MONOTONIC ms, the clock of libchat's lag probe (libchat/lagprobe.py)
  return { storm_ms: t1 - t0, first: stats(firsts), before: stats(before), during: stats(during),
    t0, t1, errors: c.errors };
}

async function hold() {
  const dialogs = ids('h', cfg.dialogs);
  const c = new Client(cfg.target, cfg.conns || 4);
  await c.open(dialogs);
  deadline(120000, 'hold start');
  const t0 = now();
  let answered = 0;
  for (let i = 0; i < cfg.messages; i++) {
    const replies = await Promise.all(dialogs.map((d) => c.ask(d, `m${i}`, intent())));
    answered = replies.length;
  }
  process.stdout.write(`held ${JSON.stringify({ answered, ms: now() - t0 })}\n`);
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  await c.close(dialogs);
  c.shutdown();
  return { dialogs: dialogs.length };
}

async function fill() {
  const dialogs = ids('idle', cfg.count);
  const c = new Client(cfg.target, 1);
  await c.open(dialogs);
  deadline(300000, 'fill');
  const t0 = now();
  let next = 0;
  const worker = async () => {
    while (next < dialogs.length) await c.ask(dialogs[next++], 'nothing matches this');
  };
  await Promise.all(Array.from({ length: cfg.window || 200 }, worker));
  c.shutdown();
  return { count: dialogs.length, seconds: (now() - t0) / 1000, errors: c.errors };
}

const modes = { throughput, first, storm, hold, fill };
modes[cfg.mode]().then((r) => {
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0);
}, (e) => fail(e && e.stack));
