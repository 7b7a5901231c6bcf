-- resolve: the owner resolves a stopped job.
--   retry: a blocked head becomes startable again (attempts reset); a dead
--          job goes back into its lane where its seq belongs (a redrive of one).
--   skip:  a blocked head is dead-lettered and its lane continues.
-- KEYS[1] prefix. ARGV: tag, id, action ('retry' | 'skip').
-- Returns { 'ok' | 'not_found' | 'conflict', job-fields }.
local now = clock()
local tag, id, action = ARGV[1], ARGV[2], ARGV[3]
local b = base(tag)
local jk = b .. 'job:' .. id
local f = redis.call('HMGET', jk, 'state', 'key', 'seq')
if not f[1] then
  return { 'not_found', {} }
end
local state, lane, seq = f[1], f[2], tonumber(f[3])
local lk = b .. 'lane:' .. lane
if action == 'retry' and state == 'blocked' then
  redis.call('ZREM', b .. 'blocked', id)
  redis.call('HSET', jk, 'state', 'queued', 'attempts', 0)
  ready_lane(tag, b, lane, now, now)
  return { 'ok', redis.call('HGETALL', jk) }
end
if action == 'retry' and state == 'dead' then
  redis.call('ZREM', b .. 'dead', id)
  redis.call('HSET', jk, 'state', 'queued', 'attempts', 0, 'available_at', now)
  redis.call('HDEL', jk, 'finished_at')
  redis.call('ZADD', b .. 'pending', seq, id)
  if insert_in_order(b, lane, id, seq) then
    ready_lane(tag, b, lane, now, now)
  end
  return { 'ok', redis.call('HGETALL', jk) }
end
if action == 'skip' and state == 'blocked' then
  redis.call('ZREM', b .. 'blocked', id)
  redis.call('HSET', jk, 'state', 'dead', 'finished_at', now)
  redis.call('ZADD', b .. 'dead', seq, id)
  redis.call('ZREM', b .. 'pending', id)
  redis.call('LPOP', lk)
  advance_lane(tag, b, lane, now)
  reindex(tag, b)
  return { 'ok', redis.call('HGETALL', jk) }
end
return { 'conflict', redis.call('HGETALL', jk) }
