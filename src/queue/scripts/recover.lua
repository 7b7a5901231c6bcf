-- recover: leases that expired (a crashed or stalled holder) go back to the
-- HEAD of their lanes with attempts kept; a job whose expired lease was its
-- last attempt is exhausted per the queue policy instead.
-- KEYS[1] prefix. ARGV: max jobs to recover in this run.
-- Returns the number of jobs recovered.
local now = clock()
local budget = tonumber(ARGV[1])
local recovered = 0
local tags = redis.call('ZRANGEBYSCORE', LEASE_INDEX, '-inf', now, 'LIMIT', 0, 100)
for _, tag in ipairs(tags) do
  local b = base(tag)
  local ids = redis.call('ZRANGEBYSCORE', b .. 'leases', '-inf', now, 'LIMIT', 0, budget - recovered)
  for _, id in ipairs(ids) do
    local jk = b .. 'job:' .. id
    local f = redis.call('HMGET', jk, 'state', 'key', 'attempts', 'max_attempts')
    redis.call('ZREM', b .. 'leases', id)
    if f[1] == 'active' and f[2] then
      redis.call('HDEL', jk, 'lease_token', 'lease_expires_at')
      redis.call('HSET', jk, 'last_error', 'lease expired before an outcome was reported')
      if tonumber(f[3] or '0') >= tonumber(f[4] or '1') then
        exhaust(tag, b, jk, id, f[2], now)
      else
        redis.call('HSET', jk, 'state', 'queued')
        ready_lane(tag, b, f[2], now, now)
      end
      recovered = recovered + 1
    end
  end
  reindex_leases(tag, b)
  if recovered >= budget then
    break
  end
end
return recovered
