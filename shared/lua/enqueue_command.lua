-- Queue a reset, logout or resume command for the tenant's owner.
-- KEYS[1] session, KEYS[2] mailbox, KEYS[3] lease
-- ARGV[1] command JSON, ARGV[2] command kind, ARGV[3] now (unix s)
-- returns {'ok', owner or ''} | {'no_device', state} | {'busy', state}
local state = redis.call('HGET', KEYS[1], 'state') or 'idle'
if ARGV[2] == 'resume' then
  local device = redis.call('HGET', KEYS[1], 'device')
  if not device or device == '' then
    return {'no_device', state}
  end
  if state == 'connected' or state == 'reconnecting' or state == 'pairing' then
    return {'busy', state}
  end
  redis.call('HSET', KEYS[1], 'state', 'reconnecting', 'updated_at', ARGV[3], 'last_error', '')
end
redis.call('RPUSH', KEYS[2], ARGV[1])
return {'ok', redis.call('GET', KEYS[3]) or ''}
