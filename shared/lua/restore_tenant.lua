-- Re-seed one tenant after Redis lost its data, from a worker's recovery record
-- (workers/recovery.py). Writes only what is missing: nothing at all when the
-- tenant record exists (it was created again, or another worker re-seeded it
-- first), so any number of workers may run it for the same tenant.
-- Touches global keys too: run it on a single Redis (not legal on a Cluster).
-- KEYS[1] tenant record, KEYS[2] session, KEYS[3] wa:tenants, KEYS[4] wa:domains,
-- KEYS[5] wa:key-hashes, KEYS[6] wa:active
-- ARGV[1] tenant id, ARGV[2] key_hash ('' when revoked), ARGV[3] domain ('' none),
-- ARGV[4] created_at, ARGV[5] key_updated_at, ARGV[6] device JID ('' none),
-- ARGV[7] 1 if the tenant wanted a live session, ARGV[8] now (unix s)
-- returns 1 re-seeded, 0 the tenant record existed (nothing written)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'key_hash', ARGV[2], 'domain', ARGV[3],
           'created_at', ARGV[4], 'key_updated_at', ARGV[5], 'restored_at', ARGV[8])
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[4], ARGV[3], ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSETNX', KEYS[5], ARGV[2], ARGV[1]) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[6] ~= '' and ARGV[7] == '1' then
    -- The claim scan resumes the device once the grant freeze is over.
    redis.call('HSET', KEYS[2], 'state', 'reconnecting', 'device', ARGV[6],
               'updated_at', ARGV[8])
    redis.call('SADD', KEYS[6], ARGV[1])
  else
    redis.call('HSET', KEYS[2], 'state', 'idle', 'device', ARGV[6], 'updated_at', ARGV[8])
  end
end
return 1
