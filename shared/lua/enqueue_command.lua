-- Queue a reset, logout or resume command for the tenant's owner; a resume
-- moves the state to 'reconnecting' and appends that 'state' event in the same step.
-- KEYS[1] session, KEYS[2] mailbox, KEYS[3] lease, KEYS[4] events stream,
-- KEYS[5] webhook config, KEYS[6] webhook pending deliveries
-- ARGV[1] command JSON, ARGV[2] command kind, ARGV[3] now (unix s),
-- ARGV[4] events MAXLEN
-- returns {'ok', owner or '', webhook event id...} | {'no_device', state} | {'busy', state}
local state = redis.call('HGET', KEYS[1], 'state') or 'idle'
local hooked = {}
if ARGV[2] == 'resume' then
  local device = redis.call('HGET', KEYS[1], 'device')
  if not device or device == '' then
    return {'no_device', state}
  end
  if state == 'connected' or state == 'reconnecting' or state == 'pairing' then
    return {'busy', state}
  end
  redis.call('HSET', KEYS[1], 'state', 'reconnecting', 'updated_at', ARGV[3], 'last_error', '')
  local ev = {stream = KEYS[4], webhook = KEYS[5], pending = KEYS[6]}
  emit(ev, ARGV[4], ARGV[3], 'state', cjson.encode({
    state = 'reconnecting', previous = state,
    pairing_id = redis.call('HGET', KEYS[1], 'pairing_id') or '',
    device = device, error = cjson.null}), hooked)
end
redis.call('RPUSH', KEYS[2], ARGV[1])
local out = {'ok', redis.call('GET', KEYS[3]) or ''}
for _, id in ipairs(hooked) do out[#out + 1] = id end
return out
