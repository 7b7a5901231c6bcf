-- extend: the live lease holder keeps the job for `lease_ms` more from now.
-- KEYS[1] prefix. ARGV: tag, id, lease_no, token, lease_ms.
-- Returns { 'ok', job-fields } or { 'lease_lost', job-fields }.
local now = clock()
local tag, id, lease_no, token, lease_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local b = base(tag)
local jk = b .. 'job:' .. id
if not live_lease(jk, lease_no, token, now) then
  return { 'lease_lost', redis.call('HGETALL', jk) }
end
local expires = now + lease_ms
redis.call('HSET', jk, 'lease_expires_at', expires)
redis.call('ZADD', b .. 'leases', expires, id)
reindex_leases(tag, b)
return { 'ok', redis.call('HGETALL', jk) }
