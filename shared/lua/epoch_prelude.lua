-- Prepended by shared/scripts.py (after identity_prelude.lua) to redis_epoch.lua
-- and worker_heartbeat.lua, the scripts that keep the epoch: the boot marker, the
-- grace key, the settled node identities and the worker registry, all in the
-- slot of the "{_}" hash tag (legal on a Cluster). Workers run the heartbeat
-- every 2 s, so a restart of this node is noticed then, not at the next grant.
-- epoch_now() -> Redis' TIME in whole ms.
-- epoch_boot(k, identity, now) -> true when the boot marker was missing (data
--   lost, or a Redis we never ran on): it is written again with a new value, and
--   every recorded identity is forgotten (their records went with the data, or
--   an operator deleted the marker: either way nothing recorded is trusted).
-- epoch_note(k, ttl, slack, identity, uptime, lost, now) -> ms until a node with
--   `identity` may grant (0: now). The first time an identity is seen its freeze
--   is fixed and recorded in k.nodes:
--   * none for the first identity recorded under a boot marker that was found
--     (not created): nothing was ever granted under that marker;
--   * else rule 1, always valid: one TTL after the node's (re)start. uptime tells
--     when that was; uptime_in_seconds is a difference of whole unix seconds and
--     overstates by up to 1 s, so one second less counts. A promoted replica
--     reports 0 (identity_prelude.lua): a full TTL from now;
--   * shortened by rule 2 when the data here survived (not lost): a worker starts
--     or extends a lease window only within slack (heartbeat max age + clock skew)
--     of a heartbeat that Redis had had for the loss window (shared/lease.py), so
--     no window of a registered worker outlasts the newest score + slack + TTL;
--     an empty or long-silent registry means no freeze;
--   * never shorter than a freeze in force (k.grace: the registry may have been
--     lost with the data a moment ago, or another node restarted just before).
--   The reasoning is in docs/reliability.md, "The restart freeze".
local function epoch_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function epoch_boot(k, identity, now)
  if redis.call('EXISTS', k.boot) == 1 then
    return false
  end
  redis.call('SET', k.boot, identity .. '@' .. string.format('%.0f', now))
  redis.call('DEL', k.nodes)
  return true
end

local function epoch_note(k, ttl, slack, identity, uptime, lost, now)
  local settles = redis.call('HGET', k.nodes, identity)
  if settles then
    return math.max(tonumber(settles) - now, 0)
  end
  local freeze = 0
  if lost or redis.call('HLEN', k.nodes) > 0 then
    freeze = ttl - math.max(uptime - 1, 0) * 1000
    if freeze <= 0 then freeze = ttl end
    if not lost then
      local top = redis.call('ZREVRANGE', k.workers, 0, 0, 'WITHSCORES')
      local by_registry = 0
      if top[2] then
        by_registry = math.ceil(tonumber(top[2]) * 1000 + slack + ttl - now)
      end
      if by_registry < freeze then freeze = by_registry end
    end
  end
  freeze = math.max(freeze, redis.call('PTTL', k.grace), 0)
  if freeze > 0 then
    redis.call('SET', k.grace, '1', 'PX', freeze)
  end
  redis.call('HSET', k.nodes, identity, string.format('%.0f', now + freeze))
  return freeze
end
