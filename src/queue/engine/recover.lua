-- recover: leases of this queue that expired (a crashed or stalled holder)
-- go back to the HEAD of their lanes with attempts kept. On a pull queue a
-- job whose expired lease was its last attempt is exhausted per the queue
-- policy instead (its consumer had it and never answered). Not on a push
-- queue: the worker extends a lease while its delivery runs and reports
-- every outcome, so an expired push lease means Orderly itself lost the
-- delivery — its process died, or could not reach Redis in time — maybe
-- before the job was sent (a lane's next job is leased with the previous
-- one's ack): the job is delivered again, so none is dead-lettered without
-- a delivery that failed.
-- Records whose retention ended are trimmed too (up to `max`), so a queue
-- that has gone quiet does not keep them.
-- ARGV: qid, max jobs to recover (and to trim) in this run.
-- Returns { id, state, id, state, ... } of the jobs recovered: 'queued', or
-- 'dead' / 'blocked' for a pull job exhausted.
local now = clock()
local max = tonumber(ARGV[2])
local recovered = {}
convert_legacy(now)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now, 'LIMIT', 0, max)) do
  zrem_later(K_LEASES, id)
  lease_count_add(-1)
  local r = get(id)
  if r and r[R_STATE] == 'active' then
    r[R_TOK], r[R_LEXP] = false, false
    r[R_ERR] = 'lease expired before an outcome was reported'
    local state = 'queued'
    if not conf().push and (r[R_ATT] or 0) >= (r[R_MAX] or 1) then
      state = exhaust(id, r, r[R_KEY], now)
    else
      r[R_STATE] = 'queued'
      put(id, r)
      ready_lane(r[R_KEY], now, now)
    end
    recovered[#recovered + 1] = id
    recovered[#recovered + 1] = state
  end
end
trim(now, max)
reindex_leases()
settle_live()
if #recovered > 0 then
  -- Expired leases freed slots (`max_active_lanes`), even where no lane was
  -- readied (the job blocked, or its lane is empty now).
  flow_slot_freed()
end
return recovered
