-- Apply a session's state change only if its fence is still the newest grant.
-- KEYS[1] fence counter, KEYS[2] session, KEYS[3] pairing, KEYS[4] qr
-- ARGV[1] the writer's fence, ARGV[2] JSON {session: {field: value},
--   pairing: {field: value}, pairing_id: id the pairing update is for,
--   qr: {value, ttl_ms} | 'del'}; values are strings, '' clears a field
-- returns 1 applied, 0 refused (an older fence: the writer lost its lease),
--         2 applied except the pairing part (it was for another pairing)
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
local ops = cjson.decode(ARGV[2])
local result = 1
if ops.session then
  for k, v in pairs(ops.session) do redis.call('HSET', KEYS[2], k, v) end
end
if ops.pairing then
  if ops.pairing_id and redis.call('HGET', KEYS[3], 'id') ~= ops.pairing_id then
    result = 2
  else
    for k, v in pairs(ops.pairing) do redis.call('HSET', KEYS[3], k, v) end
  end
end
if ops.qr == 'del' then
  redis.call('DEL', KEYS[4])
elseif ops.qr then
  redis.call('SET', KEYS[4], ops.qr.value, 'PX', ops.qr.ttl_ms)
end
return result
