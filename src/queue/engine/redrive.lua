-- redrive: up to `max` dead jobs go back into their lanes where their seq
-- belongs (ahead of every newer job), with attempts reset. A head that has
-- started (leased, blocked or attempted) stays first. Safe to run in chunks.
-- ARGV: qid, max.
-- Returns the number of jobs redriven.
local now = clock()
local max = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', K_DEAD, 0, max - 1)
local became_head = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', K_DEAD, id)
  local r = get(id)
  if r then
    r[R_STATE], r[R_ATT], r[R_AVAIL], r[R_FINISHED] = 'queued', 0, now, false
    redis.call('ZADD', K_PENDING, r[R_SEQ], id)
    if insert_in_order(r[R_KEY], id, r) then
      became_head[#became_head + 1] = r[R_KEY]
    end
  end
end
for _, lane in ipairs(became_head) do
  ready_lane(lane, now, now)
end
if #ids > 0 then
  redis.call('ZADD', K_LIVE, 'NX', now, QID)
end
reindex()
return #ids
