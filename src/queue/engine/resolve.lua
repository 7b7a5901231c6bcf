-- resolve: the owner resolves a stopped job.
--   retry: a blocked head becomes startable again (attempts reset); a dead
--          job goes back into its lane where its seq belongs (a redrive of one).
--   skip:  a blocked head is dead-lettered and its lane continues.
-- ARGV: qid, id, action ('retry' | 'skip').
-- Returns { 'ok' | 'not_found' | 'conflict', job-or-empty }, or { 'again' }
-- when a dead job's lane is so long that finding its place takes more runs.
local now = clock()
local id, action = ARGV[2], ARGV[3]
local r = get(id)
if not r then
  return { 'not_found', {} }
end
local state, lane = r[R_STATE], r[R_KEY]
if action == 'retry' and state == 'blocked' then
  redis.call('ZREM', K_BLOCKED, id)
  r[R_STATE], r[R_ATT] = 'queued', 0
  put(id, r)
  lane_index(lane, id, r)
  ready_lane(lane, now, now)
  return { 'ok', view(id, r) }
end
if action == 'retry' and state == 'dead' then
  r[R_STATE], r[R_ATT], r[R_AVAIL], r[R_FINISHED], r[R_STARTED] = 'queued', 0, now, false, false
  local head = insert_in_order(lane, id, r)
  if head == nil then
    -- A long lane: the walk goes on in the next run (the caller repeats).
    return { 'again', {} }
  end
  redis.call('ZREM', K_DEAD, id)
  redis.call('HINCRBY', K_META, 'pending', 1)
  redis.call('ZADD', K_LIVE, 'NX', now, QID)
  if head then
    ready_lane(lane, now, now)
    -- The lane's ready time may have gone up (its old head was ready
    -- earlier): the group's due entry follows.
    reindex()
  end
  return { 'ok', view(id, r) }
end
if action == 'skip' and state == 'blocked' then
  redis.call('ZREM', K_BLOCKED, id)
  r[R_STATE], r[R_FINISHED] = 'dead', now
  put(id, r)
  redis.call('ZADD', K_DEAD, r[R_SEQ], id)
  pending_delta = pending_delta - 1
  zrem_later(K_READY, lane)
  ready_next(lane, lane_pop(lane, id, r), now)
  reindex()
  settle_live()
  announce_finished(now)
  return { 'ok', view(id, r) }
end
return { 'conflict', view(id, r) }
