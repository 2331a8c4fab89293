-- po_ack: drop delivered envelopes from the head of a target's list.
-- KEYS[1] the target's list, KEYS[2] the due set, KEYS[3] the count
-- ARGV[1] the target clientID, ARGV[2..] the ids delivered
-- Pops while the head is one of them (an expiry sweep or another node may
-- have taken some already); returns how many it dropped.
local ids = {}
for i = 2, #ARGV do ids[ARGV[i]] = true end
local n = 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or not ids[cjson.decode(head)['id']] then break end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
local head = redis.call('LINDEX', KEYS[1], 0)
if head then
  redis.call('ZADD', KEYS[2], cjson.decode(head)['expires_ms'], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if n > 0 and tonumber(redis.call('DECRBY', KEYS[3], n)) < 0 then
  redis.call('SET', KEYS[3], 0)
end
return n
