-- Check the epoch: notice a restart, promotion or data loss of this node now,
-- and settle the identities of other nodes that refused a grant (lease_acquire.lua
-- returns -2 with its node's identity and uptime). Prepended: identity_prelude.lua,
-- epoch_prelude.lua.
-- KEYS[1] boot marker, KEYS[2] grace key, KEYS[3] node identities, KEYS[4] workers
-- ARGV[1] ttl in ms, ARGV[2] slack in ms (see epoch_prelude.lua), then pairs of
--   node identity, uptime in seconds
-- returns {this node's identity, ms until it may grant (0: now), the boot marker's
--   value, then ms until each ARGV identity may grant}: a worker that saw another
--   marker value before knows Redis lost its data (workers/recovery.py)
local k = {boot = KEYS[1], grace = KEYS[2], nodes = KEYS[3], workers = KEYS[4]}
local ttl, slack = tonumber(ARGV[1]), tonumber(ARGV[2])
local identity, uptime = node_identity()
local now = epoch_now()
local lost = epoch_boot(k, identity, now)
local out = {identity, epoch_note(k, ttl, slack, identity, uptime, lost, now),
             redis.call('GET', k.boot)}
for i = 3, #ARGV - 1, 2 do
  out[#out + 1] = epoch_note(k, ttl, slack, ARGV[i], tonumber(ARGV[i + 1]), lost, now)
end
return out
