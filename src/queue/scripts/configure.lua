-- configure: mirror a queue definition's engine-relevant settings into
-- {q}:conf and re-index the queue (e.g. after pause/resume or a mode change).
-- KEYS[1] prefix. ARGV: tag, push (1/0), paused (1/0), on_exhausted, retention_s.
local now = clock()
local tag = ARGV[1]
local b = base(tag)
redis.call('HSET', b .. 'conf', 'push', ARGV[2], 'paused', ARGV[3],
  'on_exhausted', ARGV[4], 'retention_s', ARGV[5])
local first = reindex(tag, b)
if ARGV[3] ~= '1' then
  local lanes = redis.call('ZRANGEBYSCORE', b .. 'ready', '-inf', now, 'LIMIT', 0, 1)
  if lanes[1] then
    wake(tag, b)
  end
end
return first and 1 or 0
