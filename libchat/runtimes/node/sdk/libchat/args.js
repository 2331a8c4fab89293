'use strict';
/**
 * What libchat tells a program at launch, read in one place:
 *
 *     node <program>.js --socket=PATH --port=API_PORT
 *
 * plus the environment: LIBCHAT_TOKEN (memory API bearer token),
 * LIBCHAT_MAGIC (decimal or 0x-hex), LIBCHAT_MAX_FRAME (bytes),
 * LIBCHAT_API_HOST (the memory API's TCP host) and LIBCHAT_API_SOCKET (the
 * memory API's Unix socket path, set when libchat's `--api` is a `unix:`
 * endpoint; it wins over host and port, and libchat then passes --port=0).
 * Pure functions of (argv, env): nothing here touches the process.
 */

const { MAGIC, MAX_FRAME, checkMagic } = require('./frame.js');

const USAGE = 'usage: node <program>.js --socket=PATH [--port=API_PORT]';

/** A launch the program cannot run with (the runtime exits 2 with USAGE). */
class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * Parse the program's command line. Accepts `--socket=PATH` / `--socket PATH`
 * and `--port=N` / `--port N`; other arguments are ignored, so both
 * process.argv and process.argv.slice(2) work. `--port=0` means "no TCP
 * port" (the memory API is then reached over LIBCHAT_API_SOCKET, if set).
 * @param {string[]} [argv=process.argv.slice(2)]
 * @returns {{socket: string|null, port: number|null}}
 * @throws {UsageError} when --port is not an integer in 0..65535
 */
function parseArgs(argv = process.argv.slice(2)) {
  const out = { socket: null, port: null };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(socket|port)(?:=(.*))?$/s.exec(argv[i]);
    if (!m) continue;
    const value = m[2] !== undefined ? m[2] : argv[++i];
    if (value !== undefined && value !== '') out[m[1]] = value;
  }
  if (out.port !== null) {
    const port = /^\d+$/.test(out.port) ? Number(out.port) : NaN;
    if (!(port >= 0 && port <= 65535)) throw new UsageError(`invalid --port: ${out.port}`);
    out.port = port;
  }
  return out;
}

/** Parse LIBCHAT_MAGIC-style text: decimal or 0x-hex uint32. */
function parseMagic(text) {
  const s = String(text).trim();
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^\d+$/.test(s) ? Number(s) : NaN;
  return checkMagic(n);
}

function parseSize(text) {
  if (!/^\d+$/.test(String(text).trim())) throw new Error('not an integer');
  return Number(text);
}

function fromEnv(env, name, fallback, parse, warn) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  try {
    return parse(raw);
  } catch (e) {
    warn(`ignoring bad ${name}=${raw}: ${e.message}`);
    return fallback;
  }
}

/**
 * Everything the runtime needs from argv and env. A bad environment value is
 * reported to `warn` and replaced by its default (the program still runs); a
 * bad or missing command-line argument throws a UsageError.
 * @returns {{socket: string, port: number|null, magic: number, maxFrame: number,
 *   token: string|null, apiHost: string, apiSocket: string|null}}
 */
function settings(argv = process.argv.slice(2), env = process.env, warn = () => {}) {
  const args = parseArgs(argv);
  if (!args.socket) throw new UsageError('missing --socket');
  return {
    socket: args.socket,
    port: args.port,
    magic: fromEnv(env, 'LIBCHAT_MAGIC', MAGIC, parseMagic, warn),
    maxFrame: fromEnv(env, 'LIBCHAT_MAX_FRAME', MAX_FRAME, parseSize, warn),
    token: env.LIBCHAT_TOKEN || null,
    apiHost: env.LIBCHAT_API_HOST || '127.0.0.1',
    apiSocket: env.LIBCHAT_API_SOCKET || null,
  };
}

module.exports = { USAGE, UsageError, parseArgs, parseMagic, settings };
