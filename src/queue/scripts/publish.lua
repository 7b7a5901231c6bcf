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
      seen[tag] = 0
      redis.call('SADD', PREFIX .. ':queues', tag)
    end
    seen[tag] = seen[tag] + 1
    local seq = redis.call('INCR', b .. 'seq')
    local available = now + delay
    local jk = b .. 'job:' .. id
    redis.call('HSET', jk,
      'id', id, 'key', key, 'seq', seq, 'payload', payload,
      'state', delay > 0 and 'delayed' or 'queued',
      'attempts', 0, 'max_attempts', max_attempts, 'lease_no', 0,
      'created_at', now, 'available_at', available)
    redis.call('ZADD', b .. 'jobs', seq, id)
    redis.call('ZADD', b .. 'pending', seq, id)
    if delay > 0 then
      redis.call('ZADD', b .. 'delayed', available, id)
    end
    if redis.call('RPUSH', b .. 'lane:' .. key, id) == 1 then
      ready_lane(tag, b, key, available, now)
    end
    out[#out + 1] = seq
    out[#out + 1] = now
    out[#out + 1] = ''
  end
end
for tag, count in pairs(seen) do
  rate_add(base(tag), 'published', now, count)
end
return out
