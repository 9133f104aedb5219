-- Prepended by shared/scripts.py to every script that writes tenant events, so
-- an event is appended in the same atomic step as the change it describes.
-- emit(stream, webhook, maxlen, now, kind, data, hooked): XADD one entry
--   {kind, data (JSON), at} trimmed with MAXLEN ~ maxlen; when the tenant's
--   webhook hash lists `kind` in its 'kinds' field, the new id is appended to
--   the table `hooked` (the caller returns those ids so a delivery is sent).
local function emit(stream, webhook, maxlen, now, kind, data, hooked)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'kind', kind, 'data', data, 'at', now)
  local kinds = redis.call('HGET', webhook, 'kinds')
  if kinds and string.find(',' .. kinds .. ',', ',' .. kind .. ',', 1, true) then
    hooked[#hooked + 1] = id
  end
  return id
end
local function json_or_null(raw)
  if raw and raw ~= '' then return cjson.decode(raw) end
  return cjson.null
end
