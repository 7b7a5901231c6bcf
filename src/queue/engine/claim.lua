-- claim: lease up to `max` startable lane heads of one queue (distinct
-- lanes), oldest-ready first. A lane leaves K_READY while its head is leased,
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
local lanes = redis.call('ZRANGEBYSCORE', K_READY, '-inf', now, 'LIMIT', 0, max)
for i, lane in ipairs(lanes) do
  local job = lease_head(lane, now, lease_ms, token .. '-' .. i)
  if job then
    out[#out + 1] = job
  end
end
local first = c.push and reindex() or nil
if not c.push then
  local nxt = redis.call('ZRANGE', K_READY, 0, 0, 'WITHSCORES')
  first = nxt[1] and tonumber(nxt[2])
end
if first then
  out[1] = math.max(0, first - now)
end
return out
