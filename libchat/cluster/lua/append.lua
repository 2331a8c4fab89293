-- append: one transcript entry, written only by the owner under its fence;
-- also put_record (an empty entry: the record alone), so the owner check is one.
-- KEYS[1] the dialog hash, KEYS[2] the dialog's stream
-- ARGV[1] key prefix, ARGV[2] my incarnation, ARGV[3] my fence, ARGV[4] the entry
-- ('' for none), ARGV[5] (optional) the dialog record without its transcript,
-- kept in field rec
-- KEYS[3] (optional) a node's inbox stream, ARGV[6] a message for it, ARGV[7] the seq
-- the entry must get for the message to go, ARGV[8] the inbox's approximate MAXLEN
-- Returns the new seq (0 without an entry); the stream entry's id is "<seq>-0",
-- so stream ids are seqs.
local cur = redis.call('HMGET', KEYS[1], 'node', 'inc', 'fence')
if cur[2] ~= ARGV[2] or tonumber(cur[3]) ~= tonumber(ARGV[3]) then
  return redis.error_reply('FENCED not the owner under fence ' .. ARGV[3])
end
if redis.call('GET', ARGV[1] .. 'node:' .. cur[1]) ~= ARGV[2] then
  return redis.error_reply('FENCED the lease of ' .. cur[1] .. ' is gone')
end
if ARGV[5] and ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'rec', ARGV[5])
end
if ARGV[4] == '' then
  return 0
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], seq .. '-0', 'e', ARGV[4])
if KEYS[3] and seq == tonumber(ARGV[7]) then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'm', ARGV[6])
end
return seq
