-- One request against every limit of a rate-limited endpoint, in one step
-- (api/ratelimit.py). Each limit is a moving window: a sorted set of the hits
-- of the last window, scored by their time in ms.
--
-- KEYS: one sorted set per limit, in the order they are checked.
-- ARGV[1]: now (ms, the API's clock); ARGV[2]: this request's id (unique members);
-- then for each key: the limit's amount and its window (ms).
--
-- A request over any limit is refused and counts against none of them (all or
-- nothing). Returns {allowed (1 or 0), the reported limit's index (1-based),
-- its remaining hits, ms until its oldest hit leaves the window}. The reported
-- limit is the one refused, or when allowed the one with the fewest hits left
-- (the first of those on a tie).
local now = tonumber(ARGV[1])
local counts, resets = {}, {}
for i, key in ipairs(KEYS) do
  local amount, window = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local reset = window
  if oldest[2] then reset = tonumber(oldest[2]) + window - now end
  if count >= amount then
    return {0, i, 0, reset}
  end
  counts[i], resets[i] = count, reset
end
-- (An empty window's reset is already a whole window: this hit is then its oldest.)
local best, best_left = 0, -1
for i, key in ipairs(KEYS) do
  local amount, window = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZADD', key, now, ARGV[2] .. ':' .. i)
  redis.call('PEXPIRE', key, window)
  local left = amount - counts[i] - 1
  if best_left < 0 or left < best_left then
    best, best_left = i, left
  end
end
return {1, best, best_left, resets[best]}
