-- desk_adopt: move every operator ticket of a dead node into ours.
-- KEYS[1] the dead node's desk hash, KEYS[2] ours
-- Returns the moved tickets (JSON). Atomic: two survivors adopting at once
-- cannot both get a ticket.
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  redis.call('HSET', KEYS[2], all[i], all[i + 1])
  out[#out + 1] = all[i + 1]
end
redis.call('DEL', KEYS[1])
return out
