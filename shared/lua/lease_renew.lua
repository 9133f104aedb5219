-- Extend the lease if ARGV[1] still holds it.
-- KEYS[1] lease
-- ARGV[1] owner value, ARGV[2] ttl in ms
-- returns 1 renewed, 0 not the holder (lost: the caller must self-fence)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
