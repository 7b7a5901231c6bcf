-- delete: removes every key of the queue and its group-index entries in one
-- atomic run, so no publish, claim or ack of any process can interleave; a
-- queue created again under the name starts afresh (seq from 1).
-- Idempotency keys expire by themselves; publish ignores any of the
-- queue's earlier life (they name the `born` version K_META loses here).
-- The settings version of the deleted queue stays behind for a day as a
-- tombstone: a settings copy of that version or older (a refresh by another
-- process that read the definition before the delete) is refused, so it
-- cannot make the deleted queue publishable again; a queue created again
-- has a newer version.
-- ARGV: qid.
local version = redis.call('HGET', K_META, 'conf_v')
redis.call('UNLINK', K_META, K_JOBS, K_BODY, K_LANES, K_READY, K_LEASES, K_ORDER,
  K_PENDING, K_DELAYED, K_DEAD, K_BLOCKED, K_EXPIRY, K_RATE,
  K_LANE_INDEX, K_LANE_PAUSED, K_HOT, K_PRIO)
if version then
  redis.call('HSET', K_META, 'deleted_v', version)
  redis.call('EXPIRE', K_META, 86400)
end
redis.call('ZREM', K_DUE, QID)
redis.call('ZREM', K_LEASE_DUE, QID)
redis.call('ZREM', K_LIVE, QID)
return 1
