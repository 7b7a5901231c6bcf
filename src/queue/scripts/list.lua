-- list: jobs of one queue in seq order after `after`, optionally filtered by
-- state and key, examining at most `budget` entries per call. `source` is the
-- index walked: 'jobs' (every stored job) or 'dead' (the dead letters).
-- KEYS[1] prefix. ARGV: tag, after_seq, limit, state ('' = any), key ('' with
-- has_key 0 = any), has_key (1/0), budget, source.
-- Returns { next_seq_or_-1, job1-fields, ... }.
local now = clock()
local tag, after, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local state, key, has_key, budget = ARGV[4], ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])
local source = ARGV[8] == 'dead' and 'dead' or 'jobs'
local b = base(tag)
local out = { -1 }
local ids = redis.call('ZRANGEBYSCORE', b .. source, '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, budget)
local last = nil
local found = 0
for i = 1, #ids, 2 do
  local id, seq = ids[i], ids[i + 1]
  last = seq
  local jk = b .. 'job:' .. id
  local f = redis.call('HMGET', jk, 'state', 'key', 'available_at')
  if not f[1] then
    redis.call('ZREM', b .. source, id)
  else
    local st = f[1]
    if st == 'delayed' and tonumber(f[3]) <= now then
      st = 'queued'
    end
    if (state == '' or st == state) and (not has_key or f[2] == key) then
      out[#out + 1] = redis.call('HGETALL', jk)
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
