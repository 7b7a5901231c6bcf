-- claim_push: the worker leases up to `max` startable lane heads across all
-- push queues, oldest-ready first. A lane leaves {q}:ready while its head is
-- leased, so no lane is ever leased twice.
-- KEYS[1] prefix. ARGV: max, lease_ms, token (a random base: the n-th lease
-- of this run gets token '<base>-<n>', unique per lease and as unguessable).
-- Returns { wait_ms, tag1, job1-fields, tag2, job2-fields, ... } where
-- wait_ms is -1 when no push queue has a ready lane, else ms until the next
-- one is due (0 when more are startable now).
local now = clock()
local max, lease_ms, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local out = { -1 }
local claimed = 0
local guard = 0
while claimed < max and guard < 1000 do
  guard = guard + 1
  local q = redis.call('ZRANGEBYSCORE', PUSH_INDEX, '-inf', now, 'LIMIT', 0, 1)
  if not q[1] then
    break
  end
  local tag = q[1]
  local b = base(tag)
  local lanes = redis.call('ZRANGEBYSCORE', b .. 'ready', '-inf', now, 'LIMIT', 0, max - claimed)
  for _, lane in ipairs(lanes) do
    claimed = claimed + 1
    local job = lease_head(tag, b, lane, now, lease_ms, token .. '-' .. claimed)
    if job then
      out[#out + 1] = tag
      out[#out + 1] = job
    end
  end
  reindex(tag, b)
end
local nxt = redis.call('ZRANGE', PUSH_INDEX, 0, 0, 'WITHSCORES')
if nxt[1] then
  out[1] = math.max(0, tonumber(nxt[2]) - now)
end
return out
