'use strict';
// The wire format (sdk/libchat/frame.js): encodeFrame and FrameDecoder.
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const { SDK } = require('./helpers');

const { encodeFrame, FrameDecoder, MAGIC, VERSION } = require(`${SDK}/frame.js`);

function header({ magic = MAGIC, version = VERSION, type = 1001, length = 0 } = {}) {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(magic, 0);
  h.writeUInt16BE(version, 4);
  h.writeUInt16BE(type, 6);
  h.writeUInt32BE(length, 8);
  return h;
}

const sample = (i) => ({ event_type: 1001, dialog_id: 'd1', user_id: 'u1', message_id: `m${i}`, messages: { content: `hi ${i}`, attachments: [] } });

describe('encodeFrame / FrameDecoder', () => {
  test('round trip with non-ASCII uses the UTF-8 byte length', () => {
    const event = { event_type: 2001, dialog_id: 'd', user_id: 'u', messages: { content: '你好, wörld 🚀', attachments: [] } };
    const frame = encodeFrame(event);
    const json = JSON.stringify(event);
    assert.equal(frame.readUInt32BE(0), MAGIC);
    assert.equal(frame.readUInt16BE(4), VERSION);
    assert.equal(frame.readUInt16BE(6), 2001);
    assert.equal(frame.readUInt32BE(8), Buffer.byteLength(json));
    assert.notEqual(Buffer.byteLength(json), json.length);
    assert.equal(frame.readUInt32BE(12), 0);
    assert.equal(frame.length, 16 + Buffer.byteLength(json));
    assert.deepEqual(new FrameDecoder().push(frame), [event]);
  });

  test('custom magic', () => {
    const frame = encodeFrame(sample(0), 0x12345678);
    assert.equal(frame.readUInt32BE(0), 0x12345678);
    assert.deepEqual(new FrameDecoder({ magic: 0x12345678 }).push(frame), [sample(0)]);
    assert.throws(() => new FrameDecoder().push(frame), { code: 'BAD_FRAME' });
  });

  test('encodeFrame rejects bad events', () => {
    assert.throws(() => encodeFrame(null), TypeError);
    assert.throws(() => encodeFrame([1]), TypeError);
    assert.throws(() => encodeFrame({ event_type: 'x' }), RangeError);
    assert.throws(() => encodeFrame({ event_type: 70000 }), RangeError);
  });

  test('frames split at every byte', () => {
    const stream = Buffer.concat([encodeFrame(sample(1)), encodeFrame({ event_type: 2001, dialog_id: 'd', user_id: 'u', messages: { content: 'ü€😀' } }), encodeFrame(sample(3))]);
    const dec = new FrameDecoder();
    const got = [];
    for (let i = 0; i < stream.length; i++) got.push(...dec.push(stream.subarray(i, i + 1)));
    assert.equal(got.length, 3);
    assert.deepEqual(got[0], sample(1));
    assert.equal(got[1].messages.content, 'ü€😀');
    assert.deepEqual(got[2], sample(3));
    assert.equal(dec.pending, 0);
  });

  test('many frames in one chunk, plus a partial tail', () => {
    const frames = [];
    for (let i = 0; i < 500; i++) frames.push(encodeFrame(sample(i)));
    const all = Buffer.concat(frames);
    const dec = new FrameDecoder();
    const tail = frames[499].length - 5;
    const got = dec.push(all.subarray(0, all.length - tail));
    assert.equal(got.length, 499);
    assert.deepEqual(got[498], sample(498));
    assert.deepEqual(dec.push(all.subarray(all.length - tail)), [sample(499)]);
  });

  test('large frame in small chunks', () => {
    const event = { event_type: 1001, dialog_id: 'd', user_id: 'u', messages: { content: 'x'.repeat(3 * 1024 * 1024) } };
    const frame = encodeFrame(event);
    const dec = new FrameDecoder();
    const got = [];
    for (let i = 0; i < frame.length; i += 1000) got.push(...dec.push(frame.subarray(i, i + 1000)));
    assert.equal(got.length, 1);
    assert.equal(got[0].messages.content.length, 3 * 1024 * 1024);
  });

  test('oversize length is rejected from the header alone', () => {
    const dec = new FrameDecoder({ maxFrame: 1024 });
    assert.deepEqual(dec.push(header({ length: 1025 }).subarray(0, 15)), []);
    assert.throws(() => dec.push(header({ length: 1025 }).subarray(15)), { code: 'MSG_TOO_LARGE' });
    assert.equal(dec.pending, 0, 'no body bytes buffered');
    assert.throws(() => dec.push(Buffer.alloc(10)), { code: 'MSG_TOO_LARGE' }, 'stays failed');
    // Exactly the maximum is fine.
    const ok = new FrameDecoder({ maxFrame: Buffer.byteLength(JSON.stringify(sample(1))) });
    assert.deepEqual(ok.push(encodeFrame(sample(1))), [sample(1)]);
  });

  test('default maximum is 4 MiB', () => {
    assert.throws(() => new FrameDecoder().push(header({ length: 4 * 1024 * 1024 + 1 })), { code: 'MSG_TOO_LARGE' });
  });

  test('bad magic and bad version are rejected', () => {
    assert.throws(() => new FrameDecoder().push(Buffer.alloc(32, 0x5a)), { code: 'BAD_FRAME' });
    assert.throws(() => new FrameDecoder().push(header({ version: 2 })), { code: 'BAD_FRAME' });
    // Frames decoded before the bad header are handed over on the error.
    try {
      new FrameDecoder().push(Buffer.concat([encodeFrame(sample(1)), Buffer.alloc(16)]));
      assert.fail('should throw');
    } catch (err) {
      assert.equal(err.code, 'BAD_FRAME');
      assert.deepEqual(err.events, [sample(1)]);
    }
  });

  test('bad bodies are reported and skipped, the stream stays in sync', () => {
    const invalid = [];
    const dec = new FrameDecoder({ onInvalid: (e) => invalid.push(e) });
    const body = (text, type = 1001) => Buffer.concat([header({ type, length: Buffer.byteLength(text) }), Buffer.from(text)]);
    const got = dec.push(Buffer.concat([body('not json'), body('[1,2]'), body('{"event_type":1002}', 1001), encodeFrame(sample(7))]));
    assert.deepEqual(got, [sample(7)]);
    assert.deepEqual(invalid.map((e) => e.code), ['BAD_REQUEST', 'BAD_REQUEST', 'BAD_REQUEST']);
  });
});
