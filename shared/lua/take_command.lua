-- Hand the owner its next command: the unfinished one first, else the oldest.
-- KEYS[1] lease, KEYS[2] mailbox, KEYS[3] inflight
-- ARGV[1] owner value
-- returns the command JSON, or false when there is none or ARGV[1] is not the owner
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local unfinished = redis.call('LINDEX', KEYS[3], 0)
if unfinished then
  return unfinished
end
return redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT')
