-- release: the lease holder gives the job back without an outcome (shutdown,
-- worker restart). The job returns to the HEAD of its lane, attempts kept.
-- KEYS[1] prefix. ARGV: tag, id, lease_no, token.
-- Returns 1 if released, 0 if the lease was no longer live.
local now = clock()
local tag, id, lease_no, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local b = base(tag)
local jk = b .. 'job:' .. id
local lane = live_lease(jk, lease_no, token, now)
if not lane then
  return 0
end
drop_lease(tag, b, jk, id)
redis.call('HSET', jk, 'state', 'queued')
ready_lane(tag, b, lane, now, now)
return 1
