-- Move a tenant to 'pairing' and queue the pair command, or say why not.
-- KEYS[1] session, KEYS[2] pairing, KEYS[3] mailbox, KEYS[4] lease, KEYS[5] qr
-- ARGV[1] pairing id, ARGV[2] method, ARGV[3] now (unix s), ARGV[4] timeout s,
-- ARGV[5] command JSON
-- returns {'ok', owner or ''} | {'busy', seconds until the running pairing ends}
--         | {'connected', ''}
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pairing' then
  local deadline = tonumber(redis.call('HGET', KEYS[2], 'deadline_at') or '0') or 0
  local retry = math.max(1, math.ceil(deadline - tonumber(ARGV[3])))
  return {'busy', tostring(retry)}
end
if state == 'connected' or state == 'reconnecting' then
  return {'connected', ''}
end
local deadline = tonumber(ARGV[3]) + tonumber(ARGV[4])
redis.call('DEL', KEYS[2], KEYS[5])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'method', ARGV[2], 'status', 'queued',
  'started_at', ARGV[3], 'deadline_at', tostring(deadline), 'ended_at', '')
redis.call('HSET', KEYS[1], 'state', 'pairing', 'pairing_id', ARGV[1],
  'updated_at', ARGV[3], 'last_error', '')
redis.call('RPUSH', KEYS[3], ARGV[5])
return {'ok', redis.call('GET', KEYS[4]) or ''}
