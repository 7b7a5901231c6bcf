-- Takes `cost` tokens from one tenant's publish bucket, or none.
-- KEYS[1]  the tenant's bucket: hash {t = tokens left, at = ms of that count}
-- ARGV[1]  refill rate, tokens per second (> 0)
-- ARGV[2]  capacity (> 0)
-- ARGV[3]  cost: the jobs of this request
-- Returns 0 when admitted, else the ms until `cost` tokens are there
-- (-1 when the cost is over the capacity: it never fits).
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if cost > capacity then
  return -1
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
end
if tokens < cost then
  return math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', tokens - cost, 'at', now)
-- A full bucket is the same as none: let idle tenants' keys go.
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return 0
