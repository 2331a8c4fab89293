-- po_off: a post-office client's connection on a node ended.
-- KEYS[1] the registry hash, ARGV[1] the clientID, ARGV[2] the node id
-- Removes the entry only if it still names that node (a newer connection on
-- another node keeps its own); returns 1 if it removed it.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
