-- The owner records an inbound message once and emits its 'message' event in the same
-- step; a message already recorded (the server delivered it again) changes nothing.
-- KEYS[1] fence counter, KEYS[2] message hash, KEYS[3] inbound index zset, KEYS[4] media
--   bytes, KEYS[5] events stream, KEYS[6] webhook config, KEYS[7] webhook pending
-- ARGV[1] the writer's fence, ARGV[2] message id, ARGV[3] JSON {field: value} of the
--   record, ARGV[4] the event's data JSON, ARGV[5] media bytes ('' none),
--   ARGV[6] record TTL ms, ARGV[7] index max length, ARGV[8] events MAXLEN, ARGV[9] now
-- returns {1, webhook event id...} recorded | {0} refused (an older fence)
--   | {2} already recorded
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return {0}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end
local ttl = tonumber(ARGV[6])
for k, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', KEYS[2], k, v) end
redis.call('PEXPIRE', KEYS[2], ttl)
if ARGV[5] ~= '' then redis.call('SET', KEYS[4], ARGV[5], 'PX', ttl) end
redis.call('ZADD', KEYS[3], ARGV[9], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[7]) + 1))
local hooked = {}
emit({stream = KEYS[5], webhook = KEYS[6], pending = KEYS[7]}, ARGV[8], ARGV[9],
  'message', ARGV[4], hooked)
local out = {1}
for _, e in ipairs(hooked) do out[#out + 1] = e end
return out
