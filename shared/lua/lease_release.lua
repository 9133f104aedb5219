-- Give the lease up if ARGV[1] holds it and (unless forced) no mail waits.
-- KEYS[1] lease, KEYS[2] mailbox, KEYS[3] inflight
-- ARGV[1] owner value, ARGV[2] '1' to release even with mail waiting
-- returns 1 released, 0 not the holder, -1 kept because commands are waiting
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '1' and (redis.call('LLEN', KEYS[2]) > 0 or redis.call('LLEN', KEYS[3]) > 0) then
  return -1
end
redis.call('DEL', KEYS[1])
return 1
