-- ack: the live lease holder completed the job. The head leaves its lane and
-- the next job of the lane becomes ready. (The push worker's acks, which may
-- lease the lane's next job, are `chain`.)
-- ARGV: qid, id, lease_no, token, result.
-- Returns { 'ok', job } or { 'lease_lost', job-or-empty }. A repeat of an
-- ack or nack that already produced an outcome under this lease answers
-- that outcome again (a lost reply is retried safely): { outcome, job,
-- 'repeat' }.
local now = clock()
local id, lease_no, token, result = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local r = live_lease(id, lease_no, token, now)
if not r then
  local outcome, old = repeated(id, lease_no, token)
  if outcome then
    return { outcome, view(id, old), 'repeat' }
  end
  return { 'lease_lost', old and view(id, old) or {} }
end
-- The lease index is made exact after `retire`, so a queue left without
-- leases is due for trimming its finished records (reindex_leases).
local lane, nxt = complete(id, r, token, result, now, true)
local completed = redis.call('HINCRBY', K_META, 'completed', 1)
rate_add('completed', now, 1)
retire(id, r, now, completed)
settle_live()
ready_next(lane, nxt, now)
reindex_leases()
return { 'ok', view(id, r) }
