-- po_at: a post-office client connected to a node.
-- KEYS[1] the registry hash (clientID -> node id)
-- ARGV[1] the clientID, ARGV[2] the node id
-- Returns the node it was connected to before (or false): that node closes
-- its connection (a newer one replaced it), whichever of two simultaneous
-- connects Redis ran last wins.
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old
