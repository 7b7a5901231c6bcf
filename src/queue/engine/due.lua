-- due: queues of one slot group whose entry in an index (KEYS[1]: the push
-- due index or the lease index) is due now. Reads only; the per-queue
-- scripts keep the indexes.
-- ARGV: max entries.
-- Returns { ms until the next entry is due or -1, qid1, qid2, ... }.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = { -1 }
for _, qid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  out[#out + 1] = qid
end
if #out > 1 then
  out[1] = 0
else
  local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if later[1] then
    out[1] = tonumber(later[2]) - now
  end
end
return out
