-- The owner moves one outbound message on (sending, sent, delivered, read, failed,
-- unknown, or back to queued for an at-least-once resend), only if its fence is still
-- the newest grant and the message is in one of the statuses the move starts from;
-- emits 'message_status' in the same step.
-- KEYS[1] fence counter, KEYS[2] message hash, KEYS[3] outbox zset, KEYS[4] WhatsApp
--   id index hash, KEYS[5] events stream, KEYS[6] webhook config, KEYS[7] webhook pending
-- ARGV[1] the writer's fence, ARGV[2] message id, ARGV[3] JSON {status, from: [status
--   ...], fields: {field: value}, kinds: [kind ...] (optional: the move applies only to
--   a message of one of these kinds, a missing kind being 'text'), record: true
--   (optional: the reply carries the record as it was before the move)}, ARGV[4] events
--   MAXLEN, ARGV[5] now (unix s)
-- Finished statuses (sent, delivered, read, failed, unknown) leave the outbox; a
-- wa_message_id among the fields is indexed for the receipts.
-- returns {1, webhook event id...} applied | {0} refused (an older fence)
--   | {2, status now} the message is not in a status the move starts from, or not of
--   one of the kinds | {3} no message; with record: true, {1, record, webhook event
--   id...} and {2, status now, record}, the record as HGETALL's flat list
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return {0}
end
local move = cjson.decode(ARGV[3])
local record = move.record and redis.call('HGETALL', KEYS[2]) or nil
local current = redis.call('HGET', KEYS[2], 'status')
if not current then return {3} end
local allowed = false
for _, s in ipairs(move.from) do
  if s == current then allowed = true end
end
if allowed and move.kinds then
  local kind = redis.call('HGET', KEYS[2], 'kind') or 'text'
  allowed = false
  for _, k in ipairs(move.kinds) do
    if k == kind then allowed = true end
  end
end
if not allowed then return {2, current, record} end
redis.call('HSET', KEYS[2], 'status', move.status)
for k, v in pairs(move.fields or {}) do redis.call('HSET', KEYS[2], k, v) end
if move.status == 'queued' or move.status == 'sending' then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[2])
else
  redis.call('ZREM', KEYS[3], ARGV[2])
end
if move.fields and move.fields.wa_message_id and move.fields.wa_message_id ~= '' then
  redis.call('HSET', KEYS[4], move.fields.wa_message_id, ARGV[2])
end
local data = {id = ARGV[2], status = move.status}
if move.fields and move.fields.error and move.fields.error ~= '' then
  data.error = cjson.decode(move.fields.error)
end
local hooked = {}
emit({stream = KEYS[5], webhook = KEYS[6], pending = KEYS[7]}, ARGV[4], ARGV[5],
  'message_status', cjson.encode(data), hooked)
local out = {1}
if record then out[2] = record end
for _, e in ipairs(hooked) do out[#out + 1] = e end
return out
