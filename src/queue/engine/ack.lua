-- ack: the live lease holder completed the job. The head leaves its lane and
-- the next job of the lane becomes ready; or, when the push worker asks
-- (`chain` is a lease token) and no other push work of the queue's slot group
-- is due, the worker leases that next head right here, so a busy lane costs
-- one round trip per job and no wake-up.
-- ARGV: qid, id, lease_no, token, result, chain ('' = no), lease_ms (chained).
-- Returns { 'ok', job } or { 'lease_lost', job-or-empty } without `chain`;
-- with it { 'ok'|'lease_lost', {}, next-job-or-empty, wait_ms } (wait_ms as
-- in claim). A repeat of an ack or nack that already produced an outcome
-- under this lease answers that outcome again (a lost reply is retried
-- safely): { outcome, job }; with `chain`, { 'ok', {}, next } where next is
-- the lane head the first run leased under the same chain token, if it is
-- still leased so.
local now = clock()
local id, lease_no, token, result = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local chain, lease_ms = ARGV[6] or '', tonumber(ARGV[7] or '0')
local wants_chain = chain ~= ''
local r = live_lease(id, lease_no, token, now)
if not r then
  local outcome, old = repeated(id, lease_no, token)
  if wants_chain then
    local next_job = {}
    local head = outcome == 'completed' and lane_head(old[R_KEY])
    local h = head and get(head)
    if h and h[R_STATE] == 'active' and h[R_TOK] == chain then
      next_job = view(head, h, true)
    end
    return { outcome and 'ok' or 'lease_lost', {}, next_job, -1 }
  end
  if outcome then
    return { outcome, view(id, old, true) }
  end
  return { 'lease_lost', old and view(id, old, true) or {} }
end
-- The lease index is made exact after `retire`, so a queue left without
-- leases is due for trimming its finished records (reindex_leases).
local lane, nxt = complete(id, r, token, result, now, true)
local completed = redis.call('HINCRBY', K_META, 'completed', 1)
rate_add('completed', now, 1)
retire(id, r, now, completed)
if not nxt then
  -- (A next job in the lane is unfinished: the queue stays live.)
  settle_live()
end
if not wants_chain then
  ready_next(lane, nxt, now)
  reindex_leases()
  return { 'ok', view(id, r, true) }
end

-- The queue's earliest ready lane (the acked lane is not in K_READY: it was
-- leased), read once for the chain decision and for wait_ms.
local first = redis.call('ZRANGE', K_READY, 0, 0, 'WITHSCORES')
local first_at = first[1] and tonumber(first[2])

-- Other push work due now in the group: leave this lane to claim order, so
-- busy lanes cannot starve the others.
local function others_due()
  if first_at and first_at <= now then
    return true
  end
  for _, qid in ipairs(redis.call('ZRANGEBYSCORE', K_DUE, '-inf', now, 'LIMIT', 0, 2)) do
    if qid ~= QID then
      return true
    end
  end
  return false
end

local c = conf()
local next_job = {}
if nxt then
  local f = get(nxt)
  local avail = (f and f[R_AVAIL]) or now
  -- (flow_take_one last: it spends a token, only when the chain happens.)
  if f and avail <= now and c.push and not c.paused and not others_due()
    and not lane_paused(lane) and flow_take_one(now) then
    next_job = lease_job(nxt, f, now, lease_ms, chain)
  else
    local at = math.max(now, avail)
    ready_lane(lane, at, now)
    first_at = first_at and math.min(first_at, at) or at
  end
end
if not next_job[1] then
  reindex_leases()
end
local wait_ms = first_at and math.max(0, first_at - now) or -1
return { 'ok', {}, next_job, wait_ms }
