-- stats: a consistent snapshot of one queue's counts.
-- ARGV: qid.
-- Returns { pending, active, delayed, blocked, dead, completed, cancelled,
--           retried, oldest_pending_created_at_or_-1, now,
--           published_last_minute, completed_last_minute }.
local now = clock()
local counts = redis.call('HMGET', K_META, 'completed', 'cancelled', 'retried')
local oldest = -1
local first = redis.call('ZRANGE', K_PENDING, 0, 0)
if first[1] then
  local r = get(first[1])
  oldest = r and r[R_CREATED] or -1
end
return {
  redis.call('ZCARD', K_PENDING),
  redis.call('ZCARD', K_LEASES),
  redis.call('ZCOUNT', K_DELAYED, '(' .. now, '+inf'),
  redis.call('ZCARD', K_BLOCKED),
  redis.call('ZCARD', K_DEAD),
  tonumber(counts[1] or '0'),
  tonumber(counts[2] or '0'),
  tonumber(counts[3] or '0'),
  oldest,
  now,
  rate_sum('published', now),
  rate_sum('completed', now),
}
