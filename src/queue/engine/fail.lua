-- fail: the live lease holder's attempt failed (`fail_attempt` in lib.lua:
-- retry after a delay at the head of the lane, or the queue's on_exhausted
-- policy).
-- ARGV: qid, id, lease_no, token, error, mode ('retry'|'backoff'|'permanent'),
-- a, b, jitter.
-- Returns { 'retrying'|'dead'|'blocked', job } or { 'lease_lost', job-or-empty };
-- a repeat of an ack or nack that already produced an outcome under this
-- lease answers { that outcome, job, 'repeat' } and changes nothing.
local now = clock()
local id, lease_no, token, err = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local mode, a, b, jitter = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local r = live_lease(id, lease_no, token, now)
if not r then
  local outcome, old = repeated(id, lease_no, token)
  if outcome then
    return { outcome, view(id, old), 'repeat' }
  end
  return { 'lease_lost', old and view(id, old) or {} }
end
local outcome = fail_attempt(id, r, token, err, mode, a, b, jitter, now, false)
return { outcome, view(id, r) }
