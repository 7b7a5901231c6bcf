-- redrive: dead jobs go back to the fronts of their lanes, in their original
-- seq order, with attempts reset. A lane whose head is in progress (leased)
-- or blocked keeps that head first; the redriven jobs follow it.
-- KEYS[1] prefix. ARGV: tag, max jobs.
-- Returns the number of jobs redriven.
local now = clock()
local tag, max = ARGV[1], tonumber(ARGV[2])
local b = base(tag)
local ids = redis.call('ZRANGE', b .. 'dead', 0, max - 1)
local lanes = {}
local order = {}
for _, id in ipairs(ids) do
  local jk = b .. 'job:' .. id
  local lane = redis.call('HGET', jk, 'key')
  redis.call('ZREM', b .. 'dead', id)
  if lane then
    if not lanes[lane] then
      lanes[lane] = {}
      order[#order + 1] = lane
    end
    table.insert(lanes[lane], id)
    local seq = tonumber(redis.call('HGET', jk, 'seq'))
    redis.call('HSET', jk, 'state', 'queued', 'attempts', 0, 'available_at', now)
    redis.call('HDEL', jk, 'finished_at')
    redis.call('ZADD', b .. 'pending', seq, id)
  end
end
for _, lane in ipairs(order) do
  local lk = b .. 'lane:' .. lane
  local jobs = lanes[lane]
  local head = redis.call('LINDEX', lk, 0)
  local keep = nil
  if head then
    local state = redis.call('HGET', b .. 'job:' .. head, 'state')
    if state == 'active' or state == 'blocked' then
      keep = redis.call('LPOP', lk)
    end
  end
  for i = #jobs, 1, -1 do
    redis.call('LPUSH', lk, jobs[i])
  end
  if keep then
    redis.call('LPUSH', lk, keep)
  else
    ready_lane(tag, b, lane, now, now)
  end
end
reindex(tag, b)
return #ids
