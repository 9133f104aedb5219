-- Re-seed one tenant after Redis lost its data, from a worker's recovery record
-- (workers/recovery.py). Writes only what is missing: nothing at all when the
-- tenant record exists (it was created again, or another worker re-seeded it
-- first), so any number of workers may run it for the same tenant.
-- The API key is never re-seeded: a worker's copy may predate a rotation or a
-- revocation that Redis lost, and a revoked key must never work again. The
-- tenant comes back without a key (key_hash ''); a rotate issues a new one.
-- Touches only the tenant's keys (legal on a Cluster): the caller adds the tenant
-- to the global indexes (wa:tenants, wa:domains, wa:active) when it returns 1 or 2.
-- KEYS[1] tenant record, KEYS[2] session
-- ARGV[1] tenant id, ARGV[2] domain ('' none), ARGV[3] created_at,
-- ARGV[4] device JID ('' none), ARGV[5] 1 if the tenant wanted a live session,
-- ARGV[6] now (unix s)
-- returns 1 re-seeded now; 2 re-seeded before and still without a key (the
--   indexes may be missing if that caller failed after it: writing them again is
--   harmless); 0 the tenant record existed otherwise (nothing to do)
if redis.call('EXISTS', KEYS[1]) == 1 then
  local record = redis.call('HMGET', KEYS[1], 'restored_at', 'key_hash')
  if record[1] and record[1] ~= '' and (record[2] or '') == '' then
    return 2
  end
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'key_hash', '', 'domain', ARGV[2],
           'created_at', ARGV[3], 'key_updated_at', ARGV[6], 'restored_at', ARGV[6])
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[4] ~= '' and ARGV[5] == '1' then
    -- The claim scan resumes the device once the grant freeze is over.
    redis.call('HSET', KEYS[2], 'state', 'reconnecting', 'device', ARGV[4],
               'updated_at', ARGV[6])
  else
    redis.call('HSET', KEYS[2], 'state', 'idle', 'device', ARGV[4], 'updated_at', ARGV[6])
  end
end
return 1
