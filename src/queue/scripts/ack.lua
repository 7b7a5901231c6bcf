-- ack: the live lease holder completed the job. The head leaves its lane and
-- the next job of the lane becomes ready; or, when the push worker asks
-- (`chain` is a lease token) and no other push lane is waiting to start, the
-- worker leases that next head right here, so a busy lane costs one round trip
-- per job and no wake-up. The chained lease is the same as claim_push's.
-- KEYS[1] prefix. ARGV: tag, id, lease_no, token, result, chain ('' = no),
-- lease_ms (of a chained lease).
-- Touches {q}:job:<id>, {q}:lane:<key>, {q}:leases, {q}:pending, {q}:ready,
-- {q}:counts, {q}:expiry, {q}:jobs, {q}:conf and the global indexes.
-- Returns { 'ok', job-fields } or { 'lease_lost', job-fields-or-empty } without
-- `chain`; with it (the worker needs no copy of the completed job)
-- { 'ok'|'lease_lost', {}, next-job-fields-or-empty, wait_ms } with wait_ms as
-- in claim_push.
local now = clock()
local tag, id, lease_no, token, result = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local chain, lease_ms = ARGV[6] or '', tonumber(ARGV[7] or '0')
local b = base(tag)
local jk = b .. 'job:' .. id
local lane = live_lease(jk, lease_no, token, now)
if not lane then
  if chain ~= '' then
    return { 'lease_lost', {}, {}, -1 }
  end
  return { 'lease_lost', redis.call('HGETALL', jk) }
end
local wants_chain = chain ~= ''
drop_lease(tag, b, jk, id, wants_chain)
redis.call('HSET', jk, 'state', 'completed', 'result', result, 'finished_at', now)
local completed = redis.call('HINCRBY', b .. 'counts', 'completed', 1)
rate_add(b, 'completed', now, 1)
local lk = b .. 'lane:' .. lane
redis.call('LPOP', lk)
local c = conf(b)
retire(b, jk, id, now, c.retention_s, true, completed)
if not wants_chain then
  ready_next(tag, b, lane, now)
  return { 'ok', redis.call('HGETALL', jk) }
end
local waiting, wait_ms = push_due(now)
local next_job = {}
local nxt = redis.call('LINDEX', lk, 0)
local f = nxt and head_fields(b .. 'job:' .. nxt)
if f and not f[1] then
  -- The next id's hash is gone (queue deleted mid-flight): the general path.
  advance_lane(tag, b, lane, now)
  f = nil
end
if f then
  local avail = tonumber(f[5] or now)
  if avail <= now and c.push and not c.paused and not waiting then
    -- The acked lease's (earlier) expiry still holds the lease index.
    next_job = lease_job(tag, b, nxt, b .. 'job:' .. nxt, f, now, lease_ms, chain, true)
  else
    ready_lane(tag, b, lane, math.max(now, avail), now)
    local due = math.max(0, avail - now)
    wait_ms = wait_ms < 0 and due or math.min(wait_ms, due)
  end
end
if not next_job[1] then
  reindex_leases(tag, b)
end
return { 'ok', {}, next_job, wait_ms }
