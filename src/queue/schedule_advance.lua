-- Moves one schedule past the tick it was due at, once: only if the tick is
-- still the schedule's due time (another process may have moved it, or the
-- schedule may have been replaced or deleted meanwhile).
-- KEYS[1]  P:{sched}:due   zset: schedule id -> ms of its next tick
-- KEYS[2]  P:{sched}:last  hash: schedule id -> "<tick ms>:<job id>" of its last run
-- ARGV[1]  schedule id
-- ARGV[2]  the tick (ms) the caller handled
-- ARGV[3]  the next tick (ms), or "" to drop the schedule from the index
-- ARGV[4]  "<tick ms>:<job id>" when the caller published the tick, else ""
-- Returns 1 when this call moved the schedule, 0 when it had moved already.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
end
return 1
