-- cancel: a job that is waiting (queued, delayed or retrying, not leased)
-- leaves its lane for good; if it was the head the next job is readied.
-- ARGV: qid, id.
-- Returns { 'ok'|'not_found'|'not_cancellable', job-or-empty }.
local now = clock()
local id = ARGV[2]
local r = get(id)
if not r then
  return { 'not_found', {} }
end
local state = r[R_STATE]
if state ~= 'queued' and state ~= 'delayed' and state ~= 'retrying' then
  return { 'not_cancellable', view(id, r) }
end
local lane = r[R_KEY]
local was_head, nxt = lane_remove(lane, id, r)
r[R_STATE], r[R_FINISHED] = 'cancelled', now
put(id, r)
local cancelled = redis.call('HINCRBY', K_META, 'cancelled', 1)
retire(id, r, now, cancelled, true)
settle_live()
-- Due for trimming even if nothing else happens in the queue (finished
-- leases schedule it through reindex_leases; a cancel holds no lease).
redis.call('ZADD', K_LEASE_DUE, 'NX', now + conf().retention_s * 1000 + TRIM_SLACK_MS, QID)
if was_head then
  zrem_later(K_READY, lane)
  ready_next(lane, nxt, now)
  reindex()
end
return { 'ok', view(id, r) }
