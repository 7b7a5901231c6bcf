-- lanes: read the queue's lanes with unfinished jobs, stuck first (blocked
-- heads, then the oldest heads), from the lane index. One call examines at
-- most `budget` index entries, so a page may come back short with a `next`
-- cursor (bounded work at any size). Its only writes: lanes made before the
-- lane index existed (data from an older Orderly) are indexed a step per
-- listing (`index_old_lanes`), and stale index entries are dropped.
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

-- One HSCAN step (about `budget` lanes) over K_LANES per listing, until the
-- scan is through (K_META `lane_scan`: the cursor, then 'done'); lanes
-- indexed already are skipped. A fresh queue finishes on its first listing.
local function index_old_lanes()
  local cursor = redis.call('HGET', K_META, 'lane_scan')
  if cursor == 'done' then
    return
  end
  local step = redis.call('HSCAN', K_LANES, cursor or '0', 'COUNT', budget)
  for i = 1, #step[2], 2 do
    local lane = step[2][i]
    if not redis.call('ZSCORE', K_LANE_INDEX, lane) then
      local head = cmsgpack.unpack(step[2][i + 1])
      lane_index(lane, head)
    end
  end
  redis.call('HSET', K_META, 'lane_scan', step[1] == '0' and 'done' or step[1])
end
index_old_lanes()
flush_z(K_LANE_INDEX)

local entries = redis.call('ZRANGEBYSCORE', K_LANE_INDEX, '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, budget)
local found, last = 0, nil
for i = 1, #entries, 2 do
  local lane = entries[i]
  last = entries[i + 1]
  local l = lane_get(lane)
  local v = l and lane_view(lane, l, now)
  if not l then
    redis.call('ZREM', K_LANE_INDEX, lane)
  end
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
