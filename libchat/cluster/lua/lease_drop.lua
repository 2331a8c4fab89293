-- lease_drop: delete the node lease if it is still ours (SIGTERM).
-- KEYS[1] the lease key; ARGV[1] incarnation. Returns 1, or 0: not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
