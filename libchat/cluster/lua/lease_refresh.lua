-- lease_refresh: extend the node lease only while it still holds our incarnation.
-- KEYS[1] the lease key; ARGV[1] incarnation, ARGV[2] ttl ms. Returns 1, or 0: lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
