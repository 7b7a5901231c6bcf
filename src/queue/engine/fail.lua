-- fail: the live lease holder's attempt failed. With attempts left and a
-- retryable failure the job stays at the HEAD of its lane and the lane becomes
-- ready again after a delay; otherwise the queue's on_exhausted policy
-- applies (dead: lane continues; block: lane stops at the job).
-- The delay is `a` ms (mode 'retry'), or the queue's exponential backoff
-- from the job's attempts (mode 'backoff': initial `a`, cap `b`, "equal
-- jitter": half the step fixed, half `jitter` (0..1) of it) — the one place
-- backoff is computed, for the push worker and for nack alike.
-- ARGV: qid, id, lease_no, token, error, mode ('retry'|'backoff'|'permanent'),
-- a, b, jitter.
-- Returns { 'retrying'|'dead'|'blocked', job } or { 'lease_lost', job-or-empty };
-- a repeat of an ack or nack that already produced an outcome under this
-- lease answers { that outcome, job } and changes nothing.
local now = clock()
local id, lease_no, token, err = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local mode, a, b, jitter = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local r = live_lease(id, lease_no, token, now)
if not r then
  local outcome, old = repeated(id, lease_no, token)
  return { outcome or 'lease_lost', old and view(id, old, true) or {} }
end
drop_lease(id, r)
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
  settle_lease(r, token, 'retrying')
  put(id, r)
  redis.call('HINCRBY', K_META, 'retried', 1)
  ready_lane(r[R_KEY], now + retry_in, now)
  return { 'retrying', view(id, r, true) }
end
local outcome = exhaust(id, r, r[R_KEY], now)
return { outcome, view(id, r, true) }
