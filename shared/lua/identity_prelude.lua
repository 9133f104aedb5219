-- Prepended by shared/scripts.py to lease_acquire.lua and to the epoch scripts.
-- node_identity() -> 'run_id:master_replid2' of the Redis running the script, and
--   its uptime in seconds. A restart gives a new run_id; a promotion (Sentinel,
--   Cluster failover, a manual one back to a primary that never restarted) sets
--   master_replid2 to the replication id it followed. (Not master_replid: a
--   primary draws a new one when it creates its backlog for a first replica,
--   which loses nothing.) Either may have lost the last writes, a lease grant
--   among them, so grants on a node wait until its identity is settled
--   (epoch_prelude.lua). The uptime returned is how long the node has held the
--   data it has now: for a promoted node (master_replid2 not all zeros) that is
--   since the promotion, which INFO does not tell, so it counts as 0 and the
--   freeze runs a full TTL from now. Reads no key: legal in any script on a Cluster.
local function node_identity()
  local server = redis.call('INFO', 'server')
  local replication = redis.call('INFO', 'replication')
  local run_id = string.match(server, 'run_id:(%x+)') or ''
  local replid = string.match(replication, 'master_replid2:(%x+)') or ''
  local uptime = tonumber(string.match(server, 'uptime_in_seconds:(%d+)')) or 0
  if not string.match(replid, '^0*$') then
    uptime = 0  -- promoted: its uptime says nothing of when its data became the data
  end
  return run_id .. ':' .. replid, uptime
end
