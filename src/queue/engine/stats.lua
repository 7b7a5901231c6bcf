-- stats: a consistent snapshot of one queue's counts.
-- ARGV: qid.
-- Returns { pending, active, delayed, blocked, dead, completed, cancelled,
--           retried, oldest_pending_created_at_or_-1, now,
--           published_last_minute, completed_last_minute,
--           paused_lanes, oldest_head_created_at_or_-1 }.
local now = clock()
local counts = redis.call('HMGET', K_META, 'completed', 'cancelled', 'retried', 'pending')
-- The oldest lane head: the lowest head seq among blocked lanes and others;
-- it is also the oldest unfinished job (a lane keeps its jobs in seq order
-- until they finish).
local oldest_head, head_seq = -1, nil
for _, range in ipairs({ { '-inf', '(1e15' }, { '1e15', '+inf' } }) do
  local e = redis.call('ZRANGEBYSCORE', K_LANE_INDEX, range[1], range[2], 'WITHSCORES', 'LIMIT', 0, 1)
  if e[1] then
    local l = lane_get(e[1])
    local r = l and get(l[1])
    if r and (not head_seq or r[R_SEQ] < head_seq) then
      oldest_head, head_seq = r[R_CREATED], r[R_SEQ]
    end
  end
end
return {
  math.max(0, tonumber(counts[4] or '0')),
  redis.call('ZCARD', K_LEASES),
  redis.call('ZCOUNT', K_DELAYED, '(' .. now, '+inf'),
  redis.call('ZCARD', K_BLOCKED),
  redis.call('ZCARD', K_DEAD),
  tonumber(counts[1] or '0'),
  tonumber(counts[2] or '0'),
  tonumber(counts[3] or '0'),
  oldest_head,
  now,
  rate_sum('published', now),
  rate_sum('completed', now),
  redis.call('HLEN', K_LANE_PAUSED),
  oldest_head,
}
