-- A worker's heartbeat: check the epoch first (so its own new entry cannot hide
-- the old ones from epoch_note), then record the worker with the time on its own
-- wall clock (what workers/cleanup.py and the health check compare).
-- Prepended: identity_prelude.lua, epoch_prelude.lua.
-- KEYS[1] boot marker, KEYS[2] grace key, KEYS[3] node identities, KEYS[4] workers
-- ARGV[1] ttl in ms, ARGV[2] slack in ms (see epoch_prelude.lua), ARGV[3] worker id,
-- ARGV[4] the worker's wall-clock time in seconds
-- returns {this node's identity, ms until it may grant (0: now), the boot marker's value}
local k = {boot = KEYS[1], grace = KEYS[2], nodes = KEYS[3], workers = KEYS[4]}
local identity, uptime = node_identity()
local now = epoch_now()
local lost = epoch_boot(k, identity, now)
local freeze = epoch_note(k, tonumber(ARGV[1]), tonumber(ARGV[2]), identity, uptime, lost, now)
redis.call('ZADD', k.workers, ARGV[4], ARGV[3])
return {identity, freeze, redis.call('GET', k.boot)}
