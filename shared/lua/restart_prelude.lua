-- Prepended by shared/scripts.py to lease_acquire.lua and redis_epoch.lua, the
-- two scripts that notice a Redis restart (workers run redis_epoch on their
-- heartbeat so the grant freeze starts at the restart, not at the first grant).
-- note_restart(boot_key, grace_key, run_key, ttl_ms) -> grace in force, in ms
--   (0: none). A missing boot marker (data lost, or a Redis we never ran on) or
--   a run_id other than the one last seen (a restart or failover: AOF everysec
--   may have lost the last second, a grant among it) starts a freeze: no lease
--   is granted until every old holder has self-fenced. The boot marker is
--   written with the run_id of the Redis that found it missing, so workers can
--   tell a data loss from a restart that kept its data (workers/recovery.py).
local function note_restart(boot_key, grace_key, run_key, ttl)
  local info = redis.call('INFO', 'server')
  local run_id = string.match(info, 'run_id:(%x+)') or ''
  local changed = false
  if redis.call('EXISTS', boot_key) == 0 then
    redis.call('SET', boot_key, run_id)
    changed = true
  end
  local last_run = redis.call('GET', run_key)
  if last_run ~= run_id then
    redis.call('SET', run_key, run_id)
    -- No run marker yet: a Redis we never ran on (the boot marker rule covers it).
    if last_run then changed = true end
  end
  if changed then
    -- One TTL from the restart: uptime tells when that was. A failover's new
    -- primary has a long uptime of its own, so a full TTL from now is the
    -- fallback. uptime_in_seconds is a difference of whole unix seconds: it
    -- overstates the real uptime by up to 1 s, so count one second less (the
    -- freeze ends between one TTL and one TTL + 1 s after the restart).
    local uptime = tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0
    local grace = ttl - math.max(uptime - 1, 0) * 1000
    if grace <= 0 then grace = ttl end
    redis.call('SET', grace_key, '1', 'PX', grace)
    return grace
  end
  return math.max(redis.call('PTTL', grace_key), 0)
end
