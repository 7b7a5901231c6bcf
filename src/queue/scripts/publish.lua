-- publish: append jobs to the tails of their lanes, all or nothing.
-- KEYS[1] prefix. ARGV: n, idempotency window (s), then n groups of 7:
--   tag, id, key, payload, delay_ms, max_attempts, idempotency key ('' = none)
-- Touches per job: {q}:seq, {q}:job:<id>, {q}:lane:<key>, {q}:jobs,
-- {q}:pending, {q}:delayed, {q}:ready (if the job is its lane's head),
-- {q}:idem:<key>, and the global push index / queue set / wake channel.
-- Returns, per job: seq, created_at, and '' or the id of the job an
-- idempotency key already names (then nothing was written for it).
local now = clock()
local n = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local out = {}
local seen = {}
-- {q}:jobs and {q}:pending members (score, id, ...) per queue, added with one
-- ZADD each after the loop (nothing in the loop reads them).
local listed = {}
for i = 0, n - 1 do
  local o = 3 + i * 7
  local tag, id, key, payload = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
  local delay, max_attempts, idem = tonumber(ARGV[o + 4]), ARGV[o + 5], ARGV[o + 6]
  local b = base(tag)
  local original = false
  if idem ~= '' then
    local ik = b .. 'idem:' .. idem
    original = redis.call('GET', ik)
    if not original then
      redis.call('SET', ik, id, 'EX', window)
    end
  end
  if original then
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = original
  else
    if not seen[tag] then
      seen[tag] = true
      listed[#listed + 1] = b
      listed[b] = {}
      redis.call('SADD', PREFIX .. ':queues', tag)
    end
    local seq = redis.call('INCR', b .. 'seq')
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
    local members = listed[b]
    members[#members + 1] = seq
    members[#members + 1] = id
    if redis.call('RPUSH', b .. 'lane:' .. key, id) == 1 then
      ready_lane(tag, b, key, available, now)
    end
    out[#out + 1] = seq
    out[#out + 1] = now
    out[#out + 1] = ''
  end
end
-- In chunks: unpack is bounded by Lua's C stack (about 8,000 values).
for _, b in ipairs(listed) do
  local members = listed[b]
  for i = 1, #members, 2000 do
    local last = math.min(i + 1999, #members)
    redis.call('ZADD', b .. 'jobs', unpack(members, i, last))
    redis.call('ZADD', b .. 'pending', unpack(members, i, last))
  end
end
return out
