-- outcomes: a pull consumer's outcomes for many leased jobs of one queue, in
-- order, in one run (batch ack/nack; `claim` with `acks`/`nacks`). Each item
-- is applied as `ack` / `fail` would (a repeat of an outcome its lease
-- already produced answers that outcome); counters, the lease index and the
-- live set are updated once per run.
-- ARGV: qid, n, then n groups of 9: kind ('a'|'n'), id, lease_no, token,
-- result (ack) or error (nack), mode, a, b, jitter (nack; as in fail.lua).
-- Returns one status per item: 'completed', 'retrying', 'dead', 'blocked',
-- 'lease_lost' or 'not_found'.
local now = clock()
local n = tonumber(ARGV[2])
local out, completed, finished = {}, {}, 0
for i = 0, n - 1 do
  local o = 3 + i * 9
  local kind, id, lease_no, token = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
  local r = live_lease(id, lease_no, token, now)
  local status
  if not r then
    local outcome, old = repeated(id, lease_no, token)
    status = outcome or (old and 'lease_lost' or 'not_found')
  elseif kind == 'a' then
    local lane, nxt = complete(id, r, token, ARGV[o + 4], now, true)
    completed[#completed + 1] = id
    completed[#completed + 1] = r
    ready_next(lane, nxt, now)
    status = 'completed'
  else
    status = fail_attempt(id, r, token, ARGV[o + 4], ARGV[o + 5], tonumber(ARGV[o + 6]),
      tonumber(ARGV[o + 7]), tonumber(ARGV[o + 8]), now, true)
  end
  out[#out + 1] = status
end
if #completed > 0 then
  local count = #completed / 2
  local total = redis.call('HINCRBY', K_META, 'completed', count)
  rate_add('completed', now, count)
  for j = 1, #completed, 2 do
    retire(completed[j], completed[j + 1], now, total - count + (j + 1) / 2)
  end
end
reindex_leases()
settle_live()
return out
