/** The API's objects as TypeScript types. */

export type JobState =
  | "queued"
  | "delayed"
  | "active"
  | "retrying"
  | "blocked"
  | "completed"
  | "dead"
  | "cancelled";

/** A job object. `lease` and `lease_expires_at` are set on claimed jobs. */
export interface Job<P = unknown, R = unknown> {
  id: string;
  queue: string;
  key: string;
  seq: number;
  state: JobState;
  payload: P;
  attempts: number;
  max_attempts: number;
  result: R | null;
  last_error: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  available_at?: string;
  lease?: string;
  lease_expires_at?: string;
  /** Set in an ack's or nack's reply: what that lease's outcome was. */
  outcome?: string;
}

/**
 * A publish that repeated an `Idempotency-Key` whose original job is gone
 * (past its queue's `retention_s`): the server answers `200` with only this,
 * and enqueues nothing. (The API's `ExpiredDuplicate`.)
 */
export interface ExpiredJob {
  /** The original job's id (it can no longer be read). */
  id: string;
  queue: string;
  state: "expired";
}

/**
 * What a single publish answers: the job (new, or the original one for a
 * repeated `Idempotency-Key`), or {@link ExpiredJob} when that original is
 * gone. Narrow on `state === "expired"` (or use `isExpired`) before reading
 * the job's other fields.
 */
export type Published<P = unknown> = Job<P> | ExpiredJob;

/** One job to publish. */
export interface PublishItem<P = unknown> {
  payload: P;
  /** The ordering lane (≤ 128 characters). */
  key?: string;
  /** Do not start before this many ms. */
  delay_ms?: number;
  /** In a batch: this job's own idempotency key (it takes precedence over the batch's). */
  idempotency_key?: string;
  /**
   * 0–9 (default 0): among lanes whose heads may start, a head with a higher
   * priority starts first; within a lane the order never changes.
   */
  priority?: number;
}

export interface PublishOptions {
  /** The ordering lane (≤ 128 characters). */
  key?: string;
  /** Do not start before this many ms. */
  delay_ms?: number;
  /**
   * 0–9 (default 0): among lanes whose heads may start, a head with a higher
   * priority starts first; within a lane the order never changes.
   */
  priority?: number;
  /** Publish at most once under this key; generated once per call when absent. */
  idempotencyKey?: string;
}

/** Completes a leased job. */
export interface Ack {
  id: string;
  lease: string;
  result?: unknown;
}

/** Fails a leased job's attempt. */
export interface Nack {
  id: string;
  lease: string;
  error?: string;
  retry_in_ms?: number;
}

export type OutcomeStatus = "completed" | "retrying" | "dead" | "blocked" | "lease_lost" | "not_found";

/** What became of one reported ack or nack. */
export interface Outcome {
  id: string;
  status: OutcomeStatus;
}

export interface ClaimOptions {
  /** Long-poll up to this many ms (≤ 30000). */
  wait_ms?: number;
  /** Up to this many jobs, each of a different lane (1–100). */
  max_jobs?: number;
  /** Reported before jobs are leased. */
  acks?: Ack[];
  nacks?: Nack[];
  /**
   * 1–64 visible ASCII characters (e.g. `randomUUID()`): while the leases it
   * took live, repeating the claim with it answers the same jobs and leases
   * (and its acks / nacks the outcomes they already produced), so a claim
   * whose reply was lost can be repeated without stranding a lane.
   */
  claim_id?: string;
}

export interface PublishBatchOptions {
  /**
   * The whole batch's `Idempotency-Key` (job i gets `<key>#<i>` unless it has
   * its own `idempotency_key`); generated once per call when absent.
   */
  idempotencyKey?: string;
}

/** The reply of a claim. */
export interface Claimed<P = unknown> {
  jobs: Job<P>[];
  /** Outcomes of the claim's acks then nacks, in order. */
  results: Outcome[];
}
