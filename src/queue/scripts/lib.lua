-- Shared by every engine script (prepended to each). KEYS[1] is the global key
-- prefix P. A queue's keys all start with P:{<owner>:<queue>}: (one hash tag).
-- Times are milliseconds from the Redis server clock, so every process agrees.

local PREFIX = KEYS[1]
local PUSH_INDEX = PREFIX .. ':index:push'
local LEASE_INDEX = PREFIX .. ':index:leases'
local WAKE = PREFIX .. ':wake'
local WAKE_PUSH = PREFIX .. ':wake:push'

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function base(tag)
  return PREFIX .. ':{' .. tag .. '}:'
end

-- Queue configuration mirrored from the queue definition, read once per
-- queue and script run (only configure writes it, before reading it).
local confs = {}
local function conf(b)
  if confs[b] then
    return confs[b]
  end
  local c = redis.call('HMGET', b .. 'conf', 'push', 'paused', 'on_exhausted', 'retention_s')
  confs[b] = {
    push = c[1] == '1',
    paused = c[2] == '1',
    on_exhausted = c[3] or 'dead_letter',
    retention_s = tonumber(c[4] or '86400'),
  }
  return confs[b]
end

-- The queue's entry in the push index follows its earliest ready lane.
local function reindex(tag, b)
  local c = conf(b)
  if c.push and not c.paused then
    local first = redis.call('ZRANGE', b .. 'ready', 0, 0, 'WITHSCORES')
    if first[1] then
      redis.call('ZADD', PUSH_INDEX, first[2], tag)
      return tonumber(first[2])
    end
  end
  redis.call('ZREM', PUSH_INDEX, tag)
  return nil
end

local function reindex_leases(tag, b)
  local first = redis.call('ZRANGE', b .. 'leases', 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', LEASE_INDEX, first[2], tag)
  else
    redis.call('ZREM', LEASE_INDEX, tag)
  end
end

-- Lanes that became startable now are announced once per queue and script
-- run: push queues to the workers (WAKE_PUSH), pull queues to the consumers
-- waiting on that queue (WAKE), so neither runs a claim the other needs.
local woken = {}
local function wake(tag, b)
  if not woken[tag] then
    woken[tag] = true
    redis.call('PUBLISH', conf(b).push and WAKE_PUSH or WAKE, tag)
  end
end

-- Lane `lane` may start its head at `at`. Keeps the push index in step and
-- wakes waiting workers/consumers when the lane is startable now.
local function ready_lane(tag, b, lane, at, now)
  redis.call('ZADD', b .. 'ready', at, lane)
  local c = conf(b)
  if c.push and not c.paused then
    local cur = redis.call('ZSCORE', PUSH_INDEX, tag)
    if not cur or at < tonumber(cur) then
      redis.call('ZADD', PUSH_INDEX, at, tag)
    end
  end
  if at <= now and not c.paused then
    wake(tag, b)
  end
end

-- The head of `lane`, which was not in {q}:ready (it was leased), is gone:
-- make the next head (if any) ready.
local function ready_next(tag, b, lane, now)
  local nxt = redis.call('LINDEX', b .. 'lane:' .. lane, 0)
  if nxt then
    local avail = tonumber(redis.call('HGET', b .. 'job:' .. nxt, 'available_at') or now)
    ready_lane(tag, b, lane, math.max(now, avail), now)
  end
end

-- Per-second event counters behind "throughput over the last minute": one
-- key per queue, kind and second, expiring after two minutes.
local RATE_WINDOW_S = 60
local function rate_add(b, kind, now, n)
  local k = b .. 'rate:' .. kind .. ':' .. math.floor(now / 1000)
  if redis.call('INCRBY', k, n) == n then
    redis.call('PEXPIRE', k, 2 * RATE_WINDOW_S * 1000)
  end
end

-- Events of `kind` in the last RATE_WINDOW_S seconds (the current one included).
local function rate_sum(b, kind, now)
  local last = math.floor(now / 1000)
  local keys = {}
  for s = last - RATE_WINDOW_S + 1, last do
    keys[#keys + 1] = b .. 'rate:' .. kind .. ':' .. s
  end
  local total = 0
  for _, v in ipairs(redis.call('MGET', unpack(keys))) do
    total = total + (tonumber(v) or 0)
  end
  return total
end

-- The head of `lane` is gone: make the next head (if any) ready.
local function advance_lane(tag, b, lane, now)
  redis.call('ZREM', b .. 'ready', lane)
  ready_next(tag, b, lane, now)
end

-- A job reached a terminal state: keep it `retention_s`, then forget it.
-- Every 8th job finished (`finished_no`, the queue's completed or cancelled
-- count) also trims up to 128 long-expired ids from the listing index: as
-- much as 16 per job, at one lookup per 8 jobs. A job that was ever leased
-- already left {q}:delayed (lease_job).
local function retire(b, jk, id, now, retention_s, leased, finished_no)
  redis.call('ZREM', b .. 'pending', id)
  if not leased then
    redis.call('ZREM', b .. 'delayed', id)
  end
  redis.call('EXPIRE', jk, retention_s)
  redis.call('ZADD', b .. 'expiry', now + retention_s * 1000, id)
  if finished_no % 8 ~= 0 then
    return
  end
  local gone = redis.call('ZRANGEBYSCORE', b .. 'expiry', '-inf', now, 'LIMIT', 0, 128)
  if #gone > 0 then
    redis.call('ZREM', b .. 'jobs', unpack(gone))
    redis.call('ZREM', b .. 'expiry', unpack(gone))
  end
end

-- Remove a leased job's lease bookkeeping. `keep_index`: the caller leases
-- another job of the queue next; the queue's lease-index entry may then stay
-- early for a while, which only makes recover look (and re-index) sooner.
local function drop_lease(tag, b, jk, id, keep_index)
  redis.call('HDEL', jk, 'lease_token', 'lease_expires_at')
  redis.call('ZREM', b .. 'leases', id)
  if not keep_index then
    reindex_leases(tag, b)
  end
end

-- Is (lease_no, token) the live lease of the job? Returns the job's key field.
local function live_lease(jk, lease_no, token, now)
  local f = redis.call('HMGET', jk, 'state', 'lease_no', 'lease_token', 'lease_expires_at', 'key')
  if f[1] ~= 'active' or f[2] ~= lease_no or f[3] ~= token then
    return nil
  end
  if tonumber(f[4]) <= now then
    return nil
  end
  return f[5]
end

-- Is a lane of some push queue waiting to start now? A worker that finished
-- a lane's job then leaves that lane's next head to the oldest-ready order
-- of claim_push instead of keeping it, so busy lanes cannot starve others.
-- Also returns ms until the earliest push lane is due (-1: none).
local function push_due(now)
  local first = redis.call('ZRANGE', PUSH_INDEX, 0, 0, 'WITHSCORES')
  if not first[1] then
    return false, -1
  end
  local at = tonumber(first[2])
  return at <= now, math.max(0, at - now)
end

-- What lease_job needs of a lane head, read in one HMGET.
local function head_fields(jk)
  return redis.call('HMGET', jk, 'seq', 'lease_no', 'attempts', 'state', 'available_at')
end

-- Lease job `id`, its lane's head, whose head_fields are `f`: attempts+1,
-- lease number+1, a new token. Returns the job's fields. `indexed`: the
-- queue's lease-index entry is known to be no later than this lease's expiry.
local function lease_job(tag, b, id, jk, f, now, lease_ms, token, indexed)
  local lease_no = tonumber(f[2] or '0') + 1
  local attempts = tonumber(f[3] or '0') + 1
  local expires = now + lease_ms
  if attempts == 1 then
    redis.call('HSET', jk, 'state', 'active', 'lease_no', lease_no, 'attempts', attempts,
      'lease_token', token, 'lease_expires_at', expires, 'started_at', now)
  else
    redis.call('HSET', jk, 'state', 'active', 'lease_no', lease_no, 'attempts', attempts,
      'lease_token', token, 'lease_expires_at', expires)
  end
  redis.call('ZADD', b .. 'leases', expires, id)
  if not indexed then
    redis.call('ZADD', LEASE_INDEX, 'LT', expires, tag)
  end
  -- Only publish puts a job into {q}:delayed, with state 'delayed' until now.
  if f[4] == 'delayed' then
    redis.call('ZREM', b .. 'delayed', id)
  end
  return redis.call('HGETALL', jk)
end

-- Lease the head of `lane` (see lease_job).
-- An id whose job hash is gone (a queue deleted mid-flight) is dropped.
local function lease_head(tag, b, lane, now, lease_ms, token)
  redis.call('ZREM', b .. 'ready', lane)
  local id = redis.call('LINDEX', b .. 'lane:' .. lane, 0)
  if not id then
    return nil
  end
  local jk = b .. 'job:' .. id
  local f = head_fields(jk)
  if not f[1] then
    redis.call('LPOP', b .. 'lane:' .. lane)
    advance_lane(tag, b, lane, now)
    return nil
  end
  return lease_job(tag, b, id, jk, f, now, lease_ms, token)
end

-- The job ran out of attempts (or failed permanently): apply the queue policy.
local function exhaust(tag, b, jk, id, lane, now)
  local c = conf(b)
  local seq = tonumber(redis.call('HGET', jk, 'seq'))
  if c.on_exhausted == 'block' then
    redis.call('HSET', jk, 'state', 'blocked')
    redis.call('ZADD', b .. 'blocked', seq, id)
    redis.call('ZREM', b .. 'ready', lane)
    return 'blocked'
  end
  redis.call('HSET', jk, 'state', 'dead', 'finished_at', now)
  redis.call('ZADD', b .. 'dead', seq, id)
  redis.call('ZREM', b .. 'pending', id)
  redis.call('ZREM', b .. 'delayed', id)
  redis.call('LPOP', b .. 'lane:' .. lane)
  advance_lane(tag, b, lane, now)
  return 'dead'
end

-- Put `id` (with `seq`) into its lane where its seq belongs: before the first
-- job with a higher seq, but never before a head that has started (leased,
-- blocked, or attempted before). Lanes stay sorted by seq behind such a head.
-- Returns true if the job became the lane's head.
local function insert_in_order(b, lane, id, seq)
  local lk = b .. 'lane:' .. lane
  local i = 0
  while true do
    local other = redis.call('LINDEX', lk, i)
    if not other then
      redis.call('RPUSH', lk, id)
      return i == 0
    end
    local f = redis.call('HMGET', b .. 'job:' .. other, 'state', 'seq', 'attempts')
    local started = i == 0 and (f[1] == 'active' or f[1] == 'blocked' or tonumber(f[3] or '0') > 0)
    if not started and tonumber(f[2] or '0') > seq then
      redis.call('LINSERT', lk, 'BEFORE', other, id)
      return i == 0
    end
    i = i + 1
  end
end
