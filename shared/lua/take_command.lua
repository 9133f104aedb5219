-- Hand the owner its next command: the unfinished one first, else the oldest; the
-- command the owner has just run (if named) is acked first, in the same step.
-- KEYS[1] lease, KEYS[2] mailbox, KEYS[3] inflight
-- ARGV[1] owner value, ARGV[2] the JSON of the command just run ('' for none: it is
--   removed from inflight as ack_command.lua does)
-- returns the command JSON, or false when there is none or ARGV[1] is not the owner
--   (then nothing is acked either)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
if ARGV[2] and ARGV[2] ~= '' then
  redis.call('LREM', KEYS[3], 1, ARGV[2])
end
local unfinished = redis.call('LINDEX', KEYS[3], 0)
if unfinished then
  return unfinished
end
return redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT')
