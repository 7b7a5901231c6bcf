-- release: the lease holder gives the job back without an outcome. The job
-- returns to the HEAD of its lane, ready after `delay_ms`. With `undo` = 1 the
-- claim did not start a delivery (settings unavailable, wrong mode), so its
-- attempt is not counted; otherwise (shutdown, restart) attempts are kept.
-- ARGV: qid, id, lease_no, token, delay_ms, undo (1/0).
-- Returns 1 if released, 0 if the lease was no longer live.
local now = clock()
local id, lease_no, token = ARGV[2], ARGV[3], ARGV[4]
local delay, undo = tonumber(ARGV[5]), ARGV[6] == '1'
local r = live_lease(id, lease_no, token, now)
if not r then
  return 0
end
drop_lease(id, r)
r[R_STATE] = 'queued'
if undo then
  r[R_ATT] = math.max(0, (r[R_ATT] or 1) - 1)
  if r[R_ATT] == 0 then
    r[R_STARTED] = false
  end
end
if delay > 0 then
  -- Kept in the record as a retry's time is (`fail_attempt`): a job sent
  -- back from dead ahead of this head does not cut the wait short.
  r[R_AVAIL] = now + delay
end
put(id, r)
ready_lane(r[R_KEY], now + delay, now)
return 1
