-- po_put: queue one post-office envelope for an absent clientID, if there is room.
-- KEYS[1] the target's list, KEYS[2] the due set, KEYS[3] the count
-- ARGV[1] bound, ARGV[2] the item (JSON), ARGV[3] its expiry (epoch ms),
-- ARGV[4] the target clientID, ARGV[5] how long past the expiry the list may
-- outlive a sweep (ms; a safety net when no node sweeps)
-- Returns 1 (queued) or 0 (full). Atomic, so the bound holds cluster-wide.
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[5]))
redis.call('INCR', KEYS[3])
return 1
