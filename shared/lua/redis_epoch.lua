-- Notice a Redis restart (or data loss) now, not at the next grant: start the
-- grant freeze of lease_acquire.lua from the restart. Same rules as there.
-- KEYS[1] boot marker, KEYS[2] grace key, KEYS[3] run marker
-- ARGV[1] ttl in ms
-- returns {grace in force in ms (0: none), the boot marker's value}: the marker
--   is written with the run_id of the Redis that found it missing, so a worker
--   that saw another value before knows Redis lost its data (workers/recovery.py)
local info = redis.call('INFO', 'server')
local run_id = string.match(info, 'run_id:(%x+)') or ''
local ttl = tonumber(ARGV[1])
-- uptime_in_seconds is a difference of whole unix seconds: it overstates the
-- real uptime by up to 1 s, so count one second less (the freeze ends between
-- one TTL and one TTL + 1 s after the restart, never before).
local uptime = tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0
local grace = ttl - math.max(uptime - 1, 0) * 1000
if grace <= 0 then grace = ttl end
local changed = false
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], run_id)
  changed = true
end
local last_run = redis.call('GET', KEYS[3])
if last_run ~= run_id then
  redis.call('SET', KEYS[3], run_id)
  if last_run then changed = true end
end
if changed then
  redis.call('SET', KEYS[2], '1', 'PX', grace)
  return {grace, redis.call('GET', KEYS[1])}
end
return {math.max(redis.call('PTTL', KEYS[2]), 0), redis.call('GET', KEYS[1])}
