-- claim: become the owner of a dialog, or learn who is.
-- KEYS[1] the dialog hash (fields node, inc, fence, seq)
-- ARGV[1] key prefix, ARGV[2] dialog id, ARGV[3] my node id, ARGV[4] my incarnation
-- Returns {owner node id, fence}. Wins (and bumps the fence) when there is no
-- owner or the owner's lease no longer holds its incarnation; "already mine"
-- keeps the fence. Runs atomically, so concurrent claimers are serialised.
local prefix, dialog, me, inc = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', prefix .. 'node:' .. me) ~= inc then
  return redis.error_reply('FENCED the lease of ' .. me .. ' is not held by this process')
end
local cur = redis.call('HMGET', KEYS[1], 'node', 'inc', 'fence')
local owner, owner_inc, fence = cur[1], cur[2], tonumber(cur[3] or '0')
if owner_inc == inc then
  return {owner, fence}
end
if owner and redis.call('GET', prefix .. 'node:' .. owner) == owner_inc then
  return {owner, fence}
end
fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'node', me, 'inc', inc)
if owner then
  redis.call('SREM', prefix .. 'owned:' .. owner, dialog)
end
redis.call('SADD', prefix .. 'owned:' .. me, dialog)
return {me, fence}
