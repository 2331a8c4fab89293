'use strict';
// examples/node/postoffice.js: the pure back-off and the token fetch against
// a tiny local HTTP server. The WebSocket side is proven against a real
// twistd by tests/postoffice/kit/test_python_kit.py::test_node_kit_answers.
const test = require('node:test');
const assert = require('node:assert');
const http = require('http');
const { backoff, fetchToken } = require('../../examples/node/postoffice.js');

test('back-off is full jitter, exponential and capped', () => {
  assert.strictEqual(backoff(0, 1, 30, () => 0), 0);
  assert.ok(Math.abs(backoff(3, 1, 30, () => 0.999) - 7.992) < 1e-9);
  assert.strictEqual(backoff(50, 1, 30, () => 1), 30);
  const s = new Set(Array.from({ length: 50 }, () => backoff(4)));
  assert.ok(s.size > 40 && [...s].every((x) => x >= 0 && x < 8));
});

test('token fetch sends appid and secret, rejects a 401', async (t) => {
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/token' && u.searchParams.get('appid') === 'acme'
        && u.searchParams.get('secret') === 's3') {
      res.end(JSON.stringify({ expires: 1234, token: 'tok', ttl: 60 }));
    } else { res.statusCode = 401; res.end('{}'); }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const url = `http://127.0.0.1:${server.address().port}/token`;
  assert.deepStrictEqual(await fetchToken(url, 'acme', 's3'), { expires: 1234, token: 'tok', ttl: 60 });
  await assert.rejects(fetchToken(url, 'acme', 'wrong'), /HTTP 401/);
});
