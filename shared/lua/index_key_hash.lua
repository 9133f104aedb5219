-- Put one tenant's live key hash into the key-hash index (the start-up backfill
-- for tenants created before the index existed). Reads the hash and writes the
-- index in one step, so a rotation or revocation racing it can never leave a
-- replaced hash in the index; an entry already there is left alone.
-- Touches a global key: run it on a single Redis (not legal on a Cluster).
-- KEYS[1] tenant record, KEYS[2] wa:key-hashes
-- ARGV[1] tenant id
-- returns 1 if an index entry was added, 0 if none was needed (no key, or indexed)
local key_hash = redis.call('HGET', KEYS[1], 'key_hash')
if not key_hash or key_hash == '' then
  return 0
end
return redis.call('HSETNX', KEYS[2], key_hash, ARGV[1])
