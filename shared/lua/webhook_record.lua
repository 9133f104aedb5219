-- Record a webhook delivery attempt, only while the webhook is still configured.
-- KEYS[1] webhook config hash
-- ARGV[1] JSON {field: value} of delivery state to set, ARGV[2] counter to
--   increment by 1 ('delivered', 'failed' or '' for none)
-- returns 1 recorded, 0 no webhook (deleted meanwhile: nothing is revived)
if redis.call('HEXISTS', KEYS[1], 'url') == 0 then
  return 0
end
for k, v in pairs(cjson.decode(ARGV[1])) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[2] ~= '' then
  redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
end
return 1
