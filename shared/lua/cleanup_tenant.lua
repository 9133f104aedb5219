-- Beat's per-tenant repair: end a pairing nobody owns past its deadline, drop a
-- QR code that outlived its pairing. Never touches a tenant someone owns.
-- An expired pairing appends its 'pairing', 'state' and 'error' events in the
-- same step; deliveries its webhook wants are left pending for the webhook sweep.
-- KEYS[1] session, KEYS[2] pairing, KEYS[3] lease, KEYS[4] qr, KEYS[5] fence counter,
-- KEYS[6] events stream, KEYS[7] pair code, KEYS[8] webhook config,
-- KEYS[9] webhook pending deliveries
-- ARGV[1] now (unix s), ARGV[2] last_error JSON for an expired pairing,
-- ARGV[3] events MAXLEN
-- returns 'expired' | 'qr_trimmed' | '' (nothing to do)
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pairing' then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return ''
  end
  local deadline = tonumber(redis.call('HGET', KEYS[2], 'deadline_at') or '') or 0
  if deadline > tonumber(ARGV[1]) then
    return ''
  end
  -- A new fence: a late write from an owner that lost this tenant is refused.
  redis.call('INCR', KEYS[5])
  local pairing = redis.call('HMGET', KEYS[2], 'id', 'status', 'method')
  redis.call('HSET', KEYS[2], 'status', 'expired', 'ended_at', ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'idle', 'updated_at', ARGV[1], 'last_error', ARGV[2])
  redis.call('DEL', KEYS[4], KEYS[7])
  local ev, hooked = {stream = KEYS[6], webhook = KEYS[8], pending = KEYS[9]}, {}
  emit(ev, ARGV[3], ARGV[1], 'pairing', cjson.encode({
    pairing_id = pairing[1] or '', status = 'expired', previous = pairing[2] or cjson.null,
    method = pairing[3] or 'qr'}), hooked)
  emit(ev, ARGV[3], ARGV[1], 'state', cjson.encode({
    state = 'idle', previous = 'pairing', pairing_id = pairing[1] or '',
    device = redis.call('HGET', KEYS[1], 'device') or cjson.null,
    error = json_or_null(ARGV[2])}), hooked)
  emit(ev, ARGV[3], ARGV[1], 'error', ARGV[2], hooked)
  return 'expired'
end
if redis.call('DEL', KEYS[4]) == 1 then
  return 'qr_trimmed'
end
return ''
