-- claim: lease up to `max` startable lane heads of one queue (distinct
-- lanes), higher head priority first, then oldest-ready first (`due_lanes`),
-- as far as the queue's flow control allows (`flow_allow`: a throttled queue
-- answers when its next token is due, or -1 while `max_active_lanes` leases
-- are out, as the script that ends a lease wakes the claimers). Paused lanes
-- are not in K_READY. A lane leaves K_READY while its head is leased,
-- so no lane is ever leased twice. A paused queue, or one of the other mode
-- (`mode` is 'push' for the worker, 'pull' for consumers), has nothing.
-- With a `claim_id` (its key is the last of KEYS), the leases taken are
-- remembered under it for `lease_ms`: a repeat of the claim while any of
-- them lives answers the same jobs and leases (those still live) and leases
-- nothing new, so a lost reply never strands a lane until its lease expires.
-- A pull consumer's claim may carry outcomes of its earlier jobs: they are
-- applied first, in the same run (`apply_outcomes`), so their lanes' next
-- jobs may be leased right away and the consumer pays one round trip.
-- ARGV: qid, max, lease_ms, token base (the i-th lease gets '<base>-<i>'),
-- mode, claim_id ('' = none), n outcomes (0 = none), then their n groups of
-- 9 (as `apply_outcomes` reads them).
-- Returns { wait_ms, statuses, job1, job2, ... }: wait_ms is -1 when no lane
-- is scheduled, else ms until the next one is due (0: more are startable
-- now); statuses: one per outcome, in order.
local now = clock()
local max, lease_ms, token, mode = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local claim_id = ARGV[6] or ''
local K_CLAIM = claim_id ~= '' and KEYS[#KEYS]
local statuses = {}
local n_outcomes = tonumber(ARGV[7] or '0')
if n_outcomes > 0 then
  statuses = apply_outcomes(ARGV, 8, n_outcomes, now)
end
local out = { -1 }

-- When the queue's earliest ready lane is due (a push queue's due entry
-- follows it: `reindex`), or nil.
local function first_ready(c)
  if c.push then
    return reindex()
  end
  flush_z(K_READY)
  local nxt = redis.call('ZRANGE', K_READY, 0, 0, 'WITHSCORES')
  return nxt[1] and tonumber(nxt[2])
end

-- The reply, with wait_ms from `first` (when the next lane is due, or nil).
local function reply(first)
  if first then
    out[1] = math.max(0, first - now)
  end
  table.insert(out, 2, statuses)
  return out
end

if K_CLAIM then
  local prev = redis.call('GET', K_CLAIM)
  if prev then
    local held = { cmsgpack.unpack(prev) }
    for i = 1, #held, 3 do
      local r = live_lease(held[i], held[i + 1], held[i + 2], now)
      if r then
        out[#out + 1] = view(held[i], r)
      end
    end
    if #out > 1 then
      return reply(first_ready(conf()))
    end
    redis.call('DEL', K_CLAIM)
  end
end

local c = conf()
if c.paused or c.push ~= (mode == 'push') then
  return reply()
end
local allowed = flow_allow(max, now)
local taken = {}
lease_index_at_end = true
for i, lane in ipairs(due_lanes(allowed, now)) do
  local job, r = lease_head(lane, now, lease_ms, token .. '-' .. i)
  if job then
    out[#out + 1] = job
    taken[#taken + 1] = job[1]
    taken[#taken + 1] = r[R_LNO]
    taken[#taken + 1] = r[R_TOK]
  end
end
flush_lease_due()
if K_CLAIM and #taken > 0 then
  redis.call('SET', K_CLAIM, cmsgpack.pack(unpack(taken)), 'PX', lease_ms)
end
flow_spend(#out - 1, now)
local first = first_ready(c)
-- Throttled with lanes still due: come back at the next token (the push
-- due entry moves there too, so polls do not spin), or when a lease ends.
if first and first <= now then
  local more, refill_in = flow_allow(1, now)
  if more == 0 then
    first = refill_in and now + refill_in or nil
    if c.push and first then
      redis.call('ZADD', K_DUE, first, QID)
    elseif c.push then
      redis.call('ZREM', K_DUE, QID)
    end
  end
end
return reply(first)
