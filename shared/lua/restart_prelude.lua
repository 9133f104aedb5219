-- Prepended by shared/scripts.py to lease_acquire.lua, redis_epoch.lua and
-- worker_heartbeat.lua, the scripts that notice a Redis restart (workers run the
-- heartbeat every 2 s so the grant freeze starts at the restart, not at the
-- first grant).
-- note_restart(boot_key, grace_key, run_key, workers_key, ttl_ms, slack_ms)
--   -> grace in force, in ms (0: none). A missing boot marker (data lost, or a
--   Redis we never ran on) or a run_id other than the one last seen (a restart
--   or failover: AOF everysec or a replica's lag may have lost the last writes,
--   a grant among them) starts a freeze: no lease is granted until every old
--   holder has self-fenced. The boot marker is written with the run_id of the
--   Redis that found it missing, so workers can tell a data loss from a restart
--   that kept its data (workers/recovery.py).
-- How long (docs/reliability.md, "The restart freeze"): every holder's window
-- began before the old Redis stopped, so one TTL after the restart is always
-- enough. When the data survived, the worker registry says more: a worker
-- starts or extends a lease window only within slack_ms (heartbeat max age +
-- clock skew) of a heartbeat that Redis had had for the loss window
-- (shared/lease.py), so that heartbeat survived and no window of that worker
-- outlasts its score + slack + TTL. The freeze is the shorter of the two; an
-- empty or long-silent registry (every worker stopped cleanly) means none.
local function note_restart(boot_key, grace_key, run_key, workers_key, ttl, slack)
  local info = redis.call('INFO', 'server')
  local run_id = string.match(info, 'run_id:(%x+)') or ''
  local changed = false
  local lost = false
  if redis.call('EXISTS', boot_key) == 0 then
    redis.call('SET', boot_key, run_id)
    changed = true
    lost = true
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
    if not lost then
      local top = redis.call('ZREVRANGE', workers_key, 0, 0, 'WITHSCORES')
      local by_registry = 0
      if top[2] then
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
        by_registry = math.ceil(tonumber(top[2]) * 1000 + slack + ttl - now)
      end
      if by_registry < grace then grace = by_registry end
    end
    -- A freeze still running from an earlier restart (a data loss, whose
    -- registry was lost with it) is never cut short by this one.
    grace = math.max(grace, redis.call('PTTL', grace_key))
    if grace > 0 then
      redis.call('SET', grace_key, '1', 'PX', grace)
      return grace
    end
    return 0
  end
  return math.max(redis.call('PTTL', grace_key), 0)
end
