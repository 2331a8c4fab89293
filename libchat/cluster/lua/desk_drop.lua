-- Let go of the operator desk's lease if this node holds it (a clean stop).
-- KEYS[1] the lease; ARGV[1] this node's value.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
