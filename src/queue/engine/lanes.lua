-- lanes: read the queue's lanes with unfinished jobs, stuck first (blocked
-- heads, then the oldest heads), from the lane index; reads only. One call
-- examines at most `budget` index entries, so a page may come back short
-- with a `next` cursor (bounded work at any size).
-- ARGV: qid, mode ('list' | 'one'), then for 'list': after (index score,
-- -1 = from the start), limit, state ('' = any), budget; for 'one': key.
-- Returns { next_or_-1, now, lane views... } (`lane_view` in lib.lua).
local now = clock()
local out = { -1, now }
if ARGV[2] == 'one' then
  local l = lane_get(ARGV[3])
  local v = l and lane_view(ARGV[3], l, now)
  if v then
    out[3] = v
  end
  return out
end
local after, limit, state, budget = ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local entries = redis.call('ZRANGEBYSCORE', K_LANE_INDEX, '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, budget)
local found, last = 0, nil
for i = 1, #entries, 2 do
  local lane = entries[i]
  last = entries[i + 1]
  local l = lane_get(lane)
  local v = l and lane_view(lane, l, now)
  if v and (state == '' or v[2] == state) then
    out[#out + 1] = v
    found = found + 1
    if found >= limit then
      break
    end
  end
end
if last and (found >= limit or #entries / 2 >= budget) then
  out[1] = last
end
return out
