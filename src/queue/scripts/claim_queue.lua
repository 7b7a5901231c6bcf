-- claim_queue: a pull consumer leases up to `max` startable lane heads of one
-- queue (distinct lanes), oldest-ready first. A paused queue, or one that is
-- (now) a push queue, simply has nothing to claim.
-- KEYS[1] prefix. ARGV: tag, max, lease_ms, token (a random base; the i-th
-- lease gets '<base>-<i>').
-- Returns { wait_ms, job1-fields, job2-fields, ... }; wait_ms as in claim_push.
local now = clock()
local tag, max, lease_ms, token = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local b = base(tag)
local out = { -1 }
local c = conf(b)
if c.paused or c.push then
  return out
end
local lanes = redis.call('ZRANGEBYSCORE', b .. 'ready', '-inf', now, 'LIMIT', 0, max)
for i, lane in ipairs(lanes) do
  local job = lease_head(tag, b, lane, now, lease_ms, token .. '-' .. i)
  if job then
    out[#out + 1] = job
  end
end
local nxt = redis.call('ZRANGE', b .. 'ready', 0, 0, 'WITHSCORES')
if nxt[1] then
  out[1] = math.max(0, tonumber(nxt[2]) - now)
end
return out
