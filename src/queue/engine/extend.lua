-- extend: the live lease holder keeps the job for `lease_ms` more from now.
-- ARGV: qid, id, lease_no, token, lease_ms.
-- Returns { 'ok', job } or { 'lease_lost', job-or-empty }.
local now = clock()
local id, lease_no, token, lease_ms = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local r = live_lease(id, lease_no, token, now)
if not r then
  return { 'lease_lost', get_view(id) }
end
r[R_LEXP] = now + lease_ms
put(id, r)
zadd_later(K_LEASES, r[R_LEXP], id)
reindex_leases()
return { 'ok', view(id, r) }
