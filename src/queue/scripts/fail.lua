-- fail: the live lease holder's attempt failed. With attempts left and a
-- retryable failure the job stays at the HEAD of its lane and the lane becomes
-- ready again after `retry_in_ms`; otherwise the queue's on_exhausted policy
-- applies (dead: lane continues; block: lane stops at the job).
-- KEYS[1] prefix. ARGV: tag, id, lease_no, token, error, retryable (1/0), retry_in_ms.
-- Returns { 'retrying'|'dead'|'blocked', job-fields } or { 'lease_lost', job-fields }.
local now = clock()
local tag, id, lease_no, token, err = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retryable, retry_in = ARGV[6] == '1', tonumber(ARGV[7])
local b = base(tag)
local jk = b .. 'job:' .. id
local lane = live_lease(jk, lease_no, token, now)
if not lane then
  return { 'lease_lost', redis.call('HGETALL', jk) }
end
drop_lease(tag, b, jk, id)
redis.call('HSET', jk, 'last_error', err)
local attempts = tonumber(redis.call('HGET', jk, 'attempts'))
local max = tonumber(redis.call('HGET', jk, 'max_attempts'))
if retryable and attempts < max then
  redis.call('HSET', jk, 'state', 'retrying')
  redis.call('HINCRBY', b .. 'counts', 'retried', 1)
  ready_lane(tag, b, lane, now + retry_in, now)
  return { 'retrying', redis.call('HGETALL', jk) }
end
local outcome = exhaust(tag, b, jk, id, lane, now)
return { outcome, redis.call('HGETALL', jk) }
