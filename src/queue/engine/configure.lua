-- configure: mirror a queue definition's engine settings into K_META and
-- re-index the queue (after pause/resume or a mode change). A version older
-- than the one stored is ignored, so the copy never goes back in time.
-- ARGV: qid, push (1/0), paused (1/0), on_exhausted, retention_s, version.
-- Returns 1 if applied (an equal version is applied again), 0 if a newer
-- version was already there.
local now = clock()
local version = tonumber(ARGV[6])
local stored = redis.call('HMGET', K_META, 'conf_v', 'deleted_v')
if version < tonumber(stored[1] or '-1') or version <= tonumber(stored[2] or '-1') then
  return 0
end
if stored[2] then
  -- Created again after a delete: the tombstone goes.
  redis.call('HDEL', K_META, 'deleted_v')
  redis.call('PERSIST', K_META)
end
redis.call('HSET', K_META, 'push', ARGV[2], 'paused', ARGV[3],
  'on_exhausted', ARGV[4], 'retention_s', ARGV[5], 'conf_v', version)
conf_cache = nil
reindex()
if ARGV[3] ~= '1' and redis.call('ZRANGEBYSCORE', K_READY, '-inf', now, 'LIMIT', 0, 1)[1] then
  wake()
end
return 1
