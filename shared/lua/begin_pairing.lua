-- Move a tenant to 'pairing' and queue the pair command, or say why not; an
-- accepted pairing appends its 'pairing' and 'state' events in the same step.
-- KEYS[1] session, KEYS[2] pairing, KEYS[3] mailbox, KEYS[4] lease, KEYS[5] qr,
-- KEYS[6] events stream, KEYS[7] pair code, KEYS[8] webhook config,
-- KEYS[9] webhook pending deliveries
-- ARGV[1] pairing id, ARGV[2] method, ARGV[3] now (unix s), ARGV[4] timeout s,
-- ARGV[5] command JSON, ARGV[6] events MAXLEN, ARGV[7] masked phone ('' for qr)
-- returns {'ok', owner or '', webhook event id...}
--         | {'busy', seconds until the running pairing ends} | {'connected', ''}
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
local previous = redis.call('HGET', KEYS[2], 'status')
redis.call('DEL', KEYS[2], KEYS[5], KEYS[7])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'method', ARGV[2], 'status', 'queued',
  'started_at', ARGV[3], 'deadline_at', tostring(deadline), 'ended_at', '',
  'phone_hint', ARGV[7])
redis.call('HSET', KEYS[1], 'state', 'pairing', 'pairing_id', ARGV[1],
  'updated_at', ARGV[3], 'last_error', '')
redis.call('RPUSH', KEYS[3], ARGV[5])
local hooked = {}
local ev = {stream = KEYS[6], webhook = KEYS[8], pending = KEYS[9]}
emit(ev, ARGV[6], ARGV[3], 'pairing', cjson.encode({
  pairing_id = ARGV[1], status = 'queued', previous = previous or cjson.null,
  method = ARGV[2], deadline_at = deadline}), hooked)
emit(ev, ARGV[6], ARGV[3], 'state', cjson.encode({
  state = 'pairing', previous = state or 'idle', pairing_id = ARGV[1],
  device = cjson.null, error = cjson.null}), hooked)
local out = {'ok', redis.call('GET', KEYS[4]) or ''}
for _, id in ipairs(hooked) do out[#out + 1] = id end
return out
