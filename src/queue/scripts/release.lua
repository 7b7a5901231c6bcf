-- release: the lease holder gives the job back without an outcome. The job
-- returns to the HEAD of its lane, ready after `delay_ms`. With `undo` = 1 the
-- claim did not start a delivery (settings unavailable, wrong mode), so its
-- attempt is not counted; otherwise (shutdown, restart) attempts are kept.
-- KEYS[1] prefix. ARGV: tag, id, lease_no, token, delay_ms, undo (1/0).
-- Returns 1 if released, 0 if the lease was no longer live.
local now = clock()
local tag, id, lease_no, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local delay, undo = tonumber(ARGV[5]), ARGV[6] == '1'
local b = base(tag)
local jk = b .. 'job:' .. id
local lane = live_lease(jk, lease_no, token, now)
if not lane then
  return 0
end
drop_lease(tag, b, jk, id)
redis.call('HSET', jk, 'state', 'queued')
if undo then
  local attempts = redis.call('HINCRBY', jk, 'attempts', -1)
  if attempts <= 0 then
    redis.call('HSET', jk, 'attempts', 0)
    redis.call('HDEL', jk, 'started_at')
  end
end
ready_lane(tag, b, lane, now + delay, now)
return 1
