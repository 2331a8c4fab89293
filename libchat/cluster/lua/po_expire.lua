-- po_expire: pop the envelopes past their expiry (the hub bounces them).
-- KEYS[1] the due set, KEYS[2] the count; ARGV[1] now (epoch ms),
-- ARGV[2] key prefix of the lists, ARGV[3] at most this many targets per call
-- Returns the popped items (JSON), oldest first per target. Atomic: each
-- expired item is popped (and bounced) by exactly one node.
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, target in ipairs(due) do
  local list = ARGV[2] .. target
  while true do
    local head = redis.call('LINDEX', list, 0)
    if not head then
      redis.call('ZREM', KEYS[1], target)
      break
    end
    local expires = cjson.decode(head)['expires_ms']
    if expires > tonumber(ARGV[1]) then
      redis.call('ZADD', KEYS[1], expires, target)
      break
    end
    out[#out + 1] = redis.call('LPOP', list)
  end
end
if #out > 0 and tonumber(redis.call('DECRBY', KEYS[2], #out)) < 0 then
  redis.call('SET', KEYS[2], 0)
end
return out
