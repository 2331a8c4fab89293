-- The operator desk's lease (libchat/cluster/desk.py): one node of the
-- cluster holds it. KEYS[1] the lease; ARGV[1] this node's value (node id and
-- a token of this process), ARGV[2] its time to live (ms), ARGV[3] "1" when
-- this node may take a free lease. Refreshes the lease if this node holds it,
-- takes it if it is free (and allowed); returns the holder's value (nil: none).
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return v
end
if not v and ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return v
