-- redrive: up to `max` dead jobs, lowest seq first, go back into their lanes
-- where their seq belongs (ahead of every newer job), with attempts reset. A
-- head that keeps its place (`head_keeps_place`: leased, blocked, or with
-- older jobs sent back earlier behind it) stays first. One run
-- does bounded work (at most `max` jobs and the lane-walk budget of
-- lib.lua); the caller runs it again until nothing is left to move.
-- ARGV: qid, max.
-- Returns { moved, dead jobs left, 1 if the walk budget stopped the run }.
local now = clock()
local max = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', K_DEAD, 0, max - 1)
local became_head = {}
local moved, stopped = 0, 0
for _, id in ipairs(ids) do
  local r = get(id)
  if not r then
    redis.call('ZREM', K_DEAD, id)
  else
    r[R_STATE], r[R_ATT], r[R_AVAIL], r[R_FINISHED], r[R_STARTED] = 'queued', 0, now, false, false
    local head = insert_in_order(r[R_KEY], id, r)
    if head == nil then
      stopped = 1
      break
    end
    redis.call('ZREM', K_DEAD, id)
    if head then
      became_head[#became_head + 1] = r[R_KEY]
    end
    moved = moved + 1
  end
end
for _, lane in ipairs(became_head) do
  ready_lane(lane, now, now)
end
if moved > 0 then
  redis.call('HINCRBY', K_META, 'pending', moved)
  redis.call('ZADD', K_LIVE, 'NX', now, QID)
end
reindex()
return { moved, redis.call('ZCARD', K_DEAD), stopped }
