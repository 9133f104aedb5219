-- Notice a Redis restart (or data loss) now, not at the next grant: start the
-- grant freeze of lease_acquire.lua from the restart (note_restart, prepended).
-- KEYS[1] boot marker, KEYS[2] grace key, KEYS[3] run marker, KEYS[4] workers
-- ARGV[1] ttl in ms, ARGV[2] slack in ms (see restart_prelude.lua)
-- returns {grace in force in ms (0: none), the boot marker's value}: a worker
--   that saw another marker value before knows Redis lost its data
--   (workers/recovery.py)
local grace = note_restart(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]),
                           tonumber(ARGV[2]))
return {grace, redis.call('GET', KEYS[1])}
