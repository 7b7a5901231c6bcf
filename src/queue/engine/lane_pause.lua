-- lane_pause: pause or resume one lane. A paused lane leaves K_READY (and
-- K_HOT) and remembers when its head may start (K_LANE_PAUSED; '' while its
-- head is leased, blocked or not readied); whatever readies it meanwhile (an
-- ack, a retry, a recovery) only updates that time (`park_if_paused`), so
-- the lane keeps its place and order and is never lost. Resume readies it
-- at that time. Idempotent both ways; a lane may be paused before it has
-- jobs.
-- ARGV: qid, lane key, '1' (pause) | '0' (resume).
-- Returns { changed (1/0), now, lane view or nothing }.
local now = clock()
local lane, pause = ARGV[2], ARGV[3] == '1'
local changed = 0
local parked = redis.call('HGET', K_LANE_PAUSED, lane)
if pause and not parked then
  flush_z(K_READY)
  local at = redis.call('ZSCORE', K_READY, lane)
  zrem_later(K_READY, lane)
  unhot(lane)
  redis.call('HSET', K_LANE_PAUSED, lane, at or '')
  some_lane_paused = true
  reindex()
  changed = 1
elseif not pause and parked then
  redis.call('HDEL', K_LANE_PAUSED, lane)
  some_lane_paused = nil
  if parked ~= '' and lane_get(lane) then
    ready_lane(lane, tonumber(parked), now)
  end
  changed = 1
end
local out = { changed, now }
local l = lane_get(lane)
local v = l and lane_view(lane, l, now)
if v then
  out[3] = v
end
return out
