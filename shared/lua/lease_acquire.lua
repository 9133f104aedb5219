-- Grant the tenant lease to ARGV[1] unless someone else holds it.
-- KEYS[1] lease, KEYS[2] fence counter, KEYS[3] boot marker, KEYS[4] grace key,
-- KEYS[5] run marker (run_id of the Redis process that last granted a lease),
-- KEYS[6] workers registry
-- ARGV[1] owner value 'worker|token', ARGV[2] ttl in ms, ARGV[3] slack in ms
--   (see restart_prelude.lua)
-- returns {1, fence}        granted (or already ours: extended, same fence)
--         {0, pttl, holder} held by someone else
--         {-1, grace_ms}    Redis lost its data, or restarted and may have lost
--                           its last writes: nothing is granted until the grace
--                           key expires, so every old holder has self-fenced
-- The restart check (note_restart) is prepended from restart_prelude.lua.
local grace = note_restart(KEYS[3], KEYS[4], KEYS[5], KEYS[6], tonumber(ARGV[2]),
                           tonumber(ARGV[3]))
if grace > 0 then
  return {-1, grace}
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
