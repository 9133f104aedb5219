-- A worker's heartbeat: notice a restart first (so its own new entry cannot
-- hide the old ones from note_restart), then record the worker with the time on
-- its own wall clock (what workers/cleanup.py and the health check compare).
-- KEYS[1] boot marker, KEYS[2] grace key, KEYS[3] run marker, KEYS[4] workers
-- ARGV[1] ttl in ms, ARGV[2] slack in ms (see restart_prelude.lua), ARGV[3] worker id,
-- ARGV[4] the worker's wall-clock time in seconds
-- returns {grace in force in ms (0: none), the boot marker's value}
local grace = note_restart(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]),
                           tonumber(ARGV[2]))
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
return {grace, redis.call('GET', KEYS[1])}
