-- lease_acquire: SET NX PX, idempotent for the same incarnation (a retry after
-- a timed-out first try), and the node id registered for the survivors' sweep.
-- KEYS[1] the node's lease key, KEYS[2] the set of node ids
-- ARGV[1] incarnation, ARGV[2] ttl ms, ARGV[3] node id. Returns 1, or 0: taken.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
