-- fail: the live lease holder's attempt failed. With attempts left and a
-- retryable failure the job stays at the HEAD of its lane and the lane becomes
-- ready again after `retry_in_ms`; otherwise the queue's on_exhausted policy
-- applies (dead: lane continues; block: lane stops at the job).
-- ARGV: qid, id, lease_no, token, error, retryable (1/0), retry_in_ms.
-- Returns { 'retrying'|'dead'|'blocked', job } or { 'lease_lost', job-or-empty }.
local now = clock()
local id, lease_no, token, err = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retryable, retry_in = ARGV[6] == '1', tonumber(ARGV[7])
local r = live_lease(id, lease_no, token, now)
if not r then
  return { 'lease_lost', get_view(id, true) }
end
drop_lease(id, r)
r[R_ERR] = err
if retryable and r[R_ATT] < r[R_MAX] then
  r[R_STATE] = 'retrying'
  put(id, r)
  redis.call('HINCRBY', K_META, 'retried', 1)
  ready_lane(r[R_KEY], now + retry_in, now)
  return { 'retrying', view(id, r, true) }
end
local outcome = exhaust(id, r, r[R_KEY], now)
return { outcome, view(id, r, true) }
