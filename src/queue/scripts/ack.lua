-- ack: the live lease holder completed the job. The head leaves its lane and
-- the next job of the lane becomes ready.
-- KEYS[1] prefix. ARGV: tag, id, lease_no, token, result.
-- Touches {q}:job:<id>, {q}:lane:<key>, {q}:leases, {q}:pending, {q}:ready,
-- {q}:counts, {q}:expiry, {q}:jobs and the global indexes.
-- Returns { 'ok', job-fields } or { 'lease_lost', job-fields-or-empty }.
local now = clock()
local tag, id, lease_no, token, result = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local b = base(tag)
local jk = b .. 'job:' .. id
local lane = live_lease(jk, lease_no, token, now)
if not lane then
  return { 'lease_lost', redis.call('HGETALL', jk) }
end
drop_lease(tag, b, jk, id)
redis.call('HSET', jk, 'state', 'completed', 'result', result, 'finished_at', now)
redis.call('HINCRBY', b .. 'counts', 'completed', 1)
rate_add(b, 'completed', now, 1)
redis.call('LPOP', b .. 'lane:' .. lane)
retire(b, jk, id, now, conf(b).retention_s)
advance_lane(tag, b, lane, now)
return { 'ok', redis.call('HGETALL', jk) }
