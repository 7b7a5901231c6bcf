-- Shared by every engine script. The engine's scripts are the functions of
-- one Redis function library (engine/mod.rs: `Library`): this file, then each
-- script's body wrapped in a function that starts with `begin_run` and returns
-- through `end_run` (which writes what the run held back). The
-- library is loaded once, so these definitions are made once, not per call
-- (that cost about 14 µs of Redis time per call as an EVAL prelude).
-- Every key a script touches arrives in KEYS, in the fixed order of
-- `QueueKeys::all` (engine/mod.rs); no key name is built here. All of them
-- share the queue's slot-group hash tag, so each run touches one hash slot.
-- ARGV[1] is always the queue id `<owner>:<queue>` (its member name in the
-- group indexes and its wake message); a script's own arguments follow.
-- Times are milliseconds from the Redis server clock, so every process agrees.
-- Everything below that one run changes (the keys, caches, counts) is reset
-- by `begin_run`, so nothing carries over from one call to the next.

local K_META, K_JOBS, K_BODY, K_LANES
local K_READY, K_LEASES, K_ORDER, K_PENDING
local K_DELAYED, K_DEAD, K_BLOCKED, K_EXPIRY
local K_RATE, K_DUE, K_LEASE_DUE, K_LIVE, K_WAKE
-- Lanes, flow control and priority (PRODUCT.md §7.4): the lane index, the
-- paused lanes, the ready lanes with a prioritised head, the job priorities.
local K_LANE_INDEX, K_LANE_PAUSED, K_HOT, K_PRIO
local QID

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A job record: one msgpack array in K_JOBS under the job id; `false` marks
-- an absent value. The payload is its last field (R_BODY): a hash field of
-- its own cost about 100 bytes of Redis memory per job and a lookup per
-- lease, more than rewriting a typical payload with its record.
local R_KEY, R_SEQ, R_STATE, R_ATT, R_MAX, R_LNO, R_TOK, R_LEXP = 1, 2, 3, 4, 5, 6, 7, 8
local R_CREATED, R_AVAIL, R_STARTED, R_FINISHED, R_ERR, R_RESULT, R_NEXT = 9, 10, 11, 12, 13, 14, 15
-- R_OUT: the outcome the lease R_LNO produced ('completed', 'retrying',
-- 'dead', 'blocked'), with its token kept in R_TOK, so a repeated ack or nack
-- of that lease answers the same outcome (`repeated`). `false` while leased.
local R_OUT = 16
local R_BODY = 17
local R_SIZE = 17
-- R_PREV, after the payload and only once a job is leased again after a
-- lease that produced an outcome: { lease_no, token, outcome } of that
-- lease, so a repeat of its ack or nack (its reply was lost, the job has
-- been retried since) still answers that outcome (PRODUCT.md §7.2).
local R_PREV = 18

-- Writes held to the end of the run (`end_run`), each key's in one variadic
-- command: a group commit's run writes two records, a lane and three index
-- entries per job, a pull claim with acks readies and leases a lane per job
-- (K_READY: an add and a removal), and a call per write cost 0.7 µs (HSET) to 1.3 µs (ZADD)
-- of Redis time more than its share of a variadic call (measured, 10,000
-- writes of each kind). Reads go through the same tables (`get`,
-- `lane_get`) or flush the key first (`flush_z`), so a run sees its own
-- writes. Records and lanes: id/lane -> packed value. Sorted sets: key ->
-- member -> score, or false for a removal (the last word per member wins,
-- so adds and removals need no order between them).
local later_records, later_lanes, later_z = {}, {}, {}

-- Values per call are bounded by Lua's C stack (about 8,000): in chunks.
local function variadic(cmd, key, values)
  for i = 1, #values, 2000 do
    redis.call(cmd, key, unpack(values, i, math.min(i + 1999, #values)))
  end
end

-- `score`: a number, not text (Redis prints it with '%.17g', exact for
-- integers below 2^53, faster than Lua's string.format; Lua's tostring keeps
-- only 14 digits), or false to remove `member`.
local function zadd_later(key, score, member)
  local z = later_z[key]
  if not z then
    z = {}
    later_z[key] = z
  end
  z[member] = score
end

local function zrem_later(key, member)
  zadd_later(key, false, member)
end

-- Leases held in the queue (ZCARD of K_LEASES), read once per run and then
-- kept by the run's own leases and releases (`lease_count_add`), so a
-- throttled queue's run does not flush its held lease writes per job.
local lease_count = nil
local flush_z
local function leases_held()
  if not lease_count then
    flush_z(K_LEASES)
    lease_count = redis.call('ZCARD', K_LEASES)
  end
  return lease_count
end

local function lease_count_add(d)
  if lease_count then
    lease_count = lease_count + d
  end
end

-- The sorted sets a busy queue changes for every job — its leases, its
-- ready lanes and its lane index, one member per lease or lane — are kept in
-- Redis's skiplist encoding once they hold SKIPLIST_AT members. Below 129
-- members Redis keeps a sorted set as a listpack, which finds, removes and
-- inserts a member by scanning it: a changed score cost 3.3 µs per member
-- at 64 members against 1.0 in a skiplist (measured, variadic ZADD), about
-- three such changes per delivered job. Adding a member longer than the
-- listpack limit (64 bytes) converts a set, and removing it keeps the
-- skiplist (Redis converts back only when it loads the key, e.g. after a
-- restart; the next run that changes the set converts it again). The member
-- (WIDE) is not valid UTF-8, so never a lane key or job id, and it is gone
-- within the same command sequence. Checked once per key and run.
local SKIPLIST_AT = 32
local WIDE
local encoding_checked = {}
local function wants_skiplist(key, adding)
  if encoding_checked[key] or (key ~= K_LEASES and key ~= K_READY and key ~= K_LANE_INDEX) then
    return false
  end
  encoding_checked[key] = true
  local encoding = redis.call('OBJECT', 'ENCODING', key)
  if encoding == 'skiplist' then
    return false
  end
  return (encoding and redis.call('ZCARD', key) or 0) + adding >= SKIPLIST_AT
end

-- Writes the held changes of sorted set `key` (before reading it).
function flush_z(key)
  local z = later_z[key]
  if not z then
    return
  end
  later_z[key] = nil
  local adds, removes = {}, {}
  for member, score in pairs(z) do
    if score then
      adds[#adds + 1] = score
      adds[#adds + 1] = member
    else
      removes[#removes + 1] = member
    end
  end
  if #adds > 0 and wants_skiplist(key, #adds / 2) then
    -- (First, so every add after it goes into the skiplist.)
    table.insert(adds, 1, WIDE)
    table.insert(adds, 1, 0)
    removes[#removes + 1] = WIDE
  end
  -- (Adds first: removals first could empty the set, which deletes the key
  -- and its encoding, just before the adds create it again.)
  if #adds > 0 then
    variadic('ZADD', key, adds)
  end
  if #removes > 0 then
    variadic('ZREM', key, removes)
  end
end

local function flush_hash(key, later)
  local values = {}
  for field, v in pairs(later) do
    values[#values + 1] = field
    values[#values + 1] = v
  end
  if #values > 0 then
    variadic('HSET', key, values)
  end
end

-- Writes everything held; the last step of every run (the library wraps each
-- script: `return end_run(body)`).
local function end_run(result)
  flush_hash(K_JOBS, later_records)
  flush_hash(K_LANES, later_lanes)
  for key in pairs(later_z) do
    flush_z(key)
  end
  return result
end

-- Records read or written by this script run, packed (a run often reads a
-- record again after writing it: the next head of a lane). Each `get`
-- unpacks afresh, so a caller's changes to its copy never leak into another
-- read; `trim` forgets what it deletes.
local packed_records = {}

local function get(id)
  local v = packed_records[id]
  if v == nil then
    v = redis.call('HGET', K_JOBS, id)
    packed_records[id] = v
  end
  if not v then
    return nil
  end
  local r = { cmsgpack.unpack(v) }
  if r[R_BODY] == nil then
    -- Written by an Orderly before the payload joined the record (16
    -- fields, the payload in K_BODY): read it from there; the next `put`
    -- moves it into the record, `trim` deletes the old copy. Until then the
    -- run keeps the whole record packed, so `packed_records` always holds
    -- a record as the run sees it (a view returns it as is).
    r[R_BODY] = redis.call('HGET', K_BODY, id) or false
    packed_records[id] = cmsgpack.pack(unpack(r, 1, R_SIZE))
  end
  return r
end

local function put(id, r)
  local v = cmsgpack.pack(unpack(r, 1, r[R_PREV] and R_PREV or R_SIZE))
  packed_records[id] = v
  later_records[id] = v
end

-- msgpack encoders of unsigned integers and of strings (their headers), as
-- cmsgpack writes them: the narrowest form that holds the value.
-- (`math` and `string` are not reachable while the library loads: set by
-- `begin_run`.)
local floor, char
local function mp_uint(n)
  if n < 128 then
    return char(n)
  elseif n < 256 then
    return char(0xcc, n)
  elseif n < 65536 then
    return char(0xcd, floor(n / 256), n % 256)
  elseif n < 4294967296 then
    return char(0xce, floor(n / 16777216), floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
  end
  local hi, lo = floor(n / 4294967296), n % 4294967296
  return char(0xcf, floor(hi / 16777216), floor(hi / 65536) % 256, floor(hi / 256) % 256, hi % 256,
    floor(lo / 16777216), floor(lo / 65536) % 256, floor(lo / 256) % 256, lo % 256)
end

local function mp_str_header(len)
  if len < 32 then
    return char(0xa0 + len)
  elseif len < 256 then
    return char(0xd9, len)
  elseif len < 65536 then
    return char(0xda, floor(len / 256), len % 256)
  end
  return char(0xdb, floor(len / 16777216), floor(len / 65536) % 256, floor(len / 256) % 256, len % 256)
end

local function mp_str(s)
  return mp_str_header(#s) .. s
end

local MP_FALSE = '\194'

-- A just-published record, packed by hand exactly as `put` (cmsgpack) packs
-- it, byte for byte, at a third of the cost (1.7 -> 0.7 µs a record here,
-- measured; publish packs one per job): every field but those named is
-- false, attempts and lease number are 0. Parts shared by a run's records
-- are encoded once by the caller: `key_mp` = mp_str(lane key),
-- `state_mp` = mp_str('queued'|'delayed'), `max_mp` = mp_uint(max attempts),
-- `created_mp` = mp_uint(created_at). `avail`, `nxt`: a number, a job id, or
-- false. The test `records_are_packed_as_cmsgpack_packs_them` holds the
-- equality.
local function pack_fresh(key_mp, seq, state_mp, max_mp, created_mp, avail, nxt, body)
  return key_mp .. mp_uint(seq) .. state_mp .. '\0' .. max_mp .. '\0\194\194' .. created_mp
    .. (avail and mp_uint(avail) or MP_FALSE) .. '\194\194\194\194' .. (nxt and mp_str(nxt) or MP_FALSE)
    .. MP_FALSE .. mp_str_header(#body) .. body
end

-- The job as the engine returns it: { id, the record packed } (the engine
-- decodes the msgpack itself: one bulk string per job instead of 16 reply
-- values to build in Lua and to parse in Orderly). Every caller's `r` is the
-- record as the run last read (`get`) or wrote (`put`) it, which
-- `packed_records` holds already packed: it is returned as is, not packed
-- again (`r` is packed only for a record `trim` dropped from the cache).
local function view(id, r)
  return { id, packed_records[id] or cmsgpack.pack(unpack(r, 1, R_SIZE)) }
end

local function get_view(id)
  local r = get(id)
  if not r then
    return {}
  end
  return view(id, r)
end

-- Queue configuration mirrored from the queue definition (`configure`).
local conf_cache = nil
local function conf()
  if not conf_cache then
    local c = redis.call('HMGET', K_META, 'push', 'paused', 'on_exhausted', 'retention_s', 'watched_until',
      'conf_v', 'rate_per_s', 'rate_burst', 'max_active', 'legacy_bodies', 'born')
    conf_cache = {
      configured = c[6] ~= false,
      push = c[1] == '1',
      paused = c[2] == '1',
      on_exhausted = c[3] or 'dead_letter',
      retention_s = tonumber(c[4] or '86400'),
      -- Until when a `GET /v1/jobs/{id}?wait_ms` waits on this queue (`watch`).
      watched_until = tonumber(c[5] or '0'),
      -- Flow control (0 = off): lane heads started per second and the
      -- bucket's size; heads leased at once.
      rate = tonumber(c[7] or '0'),
      burst = tonumber(c[8] or '0'),
      max_active = tonumber(c[9] or '0'),
      -- Payloads an earlier version kept apart remain (`convert_legacy`):
      -- `trim` deletes them with their records.
      legacy_bodies = c[10] == '1',
      -- This life of the queue: the settings version it was created with
      -- (set once by `configure`; a queue created again after a delete has
      -- a newer one). Idempotency keys name it beside their job.
      born = c[11],
    }
  end
  return conf_cache
end

-- Lanes: K_LANES maps a lane key to msgpack {head id, tail id, length,
-- hint}; the jobs of a lane are chained through their records' R_NEXT, in seq
-- order. `hint` is the job a redrive last put back into the lane: the next
-- one (a higher seq) is looked for from there, not from the head
-- (`insert_in_order`); it is only a hint and checked before use.
local packed_lanes = {}
local function lane_get(lane)
  local v = packed_lanes[lane]
  if v == nil then
    v = redis.call('HGET', K_LANES, lane)
    packed_lanes[lane] = v
  end
  if not v then
    return nil
  end
  return { cmsgpack.unpack(v) }
end

local function lane_put(lane, l)
  local v = cmsgpack.pack(l[1], l[2], l[3], l[4] or false)
  packed_lanes[lane] = v
  later_lanes[lane] = v
end

-- The lane index (K_LANE_INDEX) ranks every lane with unfinished jobs for
-- the lanes listing, stuck first: score = head seq, plus LANE_UNBLOCKED
-- unless the head is blocked (so blocked lanes come first, then the oldest
-- heads). Kept wherever a lane's head changes or becomes (un)blocked.
-- Scores go to Redis as numbers (`zadd_later`): Lua would print 14 digits.
local LANE_UNBLOCKED = 1e15
local function lane_index(lane, id, r)
  r = r or get(id)
  if not r then
    zrem_later(K_LANE_INDEX, lane)
    return
  end
  local score = r[R_SEQ] + ((r[R_STATE] == 'blocked') and 0 or LANE_UNBLOCKED)
  zadd_later(K_LANE_INDEX, score, lane)
end

local function lane_gone(lane)
  redis.call('HDEL', K_LANES, lane)
  packed_lanes[lane] = false
  later_lanes[lane] = nil
  zrem_later(K_LANE_INDEX, lane)
end

local function lane_head(lane)
  local l = lane_get(lane)
  return l and l[1]
end

-- The head `head` (record `r`) of `lane` leaves it; returns the next id and
-- its record.
local function lane_pop(lane, head, r)
  local l = lane_get(lane)
  if not l or l[1] ~= head then
    return l and l[1]
  end
  local nxt = r[R_NEXT]
  if nxt then
    lane_put(lane, { nxt, l[2], l[3] - 1, l[4] })
    local nr = get(nxt)
    lane_index(lane, nxt, nr)
    return nxt, nr
  end
  lane_gone(lane)
  return nil
end

-- Removes `id` (anywhere in its lane). Returns true and the next id if it
-- was the head.
local function lane_remove(lane, id, r)
  local l = lane_get(lane)
  if not l then
    return false
  end
  if l[1] == id then
    return true, lane_pop(lane, id, r)
  end
  local prev_id, prev = l[1], get(l[1])
  while prev and prev[R_NEXT] and prev[R_NEXT] ~= id do
    prev_id = prev[R_NEXT]
    prev = get(prev_id)
  end
  if prev and prev[R_NEXT] == id then
    prev[R_NEXT] = r[R_NEXT]
    put(prev_id, prev)
    if l[2] == id then
      l[2] = prev_id
    end
    lane_put(lane, { l[1], l[2], l[3] - 1, l[4] })
  end
  return false
end

-- A lane that became ready (now, or at a later time) is announced once per
-- script run: push queues to the workers, pull queues to the consumers
-- waiting on it. For a later time the claim they run answers when it is due,
-- so a delayed job or a backoff set by any process starts on time rather
-- than at the next poll.
local woken = false
local function wake()
  if not woken then
    woken = true
    redis.call(PUBLISH_CMD, K_WAKE, (conf().push and 'p' or 'u') .. QID)
  end
end

-- A job reached a terminal state: while someone waits for jobs of this queue
-- to finish (`watch`), that is announced once per run ('d<qid>'), so waiting
-- requests re-read their job instead of polling.
local finished_announced = false
local function announce_finished(now)
  if not finished_announced and conf().watched_until > now then
    finished_announced = true
    redis.call(PUBLISH_CMD, K_WAKE, 'd' .. QID)
  end
end

-- The queue's entry in the group's push due index (K_DUE) follows its
-- earliest ready lane (push queues that are not paused only).
local function reindex()
  local c = conf()
  if c.push and not c.paused then
    flush_z(K_READY)
    local first = redis.call('ZRANGE', K_READY, 0, 0, 'WITHSCORES')
    if first[1] then
      redis.call('ZADD', K_DUE, first[2], QID)
      return tonumber(first[2])
    end
  end
  redis.call('ZREM', K_DUE, QID)
  return nil
end

-- How long after its earliest record's retention ends a queue is due for
-- trimming by the lease reaper (so expired records of a queue that has gone
-- quiet are dropped too, and trims of one queue come at most this often).
local TRIM_SLACK_MS = 2000

-- The queue's entry in the group's lease index follows its earliest lease
-- expiry; with no lease, the time its oldest finished record is due for
-- trimming (`recover` trims too). The reaper reads this index.
local function reindex_leases()
  flush_z(K_LEASES)
  flush_z(K_EXPIRY)
  local first = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', K_LEASE_DUE, first[2], QID)
    return
  end
  local expiring = redis.call('ZRANGE', K_EXPIRY, 0, 0, 'WITHSCORES')
  if expiring[1] then
    redis.call('ZADD', K_LEASE_DUE, tonumber(expiring[2]) + TRIM_SLACK_MS, QID)
  else
    redis.call('ZREM', K_LEASE_DUE, QID)
  end
end

-- A paused lane (K_LANE_PAUSED: lane -> when its head may start, '' while
-- it may not) stays out of K_READY: readying it only records the time, and
-- `lane_pause` (resume) readies it then. Returns true if `lane` is paused.
-- Whether any lane of the queue is paused, read once per run (most queues
-- have none, which spares a lookup per readied lane); `lane_pause` resets it.
local some_lane_paused = nil
local function any_lane_paused()
  if some_lane_paused == nil then
    some_lane_paused = redis.call('EXISTS', K_LANE_PAUSED) == 1
  end
  return some_lane_paused
end

local function park_if_paused(lane, at)
  if not any_lane_paused() or redis.call('HEXISTS', K_LANE_PAUSED, lane) == 0 then
    return false
  end
  redis.call('HSET', K_LANE_PAUSED, lane, at)
  return true
end

-- Priority: K_PRIO holds the priority (1-9) of jobs published with one;
-- K_HOT holds the ready lanes whose head has one, score = (9 - priority) *
-- PRIO_STEP + ready time, so claim looks there first. K_HOT may keep a lane
-- that left K_READY (claim drops such entries as it meets them); K_READY
-- stays the truth of which lanes may start.
local PRIO_STEP = 2 ^ 42
-- Whether any job has a priority, read once per run (`publish` sets it
-- when it writes some).
local some_priority = nil
-- Whether K_HOT has entries, read once per run (so a queue without
-- priorities spends no command on it).
local some_hot = nil
local function unhot(lane)
  if some_hot == nil then
    some_hot = redis.call('EXISTS', K_HOT) == 1
  end
  if some_hot then
    redis.call('ZREM', K_HOT, lane)
  end
end

local function prioritise(lane, at)
  if some_priority == nil then
    some_priority = redis.call('EXISTS', K_PRIO) == 1
  end
  local id = some_priority and lane_head(lane)
  local p = id and tonumber(redis.call('HGET', K_PRIO, id) or '0') or 0
  if p > 0 then
    redis.call('ZADD', K_HOT, string.format('%.0f', (9 - p) * PRIO_STEP + at), lane)
    some_hot = true
  else
    unhot(lane)
  end
end

-- Lane `lane` may start its head at `at`.
local function ready_lane(lane, at, now)
  if park_if_paused(lane, at) then
    return
  end
  zadd_later(K_READY, at, lane)
  prioritise(lane, at)
  local c = conf()
  if c.push and not c.paused then
    redis.call('ZADD', K_DUE, 'LT', at, QID)
  end
  if not c.paused then
    wake()
  end
end

-- The lane's head left; ready the next head (if any), whose record is read
-- for its availability.
local function ready_next(lane, nxt, now)
  if nxt then
    local r = get(nxt)
    ready_lane(lane, math.max(now, (r and r[R_AVAIL]) or now), now)
  end
end

-- Per-second event counters behind "throughput over the last minute": a
-- ring of RATE_WINDOW_S fields per kind in K_RATE, each "<second>:<count>".
local RATE_WINDOW_S = 60
local function rate_add(kind, now, n)
  local s = math.floor(now / 1000)
  local field = kind .. (s % RATE_WINDOW_S)
  local v = redis.call('HGET', K_RATE, field)
  local at, count = 0, 0
  if v then
    local sep = string.find(v, ':', 1, true)
    at, count = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
  end
  if at ~= s then
    count = 0
  end
  redis.call('HSET', K_RATE, field, s .. ':' .. (count + n))
end

local function rate_sum(kind, now)
  local s = math.floor(now / 1000)
  local fields = {}
  for i = 0, RATE_WINDOW_S - 1 do
    fields[#fields + 1] = kind .. i
  end
  local total = 0
  for _, v in ipairs(redis.call('HMGET', K_RATE, unpack(fields))) do
    if v then
      local sep = string.find(v, ':', 1, true)
      local at = tonumber(string.sub(v, 1, sep - 1))
      if at > s - RATE_WINDOW_S then
        total = total + tonumber(string.sub(v, sep + 1))
      end
    end
  end
  return total
end

-- Drops records whose retention ended (at most `max`).
local function trim(now, max)
  flush_z(K_EXPIRY)
  local gone = redis.call('ZRANGEBYSCORE', K_EXPIRY, '-inf', now, 'LIMIT', 0, max)
  if #gone > 0 then
    for _, id in ipairs(gone) do
      packed_records[id] = nil
      later_records[id] = nil
    end
    redis.call('HDEL', K_JOBS, unpack(gone))
    if conf().legacy_bodies then
      redis.call('HDEL', K_BODY, unpack(gone))
    end
    redis.call('HDEL', K_PRIO, unpack(gone))
    redis.call('ZREM', K_ORDER, unpack(gone))
    redis.call('ZREM', K_EXPIRY, unpack(gone))
  end
  return #gone
end

-- Unfinished jobs are counted, not indexed: K_META's `pending` (a sorted
-- set of them cost more than 100 bytes of Redis memory per queued job, and
-- the oldest unfinished job is always a lane head, which the lane index
-- ranks). Finishing jobs lower it by `pending_delta`, written once per run
-- by `settle_live`, which every script that finishes jobs runs at its end.
local pending_delta = 0

-- Applies this run's finished jobs to the count; with no unfinished job
-- left the queue leaves the group's live set (the gauge sampler reads only
-- live queues). Leased jobs are unfinished, so none pending means no leases.
local function settle_live()
  local pending
  if pending_delta ~= 0 then
    pending = redis.call('HINCRBY', K_META, 'pending', pending_delta)
    pending_delta = 0
  else
    pending = tonumber(redis.call('HGET', K_META, 'pending') or '0')
  end
  if pending <= 0 then
    redis.call('ZREM', K_LIVE, QID)
  end
end

-- A job reached a terminal state: keep it `retention_s`, then forget it.
-- Every 8th job finished (`finished_no`) also trims up to 128 expired ones.
-- `maybe_delayed`: the job may still be in K_DELAYED (a leased job never is).
-- The caller runs `settle_live` once after its retirements.
local function retire(id, r, now, finished_no, maybe_delayed)
  pending_delta = pending_delta - 1
  if maybe_delayed then
    redis.call('ZREM', K_DELAYED, id)
  end
  local retention = conf().retention_s
  zadd_later(K_EXPIRY, now + retention * 1000, id)
  if finished_no % 8 == 0 then
    trim(now, 128)
  end
  announce_finished(now)
end

-- Flow control (queue settings `rate_limit` and `max_active_lanes`, mirrored
-- into K_META by `configure`). The token bucket lives in K_META too
-- (`tb_tokens`, `tb_at`), refilled lazily from the server clock, so every
-- process shares it. `flow_allow(want, now)` answers how many heads may start
-- now (0..want) and, when none may because the bucket is empty, the ms until
-- the next token; `flow_spend(n, now)` takes n tokens. Every place that
-- leases a head (claim, a chained ack) asks first.
local flow_tokens = nil
local function flow_allow(want, now)
  local c = conf()
  local n = want
  if c.max_active > 0 then
    n = math.min(n, math.max(0, c.max_active - leases_held()))
  end
  if c.rate > 0 and n > 0 then
    if not flow_tokens then
      local b = redis.call('HMGET', K_META, 'tb_tokens', 'tb_at')
      local tokens, at = tonumber(b[1] or c.burst), tonumber(b[2] or now)
      flow_tokens = math.min(c.burst, tokens + math.max(0, now - at) * c.rate / 1000)
    end
    n = math.min(n, math.floor(flow_tokens))
    if n <= 0 then
      return 0, math.max(1, math.ceil((1 - flow_tokens) * 1000 / c.rate))
    end
  end
  return n, nil
end

local function flow_spend(n, now)
  if n > 0 and conf().rate > 0 and flow_tokens then
    flow_tokens = flow_tokens - n
    redis.call('HSET', K_META, 'tb_tokens', tostring(flow_tokens), 'tb_at', now)
  end
end

-- One head may start now (and its token is taken): for a chained ack.
local function flow_take_one(now)
  if flow_allow(1, now) == 1 then
    flow_spend(1, now)
    return true
  end
  return false
end

-- A lease ended: under `max_active_lanes` a waiting lane may start now, so
-- claimers hear of it, and a push queue gets its due entry back (claim took
-- it out while the queue was full).
local function flow_slot_freed()
  local c = conf()
  if c.max_active > 0 and not c.paused then
    flush_z(K_READY)
    if redis.call('ZCARD', K_READY) > 0 then
      reindex()
      wake()
    end
  end
end

-- Is `lane` paused (`lane_pause`)?
local function lane_paused(lane)
  return any_lane_paused() and redis.call('HEXISTS', K_LANE_PAUSED, lane) == 1
end

-- Removes the job's lease bookkeeping. `keep_index`: the caller leases
-- another job of the queue next, so the lease entry may stay early.
local function drop_lease(id, r, keep_index)
  r[R_TOK], r[R_LEXP] = false, false
  zrem_later(K_LEASES, id)
  lease_count_add(-1)
  if not keep_index then
    reindex_leases()
  end
  flow_slot_freed()
end

-- The record of `id` if (lease_no, token) is its live lease, else nil.
local function live_lease(id, lease_no, token, now)
  local r = get(id)
  if not r or r[R_STATE] ~= 'active' or r[R_LNO] ~= tonumber(lease_no) or r[R_TOK] ~= token then
    return nil
  end
  if r[R_LEXP] <= now then
    return nil
  end
  return r
end

-- A repeat of an ack or nack whose lease (lease_no, token) already produced
-- an outcome: that outcome and the record; else nil and the record (if any).
local function repeated(id, lease_no, token)
  local r = get(id)
  if not r then
    return nil, r
  end
  local n = tonumber(lease_no)
  if r[R_OUT] and r[R_LNO] == n and r[R_TOK] == token then
    return r[R_OUT], r
  end
  local prev = r[R_PREV]
  if prev and prev[1] == n and prev[2] == token then
    return prev[3], r
  end
  return nil, r
end

-- The lease holder's transition produced `outcome`: it is kept with the
-- lease's token for repeats (the caller writes `r`).
local function settle_lease(r, token, outcome)
  r[R_TOK], r[R_OUT] = token, outcome
end

-- Set by a script that leases many jobs: their leases lower the group's
-- lease entry once, at the script's end (`reindex_leases`, or
-- `flush_lease_due` for the earliest expiry this run leased).
local lease_index_at_end = false
local lease_due_min = nil
local function flush_lease_due()
  if lease_due_min then
    redis.call('ZADD', K_LEASE_DUE, 'LT', lease_due_min, QID)
    lease_due_min = nil
  end
end

-- Leases job `id` (record `r`), its lane's head: attempts+1, lease number+1,
-- a new token; the group's lease entry for the queue is lowered to its expiry
-- if that is earlier. Returns the job's view and its (leased) record.
local function lease_job(id, r, now, lease_ms, token)
  local expires = now + lease_ms
  if r[R_STATE] == 'delayed' then
    redis.call('ZREM', K_DELAYED, id)
  end
  r[R_STATE] = 'active'
  if r[R_OUT] then
    r[R_PREV] = { r[R_LNO], r[R_TOK], r[R_OUT] }
  end
  r[R_LNO] = (r[R_LNO] or 0) + 1
  r[R_ATT] = (r[R_ATT] or 0) + 1
  r[R_TOK] = token
  r[R_LEXP] = expires
  r[R_OUT] = false
  if r[R_ATT] == 1 then
    r[R_STARTED] = now
  end
  put(id, r)
  zadd_later(K_LEASES, expires, id)
  lease_count_add(1)
  if lease_index_at_end then
    lease_due_min = math.min(lease_due_min or expires, expires)
  else
    redis.call('ZADD', K_LEASE_DUE, 'LT', expires, QID)
  end
  return view(id, r), r
end

-- Leases the head of `lane` (it leaves K_READY), as `lease_job`. A lane
-- whose head record is gone is dropped.
local function lease_head(lane, now, lease_ms, token)
  zrem_later(K_READY, lane)
  local id = lane_head(lane)
  if not id then
    return nil
  end
  local r = get(id)
  if not r then
    lane_gone(lane)
    return nil
  end
  unhot(lane)
  return lease_job(id, r, now, lease_ms, token)
end

-- The job ran out of attempts (or failed permanently): apply the policy.
-- `r` is written here.
local function exhaust(id, r, lane, now)
  if conf().on_exhausted == 'block' then
    r[R_STATE] = 'blocked'
    r[R_OUT] = r[R_TOK] and 'blocked'
    put(id, r)
    lane_index(lane, id, r)
    redis.call('ZADD', K_BLOCKED, r[R_SEQ], id)
    zrem_later(K_READY, lane)
    return 'blocked'
  end
  r[R_STATE], r[R_FINISHED] = 'dead', now
  r[R_OUT] = r[R_TOK] and 'dead'
  put(id, r)
  redis.call('ZADD', K_DEAD, r[R_SEQ], id)
  pending_delta = pending_delta - 1
  redis.call('ZREM', K_DELAYED, id)
  zrem_later(K_READY, lane)
  ready_next(lane, lane_pop(lane, id, r), now)
  settle_live()
  announce_finished(now)
  return 'dead'
end

-- Steps the lane walks of one script run may take in all (each reads one
-- record), so a redrive or retry into a long lane runs in bounded steps.
local walk_budget = 500

-- Is `h` (the record of the lane's hint) a place to start looking for where
-- seq `seq` belongs: a job still in `lane` with a lower seq?
local function hint_usable(h, lane, seq)
  if not h or h[R_KEY] ~= lane or h[R_SEQ] >= seq then
    return false
  end
  local state = h[R_STATE]
  return state ~= 'completed' and state ~= 'dead' and state ~= 'cancelled'
end

-- Does the lane's head `head` keep its place ahead of a job sent back from
-- dead: while it is leased or blocked (it is being delivered, or the lane
-- stopped at it: README "Dead letters"), and while jobs older than it, sent
-- back then, wait behind it (going ahead of it would put the new one ahead
-- of them). A head only waiting — for its retry's backoff too — does not:
-- an older job sent back goes first, so the lane runs in seq order again.
local function head_keeps_place(head)
  local state = head[R_STATE]
  if state == 'active' or state == 'blocked' then
    return true
  end
  local second = head[R_NEXT] and get(head[R_NEXT])
  return second and second[R_SEQ] < head[R_SEQ] or false
end

-- Puts `id` (record `r`, not in any lane) into its lane where its seq
-- belongs: before the first job with a higher seq, but never before a head
-- that keeps its place (`head_keeps_place`; only the head can be out of seq
-- order, behind it the chain always is in order). A job sent back from dead
-- starts afresh. Returns true if it became
-- the head, false if not; nil if this run's walk budget ran out first (then
-- nothing of `r` was written, and the lane's hint remembers how far the walk
-- got, so the next run goes on from there). Writes `r`.
local function insert_in_order(lane, id, r)
  if walk_budget <= 0 then
    return nil
  end
  local l = lane_get(lane)
  if not l then
    r[R_NEXT] = false
    put(id, r)
    lane_put(lane, { id, id, 1, id })
    lane_index(lane, id, r)
    return true
  end
  local seq = r[R_SEQ]
  local head = get(l[1])
  if head and head[R_SEQ] > seq and not head_keeps_place(head) then
    r[R_NEXT] = l[1]
    put(id, r)
    lane_put(lane, { id, l[2], l[3] + 1, id })
    lane_index(lane, id, r)
    return true
  end
  -- Where to start walking: the tail when seq goes last, else the hint
  -- when usable, else the head.
  local prev_id, prev = l[1], head
  local tail = l[2] ~= l[1] and get(l[2]) or nil
  if tail and tail[R_SEQ] < seq then
    prev_id, prev = l[2], tail
  elseif l[4] and l[4] ~= l[1] then
    local h = get(l[4])
    if hint_usable(h, lane, seq) then
      prev_id, prev = l[4], h
    end
  end
  while prev and prev[R_NEXT] do
    if walk_budget <= 0 then
      l[4] = prev_id
      lane_put(lane, l)
      return nil
    end
    walk_budget = walk_budget - 1
    local nxt = get(prev[R_NEXT])
    if not nxt or nxt[R_SEQ] > seq then
      break
    end
    prev_id, prev = prev[R_NEXT], nxt
  end
  r[R_NEXT] = prev and prev[R_NEXT] or false
  put(id, r)
  if prev then
    prev[R_NEXT] = id
    put(prev_id, prev)
  end
  if l[2] == prev_id then
    l[2] = id
  end
  lane_put(lane, { l[1], l[2], l[3] + 1, id })
  return false
end

-- The live lease holder (`token`) completed job `id` (record `r`): it leaves
-- its lane; returns the lane and its next job id, which the caller readies or
-- leases. `keep_index`: as in drop_lease. Counters and `retire` are the
-- caller's (a batch counts once).
local function complete(id, r, token, result, now, keep_index)
  drop_lease(id, r, keep_index)
  settle_lease(r, token, 'completed')
  r[R_STATE], r[R_RESULT], r[R_FINISHED] = 'completed', result, now
  local lane = r[R_KEY]
  local nxt, nr = lane_pop(lane, id, r)
  put(id, r)
  return lane, nxt, nr
end

-- The live lease holder's attempt of job `id` (record `r`) failed. With
-- attempts left and a retryable failure the job stays at the HEAD of its
-- lane and the lane becomes ready again after a delay; otherwise the queue's
-- on_exhausted policy applies (dead: lane continues; block: lane stops).
-- The delay is `a` ms (mode 'retry'), or the queue's exponential backoff
-- from the job's attempts (mode 'backoff': initial `a`, cap `b`, "equal
-- jitter": half the step fixed, half `jitter` (0..1) of it) — the one place
-- backoff is computed, for the push worker and for nack alike.
-- Returns 'retrying', 'dead' or 'blocked'.
local function fail_attempt(id, r, token, err, mode, a, b, jitter, now, keep_index)
  drop_lease(id, r, keep_index)
  r[R_TOK] = token
  r[R_ERR] = err
  if mode ~= 'permanent' and r[R_ATT] < r[R_MAX] then
    local retry_in = a
    if mode == 'backoff' then
      local step = math.max(1, math.min(a * 2 ^ math.min(math.max(r[R_ATT] - 1, 0), 32), b))
      local fixed = math.floor(step / 2)
      retry_in = fixed + math.floor((step - fixed) * jitter)
    end
    r[R_STATE] = 'retrying'
    -- Also kept in the record (not only as the lane's ready time): a job
    -- sent back from dead may go ahead of this head, which then waits for
    -- its retry time still when it is the head again (`ready_next`).
    r[R_AVAIL] = now + retry_in
    settle_lease(r, token, 'retrying')
    put(id, r)
    redis.call('HINCRBY', K_META, 'retried', 1)
    ready_lane(r[R_KEY], now + retry_in, now)
    return 'retrying'
  end
  return exhaust(id, r, r[R_KEY], now)
end

-- Up to `max` lanes whose heads may start now: prioritised heads first
-- (K_HOT, at most PRIO_SCAN entries looked at), then the longest ready.
-- Bounded work: never more than PRIO_SCAN + 2 * max entries are read.
local PRIO_SCAN = 64
local function due_lanes(max, now)
  local picked, seen = {}, {}
  if max <= 0 then
    return picked
  end
  flush_z(K_READY)
  for _, lane in ipairs(redis.call('ZRANGE', K_HOT, 0, PRIO_SCAN - 1)) do
    local at = redis.call('ZSCORE', K_READY, lane)
    if not at then
      unhot(lane)
    elseif tonumber(at) <= now then
      picked[#picked + 1] = lane
      seen[lane] = true
      if #picked >= max then
        return picked
      end
    end
  end
  local more = redis.call('ZRANGEBYSCORE', K_READY, '-inf', now, 'LIMIT', 0, max + #picked)
  for _, lane in ipairs(more) do
    if #picked >= max then
      break
    end
    if not seen[lane] then
      picked[#picked + 1] = lane
    end
  end
  return picked
end

-- One lane as the lanes listing shows it, or nil if its head is gone:
-- { key, state, length, head id, seq, attempts, last_error, created_at,
--   available_at (when the head may start, if known), head priority }.
local function lane_view(lane, l, now)
  local id = l[1]
  local r = get(id)
  if not r then
    return nil
  end
  local st = r[R_STATE]
  local parked = redis.call('HGET', K_LANE_PAUSED, lane)
  flush_z(K_READY)
  local at = redis.call('ZSCORE', K_READY, lane)
  at = tonumber(at or (parked ~= '' and parked) or r[R_AVAIL] or '')
  local state
  if st == 'blocked' then
    state = 'blocked'
  elseif parked then
    state = 'paused'
  elseif st == 'active' or st == 'retrying' then
    state = st
  elseif conf().paused then
    -- (Its queue is paused: the head waits for the resume, whatever its time.)
    state = 'paused'
  elseif at and at > now then
    state = 'delayed'
  else
    state = 'ready'
  end
  local priority = tonumber(redis.call('HGET', K_PRIO, id) or '0')
  return { lane, state, l[3], id, r[R_SEQ], r[R_ATT] or 0, r[R_ERR] or false, r[R_CREATED], at or false,
    priority }
end

-- Data of an earlier version (an upgrade keeps its jobs, docs/architecture.md):
-- its index of unfinished jobs (K_PENDING) becomes the count, added to what
-- this version counted meanwhile (publishes counted, finishes subtracted,
-- whether or not the job was indexed). Payloads kept apart (K_BODY) are read
-- by `get`; while any remain, K_META's `legacy_bodies` has `trim` delete them
-- with their records. Run by `configure` (a process loading the queue) and
-- `recover` (the lease reaper, whose trims may come before any process
-- loads the queue).
local function convert_legacy(now)
  if redis.call('EXISTS', K_PENDING) == 1 then
    local pending = redis.call('HINCRBY', K_META, 'pending', redis.call('ZCARD', K_PENDING))
    redis.call('DEL', K_PENDING)
    if pending > 0 then
      redis.call('ZADD', K_LIVE, 'NX', now, QID)
    end
  end
  local bodies = redis.call('EXISTS', K_BODY) == 1
  if bodies ~= conf().legacy_bodies then
    if bodies then
      redis.call('HSET', K_META, 'legacy_bodies', '1')
    else
      redis.call('HDEL', K_META, 'legacy_bodies')
    end
    conf_cache = nil
  end
end

-- Jobs a run completed ({id, record, id, record, ...}): counted once, then
-- each retired with its finishing number. The caller settles the live set.
local function retire_completed(completed, now)
  if #completed == 0 then
    return
  end
  local count = #completed / 2
  local total = redis.call('HINCRBY', K_META, 'completed', count)
  rate_add('completed', now, count)
  for j = 1, #completed, 2 do
    retire(completed[j], completed[j + 1], now, total - count + (j + 1) / 2)
  end
end

-- A pull consumer's outcomes for many leased jobs, in order (`outcomes`, and
-- `claim` with acks/nacks before it leases): each applied as `ack` / `fail`
-- would (a repeat of an outcome its lease already produced answers that
-- outcome); counters, the lease index and the live set once per run.
-- argv[o ..] (the script's ARGV): n groups of 9: kind ('a'|'n'), id, lease_no, token, result
-- (ack) or error (nack), mode, a, b, jitter (nack; as in fail.lua).
-- Returns one status per item: 'completed', 'retrying', 'dead', 'blocked',
-- 'lease_lost' or 'not_found'; a repeat answers its lease's outcome marked
-- '=' ('=completed'): nothing changed now, and it is not counted again.
local function apply_outcomes(argv, o, n, now)
  local out, completed = {}, {}
  for i = 0, n - 1 do
    local at = o + i * 9
    local kind, id, lease_no, token = argv[at], argv[at + 1], argv[at + 2], argv[at + 3]
    local r = live_lease(id, lease_no, token, now)
    local status
    if not r then
      local outcome, old = repeated(id, lease_no, token)
      status = outcome and ('=' .. outcome) or (old and 'lease_lost' or 'not_found')
    elseif kind == 'a' then
      local lane, nxt = complete(id, r, token, argv[at + 4], now, true)
      completed[#completed + 1] = id
      completed[#completed + 1] = r
      ready_next(lane, nxt, now)
      status = 'completed'
    else
      status = fail_attempt(id, r, token, argv[at + 4], argv[at + 5], tonumber(argv[at + 6]),
        tonumber(argv[at + 7]), tonumber(argv[at + 8]), now, true)
    end
    out[#out + 1] = status
  end
  retire_completed(completed, now)
  reindex_leases()
  settle_live()
  return out
end

-- Starts a script run: its keys and queue id, and fresh per-run state.
local function begin_run(keys, argv)
  K_META, K_JOBS, K_BODY, K_LANES = keys[1], keys[2], keys[3], keys[4]
  K_READY, K_LEASES, K_ORDER, K_PENDING = keys[5], keys[6], keys[7], keys[8]
  K_DELAYED, K_DEAD, K_BLOCKED, K_EXPIRY = keys[9], keys[10], keys[11], keys[12]
  K_RATE, K_DUE, K_LEASE_DUE, K_LIVE, K_WAKE = keys[13], keys[14], keys[15], keys[16], keys[17]
  K_LANE_INDEX, K_LANE_PAUSED, K_HOT, K_PRIO = keys[18], keys[19], keys[20], keys[21]
  QID = argv[1]
  packed_records, packed_lanes = {}, {}
  later_records, later_lanes, later_z = {}, {}, {}
  conf_cache = nil
  woken, finished_announced = false, false
  some_lane_paused, some_priority, some_hot = nil, nil, nil
  encoding_checked = {}
  WIDE = WIDE or string.rep('\255', 65)
  pending_delta = 0
  flow_tokens = nil
  lease_count = nil
  lease_index_at_end, lease_due_min = false, nil
  walk_budget = 500
  floor, char = math.floor, string.char
end
