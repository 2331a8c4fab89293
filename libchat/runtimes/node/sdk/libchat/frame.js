'use strict';
/**
 * The libchat frame: a 16-byte big-endian header (magic u32, version u16,
 * type u16, length u32, reserved u32) followed by `length` bytes of UTF-8
 * JSON. Pure code, no I/O: encodeFrame turns an event into bytes and
 * FrameDecoder turns bytes (split anywhere) back into events.
 */

/** Default frame magic, "LCHT". */
const MAGIC = 0x4c434854;
/** Protocol version written and accepted. */
const VERSION = 1;
/** Header size in bytes. */
const HEADER_SIZE = 16;
/** Default maximum body size (4 MiB). */
const MAX_FRAME = 4 * 1024 * 1024;

/** The event types a program sees or sends. */
const EV = { MESSAGE: 1001, CLOSE: 1002, REPLY: 2001, END: 2002, UNSUPPORTED: 2003, ERROR: 2004 };

/**
 * Error thrown by FrameDecoder (code 'BAD_FRAME' or 'MSG_TOO_LARGE') and
 * reported to its onInvalid callback (code 'BAD_REQUEST').
 */
class FrameError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'FrameError';
    this.code = code;
  }
}

function checkMagic(magic) {
  if (!Number.isInteger(magic) || magic < 0 || magic > 0xffffffff) {
    throw new RangeError(`magic must be a uint32, got ${magic}`);
  }
  return magic;
}

/**
 * Encode one event as a frame.
 * @param {object} event JSON object with an integer `event_type` (0..65535).
 * @param {number} [magic=MAGIC]
 * @returns {Buffer}
 */
function encodeFrame(event, magic = MAGIC) {
  if (!event || typeof event !== 'object' || Array.isArray(event)) {
    throw new TypeError('event must be a JSON object');
  }
  const type = event.event_type;
  if (!Number.isInteger(type) || type < 0 || type > 0xffff) {
    throw new RangeError(`event_type must be a uint16, got ${type}`);
  }
  const json = JSON.stringify(event);
  const length = Buffer.byteLength(json, 'utf8'); // bytes, not UTF-16 units
  const frame = Buffer.allocUnsafe(HEADER_SIZE + length);
  frame.writeUInt32BE(checkMagic(magic), 0);
  frame.writeUInt16BE(VERSION, 4);
  frame.writeUInt16BE(type, 6);
  frame.writeUInt32BE(length, 8);
  frame.writeUInt32BE(0, 12);
  frame.write(json, HEADER_SIZE, 'utf8');
  return frame;
}

/**
 * Incremental frame decoder. Feed it chunks as they arrive; it returns the
 * events completed by each chunk.
 *
 * A bad magic, unknown version or a length over `maxFrame` makes push() throw
 * a FrameError (the stream cannot be trusted any more; every later push
 * throws too). The length is checked as soon as the header is complete, so
 * an oversize body is never buffered. A well-framed body that is not a JSON
 * object, or whose `event_type` differs from the header type, is skipped
 * (the stream stays in sync) and reported to `onInvalid(err)` with
 * `err.code === 'BAD_REQUEST'` and `err.frameType`.
 */
class FrameDecoder {
  /**
   * @param {object} [opts]
   * @param {number} [opts.magic=MAGIC]
   * @param {number} [opts.maxFrame=MAX_FRAME] maximum body length in bytes
   * @param {(err: FrameError) => void} [opts.onInvalid]
   */
  constructor({ magic = MAGIC, maxFrame = MAX_FRAME, onInvalid } = {}) {
    this.magic = checkMagic(magic);
    this.maxFrame = maxFrame;
    this.onInvalid = onInvalid || null;
    this._buf = null; // one growable buffer holding unread bytes in [_start, _end)
    this._start = 0;
    this._end = 0;
    this._error = null;
  }

  /** Number of buffered, not yet decoded bytes. */
  get pending() {
    return this._end - this._start;
  }

  /**
   * @param {Buffer|Uint8Array} chunk
   * @returns {object[]} events completed by this chunk, in order
   */
  push(chunk) {
    if (this._error) throw this._error;
    if (!Buffer.isBuffer(chunk)) chunk = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let buf, pos, end;
    const direct = this._start === this._end; // nothing pending: decode straight from the chunk
    if (direct) {
      buf = chunk; pos = 0; end = chunk.length;
    } else {
      this._append(chunk);
      buf = this._buf; pos = this._start; end = this._end;
    }
    const events = [];
    while (end - pos >= HEADER_SIZE) {
      const length = this._header(buf, pos, events);
      if (end - pos - HEADER_SIZE < length) break;
      const type = buf.readUInt16BE(pos + 6);
      const text = buf.toString('utf8', pos + HEADER_SIZE, pos + HEADER_SIZE + length);
      pos += HEADER_SIZE + length;
      this._body(type, text, events);
    }
    if (direct) {
      this._start = this._end = 0;
      if (pos < end) this._append(chunk.subarray(pos, end));
    } else if (pos === end) {
      this._start = this._end = 0;
      if (this._buf.length > 1 << 20) this._buf = null; // drop the memory of one huge frame
    } else {
      this._start = pos;
    }
    return events;
  }

  /** Validate the header at pos; return the body length or throw. */
  _header(buf, pos, events) {
    let err = null;
    const magic = buf.readUInt32BE(pos);
    const version = buf.readUInt16BE(pos + 4);
    const length = buf.readUInt32BE(pos + 8);
    if (magic !== this.magic) {
      err = new FrameError('BAD_FRAME', `bad magic 0x${magic.toString(16).padStart(8, '0')}`);
    } else if (version !== VERSION) {
      err = new FrameError('BAD_FRAME', `unsupported version ${version}`);
    } else if (length > this.maxFrame) {
      err = new FrameError('MSG_TOO_LARGE', `frame body of ${length} bytes exceeds ${this.maxFrame}`);
    }
    if (err) {
      err.events = events; // what this push decoded before the bad header
      this._error = err;
      this._buf = null;
      this._start = this._end = 0;
      throw err;
    }
    return length;
  }

  _body(type, text, events) {
    let event, problem = null;
    try {
      event = JSON.parse(text);
      if (!event || typeof event !== 'object' || Array.isArray(event)) problem = 'body is not a JSON object';
      else if (event.event_type !== type) problem = `header type ${type} != event_type ${event.event_type}`;
    } catch (e) {
      problem = `body is not JSON: ${e.message}`;
    }
    if (!problem) {
      events.push(event);
    } else if (this.onInvalid) {
      const err = new FrameError('BAD_REQUEST', problem);
      err.frameType = type;
      this.onInvalid(err);
    }
  }

  /** Append bytes after _end; grows geometrically so copying stays linear. */
  _append(bytes) {
    const n = bytes.length;
    if (n === 0) return;
    const unread = this._end - this._start;
    const cap = this._buf ? this._buf.length : 0;
    if (cap - this._end < n) {
      if (this._buf && unread + n <= cap >>> 1) {
        // Compact only when it frees at least half: each byte is moved O(1) times.
        this._buf.copy(this._buf, 0, this._start, this._end);
      } else {
        const grown = Buffer.allocUnsafe(Math.max(unread + n, cap * 2, 4096));
        if (this._buf) this._buf.copy(grown, 0, this._start, this._end);
        this._buf = grown;
      }
      this._start = 0;
      this._end = unread;
    }
    this._buf.set(bytes, this._end);
    this._end += n;
  }
}

module.exports = { MAGIC, VERSION, HEADER_SIZE, MAX_FRAME, EV, FrameError, checkMagic, encodeFrame, FrameDecoder };
