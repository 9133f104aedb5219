-- Grant the tenant lease to ARGV[1] unless someone else holds it.
-- KEYS[1] lease, KEYS[2] fence counter, KEYS[3] boot marker, KEYS[4] grace key,
-- KEYS[5] run marker (run_id of the Redis process that last granted a lease)
-- ARGV[1] owner value 'worker|token', ARGV[2] ttl in ms
-- returns {1, fence}        granted (or already ours: extended, same fence)
--         {0, pttl, holder} held by someone else
--         {-1, grace_ms}    Redis lost its data, or restarted and may have lost
--                           its last writes: nothing is granted until the grace
--                           key expires, so every old holder has self-fenced
-- The restart check is repeated in redis_epoch.lua (workers run it on their
-- heartbeat so the freeze starts at the restart, not at the first grant after).
local info = redis.call('INFO', 'server')
local run_id = string.match(info, 'run_id:(%x+)') or ''
local ttl = tonumber(ARGV[2])
-- One TTL from the restart: uptime tells when that was. A failover's new
-- primary has a long uptime of its own, so a full TTL from now is the fallback.
-- uptime_in_seconds is a difference of whole unix seconds: it overstates the
-- real uptime by up to 1 s, so count one second less (the freeze ends between
-- one TTL and one TTL + 1 s after the restart, never before).
local uptime = tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0
local grace = ttl - math.max(uptime - 1, 0) * 1000
if grace <= 0 then grace = ttl end
local changed = false
if redis.call('EXISTS', KEYS[3]) == 0 then
  -- A value of its own per loss, so workers can tell a loss from a restart.
  redis.call('SET', KEYS[3], run_id)
  changed = true
end
local last_run = redis.call('GET', KEYS[5])
if last_run ~= run_id then
  redis.call('SET', KEYS[5], run_id)
  -- A restart that kept its data still counts: AOF everysec may have lost the
  -- last second, a grant among it. (No marker yet: a Redis we never ran on.)
  if last_run then changed = true end
end
if changed then
  redis.call('SET', KEYS[4], '1', 'PX', grace)
  return {-1, grace}
end
local left = redis.call('PTTL', KEYS[4])
if left > 0 then
  return {-1, left}
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
