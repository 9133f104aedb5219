-- Prepended by shared/scripts.py to every script that writes tenant events, so
-- an event is appended in the same atomic step as the change it describes.
-- emit(keys, maxlen, now, kind, data, hooked): XADD one entry {kind, data
--   (JSON), at} to keys.stream, trimmed with MAXLEN ~ maxlen; when the webhook
--   hash keys.webhook lists `kind` in its 'kinds' field, the new id is added to
--   the pending zset keys.pending (score: now; the sweep re-sends what stays
--   there) and appended to the table `hooked` (returned, so a delivery is sent).
local function emit(keys, maxlen, now, kind, data, hooked)
  local id = redis.call('XADD', keys.stream, 'MAXLEN', '~', maxlen, '*',
    'kind', kind, 'data', data, 'at', now)
  local kinds = redis.call('HGET', keys.webhook, 'kinds')
  if kinds and string.find(',' .. kinds .. ',', ',' .. kind .. ',', 1, true) then
    redis.call('ZADD', keys.pending, now, id)
    hooked[#hooked + 1] = id
  end
  return id
end
local function json_or_null(raw)
  if raw and raw ~= '' then return cjson.decode(raw) end
  return cjson.null
end
