-- redrive: dead jobs go back into their lanes where their seq belongs —
-- ahead of every newer job — with attempts reset. A head that has started
-- (leased, blocked or attempted) stays first. Safe to run in chunks.
-- KEYS[1] prefix. ARGV: tag, max jobs.
-- Returns the number of jobs redriven.
local now = clock()
local tag, max = ARGV[1], tonumber(ARGV[2])
local b = base(tag)
local ids = redis.call('ZRANGE', b .. 'dead', 0, max - 1)
local became_head = {}
for _, id in ipairs(ids) do
  local jk = b .. 'job:' .. id
  redis.call('ZREM', b .. 'dead', id)
  local f = redis.call('HMGET', jk, 'key', 'seq')
  if f[1] and f[2] then
    local lane, seq = f[1], tonumber(f[2])
    redis.call('HSET', jk, 'state', 'queued', 'attempts', 0, 'available_at', now)
    redis.call('HDEL', jk, 'finished_at')
    redis.call('ZADD', b .. 'pending', seq, id)
    if insert_in_order(b, lane, id, seq) then
      became_head[lane] = true
    end
  end
end
for lane, _ in pairs(became_head) do
  ready_lane(tag, b, lane, now, now)
end
reindex(tag, b)
return #ids
