-- list: jobs of one queue in seq order after `after`, optionally filtered by
-- state and key, examining at most `budget` entries per call. `source` is the
-- index walked: 'jobs' (every stored job) or 'dead' (the dead letters).
-- ARGV: qid, after_seq, limit, state ('' = any), key, has_key (1/0), budget, source.
-- Returns { next_seq_or_-1, job1, ... }.
local now = clock()
local after, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local state, key, has_key, budget = ARGV[4], ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])
local source = ARGV[8] == 'dead' and K_DEAD or K_ORDER
local out = { -1 }
local ids = redis.call('ZRANGEBYSCORE', source, '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, budget)
local last = nil
local found = 0
for i = 1, #ids, 2 do
  local id = ids[i]
  last = ids[i + 1]
  local r = get(id)
  if not r then
    redis.call('ZREM', source, id)
  else
    local st = r[R_STATE]
    if st == 'delayed' and r[R_AVAIL] <= now then
      st = 'queued'
    end
    if (state == '' or st == state) and (not has_key or r[R_KEY] == key) then
      out[#out + 1] = view(id, r)
      found = found + 1
      if found >= limit then
        break
      end
    end
  end
end
if last and (found >= limit or #ids / 2 >= budget) then
  out[1] = tonumber(last)
end
return out
