'use strict';
// The memory API client (sdk/libchat/memory.js), over TCP and a Unix socket.
const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { SDK, cleanup, tempDir, memoryApi } = require('./helpers');

const { MemoryClient, MemoryError } = require(`${SDK}/memory.js`);

after(cleanup);

describe('MemoryClient', () => {
  test('get/set send the right body and Authorization header', async () => {
    const api = await memoryApi({ port: 0 }, 's3cret');
    const mem = new MemoryClient({ port: api.port, token: 's3cret', userId: () => 'u1' });

    assert.equal(await mem.get('name'), null);
    assert.equal(await mem.set('name', { first: 'Ada', n: [1, '二'] }), true);
    assert.deepEqual(await mem.get('name'), { first: 'Ada', n: [1, '二'] });
    assert.deepEqual(api.seen[0], {
      method: 'POST', url: '/memory', auth: 'Bearer s3cret', type: 'application/json',
      body: { event_type: 3000, action: 'query_tool_memory', key: 'name', user_id: 'u1' },
    });
    assert.deepEqual(api.seen[1].body, { event_type: 3000, action: 'save_tool_memory', key: 'name', value: { first: 'Ada', n: [1, '二'] }, user_id: 'u1' });

    const bad = new MemoryClient({ port: api.port, token: 'wrong', userId: 'u1' });
    await assert.rejects(bad.get('name'), (err) => {
      assert.ok(err instanceof MemoryError);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'UNAUTHORIZED');
      assert.deepEqual(JSON.parse(err.body), { code: 'UNAUTHORIZED', message: 'bad token' });
      return true;
    });
    await assert.rejects(mem.get(''), TypeError);
  });

  test('socketPath reaches an API on a Unix socket, and wins over host and port', async () => {
    const socketPath = path.join(tempDir('libchat-api-'), 'api.sock');
    const api = await memoryApi({ socketPath });
    // port 9 (discard) would refuse or hang: the socket path must be used instead.
    const mem = new MemoryClient({ host: '127.0.0.1', port: 9, socketPath, token: 'tok-123', userId: 'u2' });
    assert.equal(await mem.set('k', [1, 2]), true);
    assert.deepEqual(await mem.get('k'), [1, 2]);
    assert.equal(api.seen.length, 2);
    assert.deepEqual(api.seen[1], {
      method: 'POST', url: '/memory', auth: 'Bearer tok-123', type: 'application/json',
      body: { event_type: 3000, action: 'query_tool_memory', key: 'k', user_id: 'u2' },
    });
  });

  test('without a port or a socket path a call fails with a message, not a crash', async () => {
    const mem = new MemoryClient({ port: 0, token: 't', userId: 'u' });
    await assert.rejects(mem.get('k'), /no API endpoint/);
    await assert.rejects(new MemoryClient({ port: 1, userId: 'u' }).get('k'), /LIBCHAT_TOKEN is not set/);
    await assert.rejects(new MemoryClient({ port: 1, token: 't', userId: () => null }).get('k'), /no user yet/);
  });
});
