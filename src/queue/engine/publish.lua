-- publish: append jobs to the tails of their lanes, all or nothing.
-- ARGV: qid, idempotency window (s), n, then n groups of 6:
--   id, lane key, payload, delay_ms, max_attempts, KEYS index of the job's
--   idempotency key (0 = none; those keys follow the queue's fixed keys);
--   then n priorities (0-9), one per job in the same order, or none when
--   every job has priority 0.
-- Returns { created_at, first seq, then (index, id) for each job (0-based)
-- whose idempotency key already names a job (nothing was written for it) }:
-- the other jobs got consecutive seqs from the first, in order.
-- Per run, not per job: one HINCRBY for the seqs (consecutive, in run order),
-- one write per lane, one ZADD per index.
local now = clock()
local window, n = tonumber(ARGV[2]), tonumber(ARGV[3])

-- A queue without settings in Redis was deleted (or never mirrored): nothing
-- is written, so no job outlives a delete unseen; the caller mirrors the
-- settings (creating the queue again) and publishes again.
if not conf().configured then
  return { 'unconfigured' }
end

-- Pass 1: idempotency keys, in order (a key repeated within the run names
-- the run's first job). A key holds "<job id> <born>": the job it named in
-- the queue's life `born` (`conf().born`). It counts within that life even
-- when the job's record is gone (its retention ended: the repeat answers it
-- as expired, nothing is enqueued), and not in a later life (the queue was
-- deleted and created again). A key written before queues recorded their
-- life (a bare id) counts while its job exists.
local original, claimed, fresh = {}, {}, n
local born = conf().born
-- (Without keys beyond the queue's 21 fixed ones no job of the run has an
-- idempotency key.)
if #KEYS > 21 then
  fresh = 0
  for i = 0, n - 1 do
    local o = 4 + i * 6
    local ki = tonumber(ARGV[o + 5])
    local orig = false
    if ki > 0 then
      local ik = KEYS[ki]
      local prev = claimed[ik]
      if not prev then
        local v = redis.call('GET', ik)
        local sep = v and string.find(v, ' ', 1, true)
        if sep then
          if string.sub(v, sep + 1) == born then
            prev = string.sub(v, 1, sep - 1)
          end
        elseif v and redis.call('HEXISTS', K_JOBS, v) == 1 then
          prev = v
        end
      end
      if prev then
        orig = prev
      else
        redis.call('SET', ik, born and (ARGV[o] .. ' ' .. born) or ARGV[o], 'EX', window)
        claimed[ik] = ARGV[o]
      end
    end
    original[i] = orig
    if not orig then
      fresh = fresh + 1
    end
  end
end
local seq = 0
if fresh > 0 then
  seq = redis.call('HINCRBY', K_META, 'seq', fresh) - fresh
end

-- Pass 2: the fresh jobs in run order (job j has seq first + j - 1), chained
-- per lane (`nexts`), then packed (`pack_fresh`), then lanes and indexes.
local out, delayed, priorities = { now, seq + 1 }, {}, {}
local first = seq + 1
local ids, argo, avails, nexts, members, k = {}, {}, {}, {}, {}, 0
local lanes, last = {}, {}
for i = 0, n - 1 do
  local o = 4 + i * 6
  if original[i] then
    out[#out + 1] = i
    out[#out + 1] = original[i]
  else
    local id, lane = ARGV[o], ARGV[o + 1]
    local delay = tonumber(ARGV[o + 3])
    seq = seq + 1
    local avail = false
    if delay > 0 then
      avail = now + delay
      delayed[#delayed + 1] = avail
      delayed[#delayed + 1] = id
    end
    local priority = tonumber(ARGV[4 + n * 6 + i] or '0')
    if priority > 0 then
      priorities[#priorities + 1] = id
      priorities[#priorities + 1] = priority
    end
    k = k + 1
    ids[k], argo[k], avails[k], nexts[k] = id, o, avail, false
    members[2 * k - 1], members[2 * k] = seq, id
    local before = last[lane]
    if before then
      nexts[before] = id
    else
      lanes[#lanes + 1] = lane
      -- (`record`: the fields `lane_index` reads, R_KEY .. R_STATE.)
      lanes[lane] = { first = id, record = { lane, seq, avail and 'delayed' or 'queued' }, count = 0,
        available = avail or now }
    end
    last[lane] = k
    lanes[lane].count = lanes[lane].count + 1
  end
end
if fresh == 0 then
  return out
end
local packed, key_mps, max_mps = {}, {}, {}
local created_mp, queued_mp, delayed_mp = mp_uint(now), mp_str('queued'), mp_str('delayed')
for j = 1, k do
  local o = argo[j]
  local lane, max = ARGV[o + 1], ARGV[o + 4]
  local key_mp = key_mps[lane]
  if not key_mp then
    key_mp = mp_str(lane)
    key_mps[lane] = key_mp
  end
  local max_mp = max_mps[max]
  if not max_mp then
    max_mp = mp_uint(tonumber(max))
    max_mps[max] = max_mp
  end
  local avail = avails[j]
  packed[2 * j - 1] = ids[j]
  packed[2 * j] = pack_fresh(key_mp, first + j - 1, avail and delayed_mp or queued_mp, max_mp, created_mp,
    avail, nexts[j], ARGV[o + 2])
end
variadic('HSET', K_JOBS, packed)
-- Before the lanes are readied: `ready_lane` ranks a lane by its head's.
if #priorities > 0 then
  variadic('HSET', K_PRIO, priorities)
  some_priority = true
end
for _, lane in ipairs(lanes) do
  local run = lanes[lane]
  local l = lane_get(lane)
  if l then
    local tail = get(l[2])
    if tail then
      tail[R_NEXT] = run.first
      put(l[2], tail)
    end
    lane_put(lane, { l[1], ids[last[lane]], l[3] + run.count, l[4] })
  else
    lane_put(lane, { run.first, ids[last[lane]], run.count })
    lane_index(lane, run.first, run.record)
    ready_lane(lane, run.available, now)
  end
end
variadic('ZADD', K_ORDER, members)
redis.call('HINCRBY', K_META, 'pending', fresh)
if #delayed > 0 then
  variadic('ZADD', K_DELAYED, delayed)
end
redis.call('ZADD', K_LIVE, 'NX', now, QID)
rate_add('published', now, fresh)
return out
