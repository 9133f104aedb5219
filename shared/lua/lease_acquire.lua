-- Grant the tenant lease to ARGV[1] unless someone else holds it, and only on a
-- node whose identity the caller proves settled (no grant freeze in force for it,
-- as redis_epoch.lua or worker_heartbeat.lua told the caller). node_identity() is
-- prepended from identity_prelude.lua; the check and the grant are one atomic
-- step on the tenant's own node, so a restart or promotion between the caller's
-- epoch check and this grant changes the identity and refuses it.
-- KEYS[1] lease, KEYS[2] fence counter
-- ARGV[1] owner value 'worker|token', ARGV[2] ttl in ms, ARGV[3...] settled node
--   identities ('run_id:master_replid2')
-- returns {1, fence}               granted (or already ours: extended, same fence)
--         {0, pttl, holder}        held by someone else
--         {-2, identity, uptime_s} this node's identity is not among ARGV[3...]:
--                                  the caller settles it (redis_epoch.lua) first
local identity, uptime = node_identity()
local settled = false
for i = 3, #ARGV do
  if ARGV[i] == identity then settled = true end
end
if not settled then
  return {-2, identity, uptime}
end
local holder = redis.call('GET', KEYS[1])
if holder then
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
  end
  return {0, redis.call('PTTL', KEYS[1]), holder}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('INCR', KEYS[2])}
