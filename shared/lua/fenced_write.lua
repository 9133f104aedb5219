-- Apply a session's state change only if its fence is still the newest grant,
-- and append the events it causes in the same step (none when refused).
-- KEYS[1] fence counter, KEYS[2] session, KEYS[3] pairing, KEYS[4] qr,
-- KEYS[5] events stream, KEYS[6] pair code, KEYS[7] webhook config,
-- KEYS[8] webhook pending deliveries
-- ARGV[1] the writer's fence, ARGV[2] JSON {session: {field: value},
--   pairing: {field: value}, pairing_id: id the pairing update is for,
--   qr: {value, ttl_ms} | 'del' ('del' also deletes the pair code),
--   pair_code: {value, ttl_ms}}; values are strings, '' clears a field
-- ARGV[3] events MAXLEN (approximate), ARGV[4] now (unix s)
-- Events: 'pairing' when the pairing status changes, 'state' when the session
--   state changes, 'qr' for a new QR code, 'pair_code' for a new phone code,
--   'error' when last_error is set to a new value.
-- returns {result, webhook event id...}: result 1 applied, 0 refused (an older
--   fence: the writer lost its lease), 2 applied except the pairing part (it was
--   for another pairing); then the ids of the events the tenant's webhook wants
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return {0}
end
local ops = cjson.decode(ARGV[2])
local maxlen, now, hooked = ARGV[3], ARGV[4], {}
local ev = {stream = KEYS[5], webhook = KEYS[7], pending = KEYS[8]}
local result = 1
local old = redis.call('HMGET', KEYS[2], 'state', 'last_error', 'pairing_id', 'device')
local old_state, old_error = old[1] or 'idle', old[2] or ''
if ops.session then
  for k, v in pairs(ops.session) do redis.call('HSET', KEYS[2], k, v) end
end
if ops.pairing then
  local current = redis.call('HMGET', KEYS[3], 'id', 'status', 'method')
  if ops.pairing_id and current[1] ~= ops.pairing_id then
    result = 2
  else
    for k, v in pairs(ops.pairing) do redis.call('HSET', KEYS[3], k, v) end
    if ops.pairing.status and ops.pairing.status ~= current[2] then
      emit(ev, maxlen, now, 'pairing', cjson.encode({
        pairing_id = current[1] or '', status = ops.pairing.status,
        previous = current[2] or cjson.null, method = current[3] or 'qr'}), hooked)
    end
  end
end
if ops.session and ops.session.state and ops.session.state ~= old_state then
  local now_fields = redis.call('HMGET', KEYS[2], 'pairing_id', 'device', 'last_error')
  emit(ev, maxlen, now, 'state', cjson.encode({
    state = ops.session.state, previous = old_state,
    pairing_id = now_fields[1] or '',
    device = (now_fields[2] and now_fields[2] ~= '') and now_fields[2] or cjson.null,
    error = json_or_null(now_fields[3])}), hooked)
end
if ops.qr == 'del' then
  redis.call('DEL', KEYS[4], KEYS[6])
elseif ops.qr then
  redis.call('SET', KEYS[4], ops.qr.value, 'PX', ops.qr.ttl_ms)
  emit(ev, maxlen, now, 'qr', ops.qr.value, hooked)
end
if ops.pair_code then
  redis.call('SET', KEYS[6], ops.pair_code.value, 'PX', ops.pair_code.ttl_ms)
  emit(ev, maxlen, now, 'pair_code', ops.pair_code.value, hooked)
end
if ops.session and ops.session.last_error and ops.session.last_error ~= ''
    and ops.session.last_error ~= old_error then
  emit(ev, maxlen, now, 'error', ops.session.last_error, hooked)
end
local out = {result}
for _, id in ipairs(hooked) do out[#out + 1] = id end
return out
