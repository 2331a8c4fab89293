-- put_record: keep the dialog record (without its transcript), owner only.
-- KEYS[1] the dialog hash; ARGV[1] key prefix, ARGV[2] my incarnation,
-- ARGV[3] my fence, ARGV[4] the record
local cur = redis.call('HMGET', KEYS[1], 'node', 'inc', 'fence')
if cur[2] ~= ARGV[2] or tonumber(cur[3]) ~= tonumber(ARGV[3]) then
  return redis.error_reply('FENCED not the owner under fence ' .. ARGV[3])
end
if redis.call('GET', ARGV[1] .. 'node:' .. cur[1]) ~= ARGV[2] then
  return redis.error_reply('FENCED the lease of ' .. cur[1] .. ' is gone')
end
redis.call('HSET', KEYS[1], 'rec', ARGV[4])
return 1
