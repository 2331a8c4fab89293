-- release: give a dialog up, only if it is still ours (SIGTERM, a dialog's end).
-- KEYS[1] the dialog hash; ARGV[1] key prefix, ARGV[2] dialog id, ARGV[3] my incarnation
-- The fence and the seq stay: the next owner's fence is still larger.
local cur = redis.call('HMGET', KEYS[1], 'node', 'inc')
if cur[2] ~= ARGV[3] then
  return 0
end
redis.call('HDEL', KEYS[1], 'node', 'inc')
redis.call('SREM', ARGV[1] .. 'owned:' .. cur[1], ARGV[2])
return 1
