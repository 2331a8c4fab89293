'use strict';
// Post-office service kit for Node (CONTRACT section 12), zero npm
// dependencies (WebSocket: ./ws.js). Same rules as examples/postoffice_kit.py:
// token from GET token_url?appid=&secret=, Bearer on connect, heartbeat to
// itself every `heartbeat` s (the hub echoes it; ignored), token refresh
// `refreshMargin` s before `expires` (reconnect with the new one), capped
// full-jitter exponential back-off, handler(envelope) -> reply content or
// null, sent to the envelope's `from`.
const http = require('http');
const { Client } = require('./ws.js');

function backoff(attempt, base = 0.5, cap = 30, rand = Math.random) {
  return rand() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

function fetchToken(tokenUrl, appid, secret) {
  const u = new URL(tokenUrl);
  u.searchParams.set('appid', appid);
  u.searchParams.set('secret', secret);
  return new Promise((resolve, reject) => {
    const req = http.get(u, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`token: HTTP ${res.statusCode}`));
        try { resolve(JSON.parse(body)); } catch (e) { reject(e); }
      });
    });
    req.setTimeout(10000, () => req.destroy(new Error('token: timed out')));
    req.on('error', reject);
  });
}

class ServiceClient {
  constructor({ hubUrl, tokenUrl, appid, secret, clientId, handler,
                heartbeat = 20, refreshMargin = 60, base = 0.5, cap = 30 }) {
    Object.assign(this, { hubUrl, tokenUrl, appid, secret, clientId, handler,
                          heartbeat, refreshMargin, base, cap });
    this.connects = 0;
    this.stopping = false;
    this.token = null;
    this.ws = null;
  }
  fresh() { return this.token && this.token.expires / 1000 - Date.now() / 1000 > this.refreshMargin; }
  async run() {
    let attempt = 0;
    while (!this.stopping) {
      try {
        if (!this.fresh()) this.token = await fetchToken(this.tokenUrl, this.appid, this.secret);
        await this.session();
        attempt = 0;
        continue;
      } catch (e) { if (this.stopping) break; }
      await new Promise((r) => { this.wake = r; this.sleeper = setTimeout(r, backoff(attempt, this.base, this.cap) * 1000); });
      attempt++;
    }
  }
  session() {
    const u = new URL(this.hubUrl);
    u.searchParams.set('clientID', this.clientId);
    return new Promise((resolve, reject) => {
      let beat = null, refresh = null;
      const ws = new Client({
        host: u.hostname, port: Number(u.port), path: u.pathname + u.search,
        headers: { Authorization: `Bearer ${this.token.token}` },
        onText: (text) => this.receive(ws, text),
        onClose: () => { clearInterval(beat); clearTimeout(refresh); this.ws = null; resolve(); },
      });
      ws.connect().then(() => {
        this.ws = ws;
        this.connects++;
        const hb = () => ws.send(JSON.stringify({ from: this.clientId, to: this.clientId,
          subject: 'heartbeat', content: '', type: 'heartbeat' }));
        hb();
        beat = setInterval(hb, this.heartbeat * 1000);
        const left = this.token.expires / 1000 - Date.now() / 1000 - this.refreshMargin;
        refresh = setTimeout(() => { this.token = null; ws.close(); }, Math.max(1, left) * 1000);
      }, reject);
    });
  }
  async receive(ws, text) {
    const env = JSON.parse(text);
    if (env.type === 'heartbeat' || env.type === 'error') return;
    const reply = await this.handler(env);
    if (reply !== null && reply !== undefined && ws.open) {
      ws.send(JSON.stringify({ from: this.clientId, to: env.from, subject: env.subject || '',
                               content: reply, type: 'msg' }));
    }
  }
  stop() {
    this.stopping = true;
    clearTimeout(this.sleeper);
    if (this.wake) this.wake();
    if (this.ws) this.ws.close();
  }
}

module.exports = { ServiceClient, backoff, fetchToken };

if (require.main === module) {
  // node examples/node/postoffice.js HUB_WS_URL TOKEN_URL APPID SECRET CLIENT_ID  (an echo service)
  const [hubUrl, tokenUrl, appid, secret, clientId] = process.argv.slice(2);
  const c = new ServiceClient({ hubUrl, tokenUrl, appid, secret, clientId,
                                handler: async (env) => `re: ${env.content}` });
  process.on('SIGTERM', () => c.stop());
  c.run();
}
