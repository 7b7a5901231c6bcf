-- configure: mirror a queue definition's engine settings into K_META and
-- re-index the queue (after pause/resume or a mode change). A version older
-- than the one stored is ignored, so the copy never goes back in time.
-- ARGV: qid, push (1/0), paused (1/0), on_exhausted, retention_s, version,
-- then flow control: rate_per_s, rate_burst, max_active (0 = off).
-- Returns 1 if applied (an equal version is applied again), 0 if a newer
-- version was already there. A newer version is announced ('s<version>
-- <qid>'), so every process with an older cached definition reads it anew.
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
  'on_exhausted', ARGV[4], 'retention_s', ARGV[5], 'conf_v', version,
  'rate_per_s', ARGV[7] or '0', 'rate_burst', ARGV[8] or '0', 'max_active', ARGV[9] or '0')
-- The queue's life starts with this version (a delete removes K_META, so a
-- queue created again starts another; `conf().born`).
redis.call('HSETNX', K_META, 'born', ARGV[6])
if version > tonumber(stored[1] or '-1') then
  redis.call(PUBLISH_CMD, K_WAKE, 's' .. ARGV[6] .. ' ' .. QID)
end
conf_cache = nil
convert_legacy(now)
-- A queue without lanes has none to index from before the lane index
-- existed: its listings skip that scan (`lanes`).
if redis.call('EXISTS', K_LANES) == 0 then
  redis.call('HSETNX', K_META, 'lane_scan', 'done')
end
reindex()
flush_z(K_READY)
if ARGV[3] ~= '1' and redis.call('ZRANGEBYSCORE', K_READY, '-inf', now, 'LIMIT', 0, 1)[1] then
  wake()
end
return 1
