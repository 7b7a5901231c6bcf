-- cancel: a job that is waiting (queued, delayed or retrying, never leased
-- now) leaves its lane for good; if it was the head the next job is readied.
-- KEYS[1] prefix. ARGV: tag, id.
-- Returns { 'ok'|'not_found'|'not_cancellable', job-fields }.
local now = clock()
local tag, id = ARGV[1], ARGV[2]
local b = base(tag)
local jk = b .. 'job:' .. id
local f = redis.call('HMGET', jk, 'state', 'key')
if not f[1] then
  return { 'not_found', {} }
end
if f[1] ~= 'queued' and f[1] ~= 'delayed' and f[1] ~= 'retrying' then
  return { 'not_cancellable', redis.call('HGETALL', jk) }
end
local lk = b .. 'lane:' .. f[2]
local was_head = redis.call('LINDEX', lk, 0) == id
redis.call('LREM', lk, 1, id)
redis.call('HSET', jk, 'state', 'cancelled', 'finished_at', now)
local cancelled = redis.call('HINCRBY', b .. 'counts', 'cancelled', 1)
retire(b, jk, id, now, conf(b).retention_s, false, cancelled)
if was_head then
  advance_lane(tag, b, f[2], now)
  reindex(tag, b)
end
return { 'ok', redis.call('HGETALL', jk) }
