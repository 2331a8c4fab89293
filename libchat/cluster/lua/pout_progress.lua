-- pout_progress: record that parts 0 .. n-1 of an outbox item were sent, if
-- the item is still in this node's outbox (else it was handed to a survivor).
-- KEYS[1] the node's outbox hash; ARGV[1] item id, ARGV[2] parts done.
-- Returns 1, or 0: the item is not there.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1] .. ':n', ARGV[2])
  return 1
end
return 0
