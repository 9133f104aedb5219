-- Beat's per-tenant repair: end a pairing nobody owns past its deadline, drop a
-- QR code that outlived its pairing. Never touches a tenant someone owns.
-- KEYS[1] session, KEYS[2] pairing, KEYS[3] lease, KEYS[4] qr, KEYS[5] fence counter
-- ARGV[1] now (unix s), ARGV[2] last_error JSON for an expired pairing
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
  redis.call('HSET', KEYS[2], 'status', 'expired', 'ended_at', ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'idle', 'updated_at', ARGV[1], 'last_error', ARGV[2])
  redis.call('DEL', KEYS[4])
  return 'expired'
end
if redis.call('DEL', KEYS[4]) == 1 then
  return 'qr_trimmed'
end
return ''
