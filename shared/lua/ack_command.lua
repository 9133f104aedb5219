-- Mark the owner's running command done.
-- KEYS[1] lease, KEYS[2] inflight
-- ARGV[1] owner value, ARGV[2] command JSON
-- returns 1 removed, 0 not the owner or not in flight
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
return redis.call('LREM', KEYS[2], 1, ARGV[2])
