-- chain: the push worker's completed deliveries of one queue, in one run
-- (its group commit). Each is acked as `ack` would; then, when the lane's
-- next job may start now and no other push work of the queue's slot group is
-- due, that job is leased to the worker right here under the item's chain
-- token, so a busy lane costs no claim and no wake-up. Counters, the lease
-- index and the live set are updated once per run.
-- A repeat of an item (its reply was lost) answers 'ok' with the lane head
-- the first run leased under the same chain token, if it is still so leased.
-- ARGV: qid, lease_ms, n, then n groups of 5: id, lease_no, token, result,
-- chain token.
-- Returns n items { 'ok'|'lease_lost', next-job-or-empty }, then wait_ms (as
-- in claim: -1 when no lane of the queue is scheduled).
local now = clock()
local lease_ms, n = tonumber(ARGV[2]), tonumber(ARGV[3])
lease_index_at_end = true
local c = conf()

-- The queue's earliest ready lane (acked lanes are not in K_READY: they
-- were leased), kept up to date as lanes are readied below.
flush_z(K_READY)
local first = redis.call('ZRANGE', K_READY, 0, 0, 'WITHSCORES')
local first_at = first[1] and tonumber(first[2])

-- Other push work due now: leave the lane to claim order, so busy lanes
-- cannot starve the others. Other queues of the group are looked up once.
local group_busy = nil
local function others_due()
  if first_at and first_at <= now then
    return true
  end
  if group_busy == nil then
    group_busy = false
    for _, qid in ipairs(redis.call('ZRANGEBYSCORE', K_DUE, '-inf', now, 'LIMIT', 0, 2)) do
      if qid ~= QID then
        group_busy = true
      end
    end
  end
  return group_busy
end

local out, completed = {}, {}
for i = 0, n - 1 do
  local o = 4 + i * 5
  local id, lease_no, token, result, chain = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], ARGV[o + 4]
  local next_job = {}
  local r = live_lease(id, lease_no, token, now)
  if not r then
    local outcome, old = repeated(id, lease_no, token)
    local head = outcome == 'completed' and lane_head(old[R_KEY])
    local h = head and get(head)
    if h and h[R_STATE] == 'active' and h[R_TOK] == chain then
      next_job = view(head, h)
    end
    out[#out + 1] = { outcome and 'ok' or 'lease_lost', next_job }
  else
    local lane, nxt, f = complete(id, r, token, result, now, true)
    completed[#completed + 1] = id
    completed[#completed + 1] = r
    if nxt then
      local avail = (f and f[R_AVAIL]) or now
      -- (flow_take_one last: it spends a token, only when the chain happens.)
      if f and avail <= now and c.push and not c.paused and not others_due()
        and not lane_paused(lane) and flow_take_one(now) then
        next_job = lease_job(nxt, f, now, lease_ms, chain)
      else
        local at = math.max(now, avail)
        ready_lane(lane, at, now)
        first_at = first_at and math.min(first_at, at) or at
      end
    end
    out[#out + 1] = { 'ok', next_job }
  end
end
if #completed > 0 then
  retire_completed(completed, now)
  settle_live()
end
reindex_leases()
out[#out + 1] = first_at and math.max(0, first_at - now) or -1
return out
