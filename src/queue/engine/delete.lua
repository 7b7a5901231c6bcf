-- delete: removes every key of the queue and its group-index entries in one
-- atomic run, so no publish, claim or ack of any process can interleave; a
-- queue created again under the name starts afresh (seq from 1).
-- Idempotency keys expire by themselves; publish ignores any that names a
-- job that no longer exists.
-- ARGV: qid.
redis.call('UNLINK', K_META, K_JOBS, K_BODY, K_LANES, K_READY, K_LEASES, K_ORDER,
  K_PENDING, K_DELAYED, K_DEAD, K_BLOCKED, K_EXPIRY, K_RATE,
  K_LANE_INDEX, K_LANE_PAUSED, K_HOT, K_PRIO)
redis.call('ZREM', K_DUE, QID)
redis.call('ZREM', K_LEASE_DUE, QID)
redis.call('ZREM', K_LIVE, QID)
return 1
