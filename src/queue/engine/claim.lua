-- claim: lease up to `max` startable lane heads of one queue (distinct
-- lanes), higher head priority first, then oldest-ready first (`due_lanes`),
-- as far as the queue's flow control allows (`flow_allow`: a throttled queue
-- answers when its next token is due, or -1 while `max_active_lanes` leases
-- are out, as the script that ends a lease wakes the claimers). Paused lanes
-- are not in K_READY. A lane leaves K_READY while its head is leased,
-- so no lane is ever leased twice. A paused queue, or one of the other mode
-- (`mode` is 'push' for the worker, 'pull' for consumers), has nothing.
-- ARGV: qid, max, lease_ms, token base (the i-th lease gets '<base>-<i>'), mode.
-- Returns { wait_ms, job1, job2, ... }: wait_ms is -1 when no lane is
-- scheduled, else ms until the next one is due (0: more are startable now).
local now = clock()
local max, lease_ms, token, mode = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local out = { -1 }
local c = conf()
if c.paused or c.push ~= (mode == 'push') then
  return out
end
local allowed = flow_allow(max, now)
for i, lane in ipairs(due_lanes(allowed, now)) do
  local job = lease_head(lane, now, lease_ms, token .. '-' .. i)
  if job then
    out[#out + 1] = job
  end
end
flow_spend(#out - 1, now)
local first = c.push and reindex() or nil
if not c.push then
  local nxt = redis.call('ZRANGE', K_READY, 0, 0, 'WITHSCORES')
  first = nxt[1] and tonumber(nxt[2])
end
-- Throttled with lanes still due: come back at the next token (the push
-- due entry moves there too, so polls do not spin), or when a lease ends.
if first and first <= now then
  local more, refill_in = flow_allow(1, now)
  if more == 0 then
    first = refill_in and now + refill_in or nil
    if c.push and first then
      redis.call('ZADD', K_DUE, first, QID)
    elseif c.push then
      redis.call('ZREM', K_DUE, QID)
    end
  end
end
if first then
  out[1] = math.max(0, first - now)
end
return out
