-- Hand the owner a reset or logout queued behind a send that cannot run now (a ban,
-- or no connection yet): the oldest such command with only sends before it leaves
-- the mailbox and goes to the front of inflight, ahead of the waiting send, which
-- stays in flight behind it.
-- KEYS[1] lease, KEYS[2] mailbox, KEYS[3] inflight
-- ARGV[1] owner value
-- returns the command JSON, or false when there is none or ARGV[1] is not the owner
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local ok, command = pcall(cjson.decode, raw)
  local kind = ok and type(command) == 'table' and command.kind
  if kind == 'reset' or kind == 'logout' then
    redis.call('LREM', KEYS[2], 1, raw)
    redis.call('LPUSH', KEYS[3], raw)
    return raw
  end
  if kind ~= 'send' then
    return false  -- only sends are passed over: a pair or resume keeps its place
  end
end
return false
