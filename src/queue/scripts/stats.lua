-- stats: a consistent snapshot of one queue's counts.
-- KEYS[1] prefix. ARGV: tag.
-- Returns { pending, active, delayed, blocked, dead, completed, cancelled,
--           retried, oldest_pending_created_at_or_-1, now,
--           published_last_minute, completed_last_minute }.
local now = clock()
local b = base(ARGV[1])
local counts = redis.call('HMGET', b .. 'counts', 'completed', 'cancelled', 'retried')
local oldest = -1
local first = redis.call('ZRANGE', b .. 'pending', 0, 0)
if first[1] then
  oldest = tonumber(redis.call('HGET', b .. 'job:' .. first[1], 'created_at') or '-1')
end
return {
  redis.call('ZCARD', b .. 'pending'),
  redis.call('ZCARD', b .. 'leases'),
  redis.call('ZCOUNT', b .. 'delayed', '(' .. now, '+inf'),
  redis.call('ZCARD', b .. 'blocked'),
  redis.call('ZCARD', b .. 'dead'),
  tonumber(counts[1] or '0'),
  tonumber(counts[2] or '0'),
  tonumber(counts[3] or '0'),
  oldest,
  now,
  rate_sum(b, 'published', now),
  rate_sum(b, 'completed', now),
}
