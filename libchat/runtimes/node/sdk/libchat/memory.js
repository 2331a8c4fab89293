'use strict';
/**
 * Client for libchat's memory API (`POST /memory` with 3000 bodies). Memory
 * is scoped per (user, program) by libchat; the bearer token decides which.
 */

// `http` is loaded on the first memory call, not at start: programs that never
// use memory start a few ms sooner (cold start is Node's start plus the SDK).
let http = null;

/** Non-200 answer (or unreadable answer) from the memory API. */
class MemoryError extends Error {
  /**
   * @param {string} message
   * @param {number} status HTTP status (0 when no answer was received)
   * @param {string} body raw response body text
   */
  constructor(message, status, body) {
    super(message);
    this.name = 'MemoryError';
    this.status = status;
    this.body = body;
    try { this.json = JSON.parse(body); } catch { this.json = null; }
    this.code = this.json && this.json.code;
  }
}

function checkKey(key) {
  if (typeof key !== 'string' || key === '') throw new TypeError('memory key must be a non-empty string');
  return key;
}

class MemoryClient {
  /**
   * @param {object} opts
   * @param {string} [opts.host='127.0.0.1']
   * @param {number} [opts.port] TCP port of the API
   * @param {string} [opts.socketPath] Unix socket of the API; wins over host/port
   * @param {string} opts.token bearer token (LIBCHAT_TOKEN)
   * @param {string|(() => string)} opts.userId user id, or a function returning it
   * @param {number} [opts.timeout=30000] ms
   */
  constructor({ host = '127.0.0.1', port = null, socketPath = null, token, userId, timeout = 30000 }) {
    Object.assign(this, { host, port, socketPath, token, userId, timeout });
  }

  /**
   * Read a value; resolves null when nothing is stored.
   * @param {string} key
   * @returns {Promise<any>}
   */
  async get(key) {
    const res = await this._post({ event_type: 3000, action: 'query_tool_memory', key: checkKey(key), user_id: this._user() });
    return res.value === undefined ? null : res.value;
  }

  /**
   * Store a JSON-serialisable value; resolves true.
   * @param {string} key
   * @param {any} value
   * @returns {Promise<true>}
   */
  async set(key, value) {
    await this._post({
      event_type: 3000, action: 'save_tool_memory', key: checkKey(key),
      value: value === undefined ? null : value, user_id: this._user(),
    });
    return true;
  }

  _user() {
    const user = typeof this.userId === 'function' ? this.userId() : this.userId;
    if (!user) throw new Error('memory: no user yet (no message has arrived)');
    return user;
  }

  _target() {
    if (this.socketPath) return { socketPath: this.socketPath };
    if (this.port) return { host: this.host, port: this.port };
    return null;
  }

  _post(payload) {
    const target = this._target();
    if (!target) return Promise.reject(new Error('memory: no API endpoint (no --port and no LIBCHAT_API_SOCKET)'));
    if (!this.token) return Promise.reject(new Error('memory: LIBCHAT_TOKEN is not set'));
    const body = Buffer.from(JSON.stringify(payload), 'utf8');
    if (!http) http = require('http');
    return new Promise((resolve, reject) => {
      const req = http.request(Object.assign(target, {
        path: '/memory', method: 'POST',
        agent: false, // no pooled keep-alive socket lingering after the call
        headers: {
          Authorization: `Bearer ${this.token}`,
          'Content-Type': 'application/json',
          'Content-Length': body.length,
        },
      }), (res) => {
        const parts = [];
        res.on('data', (d) => parts.push(d));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          if (res.statusCode !== 200) {
            reject(new MemoryError(`memory API answered ${res.statusCode}: ${text}`, res.statusCode, text));
            return;
          }
          try {
            const data = JSON.parse(text);
            if (!data || typeof data !== 'object') throw new Error('not an object');
            resolve(data);
          } catch (e) {
            reject(new MemoryError(`memory API answered unreadable JSON: ${e.message}`, 200, text));
          }
        });
      });
      req.setTimeout(this.timeout, () => req.destroy(new MemoryError('memory API timed out', 0, '')));
      req.on('error', reject);
      req.end(body);
    });
  }
}

module.exports = { MemoryClient, MemoryError };
