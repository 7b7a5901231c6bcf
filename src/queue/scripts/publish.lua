-- publish: append jobs to the tails of their lanes, all or nothing.
-- KEYS[1] prefix. ARGV: n, idempotency window (s), then n groups of 7:
--   tag, id, key, payload, delay_ms, max_attempts, idempotency key ('' = none)
-- Touches per job: {q}:seq, {q}:job:<id>, {q}:lane:<key>, {q}:jobs,
-- {q}:pending, {q}:delayed, {q}:ready (if the job is its lane's head),
-- {q}:idem:<key>, and the global push index / queue set / wake channel.
-- Returns, per job: seq, created_at, and '' or the id of the job an
-- idempotency key already names (then nothing was written for it).
-- Per run, not per job: one INCRBY per queue (its new jobs get consecutive
-- seqs in run order, as one INCR each would), one RPUSH per lane (its jobs in
-- run order) and one ZADD per queue into {q}:jobs and {q}:pending.
local now = clock()
local n = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

-- Values per call are bounded by Lua's C stack (about 8,000): in chunks.
local function variadic(cmd, key, values)
  local reply
  for i = 1, #values, 2000 do
    reply = redis.call(cmd, key, unpack(values, i, math.min(i + 1999, #values)))
  end
  return reply
end

-- Pass 1: idempotency keys (in order, so a key repeated within the run
-- names the run's first job) and the number of new jobs per queue.
local original = {}
local queues = {}
for i = 0, n - 1 do
  local o = 3 + i * 7
  local tag, id, idem = ARGV[o], ARGV[o + 1], ARGV[o + 6]
  local b = base(tag)
  local orig = false
  if idem ~= '' then
    local ik = b .. 'idem:' .. idem
    orig = redis.call('GET', ik)
    if not orig then
      redis.call('SET', ik, id, 'EX', window)
    end
  end
  original[i] = orig
  if not orig then
    local q = queues[b]
    if not q then
      q = { tag = tag, new = 0, members = {} }
      queues[b] = q
      queues[#queues + 1] = b
      redis.call('SADD', PREFIX .. ':queues', tag)
    end
    q.new = q.new + 1
  end
end
for _, b in ipairs(queues) do
  local q = queues[b]
  q.next_seq = redis.call('INCRBY', b .. 'seq', q.new) - q.new + 1
end

-- Pass 2: the job hashes, then the lanes and the indexes.
local out = {}
local lanes = {}
for i = 0, n - 1 do
  local o = 3 + i * 7
  if original[i] then
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = original[i]
  else
    local tag, id, key, payload = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
    local delay, max_attempts = tonumber(ARGV[o + 4]), ARGV[o + 5]
    local b = base(tag)
    local q = queues[b]
    local seq = q.next_seq
    q.next_seq = seq + 1
    local available = now + delay
    local jk = b .. 'job:' .. id
    -- attempts and lease_no start absent (read as 0); available_at is only
    -- stored when it differs from created_at.
    if delay > 0 then
      redis.call('HSET', jk,
        'id', id, 'key', key, 'seq', seq, 'payload', payload, 'state', 'delayed',
        'max_attempts', max_attempts, 'created_at', now, 'available_at', available)
      redis.call('ZADD', b .. 'delayed', available, id)
    else
      redis.call('HSET', jk,
        'id', id, 'key', key, 'seq', seq, 'payload', payload, 'state', 'queued',
        'max_attempts', max_attempts, 'created_at', now)
    end
    q.members[#q.members + 1] = seq
    q.members[#q.members + 1] = id
    local lk = b .. 'lane:' .. key
    local lane = lanes[lk]
    if not lane then
      -- `available`: when the lane may start if this job becomes its head.
      lane = { tag = tag, b = b, key = key, available = available, ids = {} }
      lanes[lk] = lane
      lanes[#lanes + 1] = lk
    end
    lane.ids[#lane.ids + 1] = id
    out[#out + 1] = seq
    out[#out + 1] = now
    out[#out + 1] = ''
  end
end
for _, lk in ipairs(lanes) do
  local lane = lanes[lk]
  -- The lane was empty iff it now holds just this run's jobs.
  if variadic('RPUSH', lk, lane.ids) == #lane.ids then
    ready_lane(lane.tag, lane.b, lane.key, lane.available, now)
  end
end
for _, b in ipairs(queues) do
  variadic('ZADD', b .. 'jobs', queues[b].members)
  variadic('ZADD', b .. 'pending', queues[b].members)
  rate_add(b, 'published', now, queues[b].new)
end
return out
