-- Accept an outbound message: record it, queue its send command, emit 'message_status'
-- (queued), all in one step; or refuse it and change nothing.
-- KEYS[1] session, KEYS[2] message hash, KEYS[3] idempotency key (its name even when
--   no key was given: then ARGV[3] is ''), KEYS[4] outbox zset, KEYS[5] outbound index
--   zset, KEYS[6] mailbox, KEYS[7] lease, KEYS[8] media bytes, KEYS[9] events stream,
--   KEYS[10] webhook config, KEYS[11] webhook pending deliveries
-- ARGV[1] message id, ARGV[2] JSON {field: value} of the record (strings),
-- ARGV[3] body hash ('' when no Idempotency-Key came), ARGV[4] record TTL ms,
-- ARGV[5] outbox cap, ARGV[6] send command JSON, ARGV[7] now (unix s),
-- ARGV[8] media bytes ('' none), ARGV[9] index max length, ARGV[10] events MAXLEN
-- returns {'ok', owner or '', webhook event id...} | {'same', message id}
--   | {'other_body', message id} | {'not_connected', state} | {'full', outbox size}
if ARGV[3] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local sep = string.find(seen, '|', 1, true)
    local id, hash = string.sub(seen, 1, sep - 1), string.sub(seen, sep + 1)
    if hash == ARGV[3] then return {'same', id} end
    return {'other_body', id}
  end
end
local state = redis.call('HGET', KEYS[1], 'state') or 'idle'
if state ~= 'connected' and state ~= 'reconnecting' then
  return {'not_connected', state}
end
local queued = redis.call('ZCARD', KEYS[4])
if queued >= tonumber(ARGV[5]) then
  return {'full', tostring(queued)}
end
local id, ttl, now = ARGV[1], tonumber(ARGV[4]), ARGV[7]
for k, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[2], k, v) end
redis.call('PEXPIRE', KEYS[2], ttl)
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[8], ARGV[8], 'PX', ttl)
end
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZADD', KEYS[5], now, id)
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(tonumber(ARGV[9]) + 1))
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[3], id .. '|' .. ARGV[3], 'PX', ttl)
end
redis.call('RPUSH', KEYS[6], ARGV[6])
local hooked = {}
emit({stream = KEYS[9], webhook = KEYS[10], pending = KEYS[11]}, ARGV[10], now,
  'message_status', cjson.encode({id = id, status = 'queued'}), hooked)
local out = {'ok', redis.call('GET', KEYS[7]) or ''}
for _, e in ipairs(hooked) do out[#out + 1] = e end
return out
