-- pout_adopt: move a dead node's platform outbox (items and their progress)
-- into ours, unless the node holds its lease again (a restart under the same
-- node id sends its own outbox).
-- KEYS[1] the dead node's outbox hash, KEYS[2] ours, KEYS[3] the dead node's lease.
-- Returns the moved fields and values, flat. Atomic: of several survivors
-- adopting at once one gets them, the others an empty list; idempotent.
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {}
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  redis.call('HSET', KEYS[2], all[i], all[i + 1])
end
redis.call('DEL', KEYS[1])
return all
