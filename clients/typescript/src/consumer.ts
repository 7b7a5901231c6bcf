/**
 * `Consumer`: the pull loop. Long-poll claim, run the handlers of the
 * claim's jobs one after another while a timer keeps every lease the claim
 * took alive, and report outcomes in batches: the outcomes of one claim's
 * jobs ride on the next claim (`acks` / `nacks`), unless their leases would
 * lapse first; what is left when the loop ends goes to
 * `POST /v1/queues/{queue}/ack`.
 */

import { randomUUID } from "node:crypto";

import { Client, MAX_WAIT_MS } from "./client.js";
import { LeaseLostError, OrderlyError } from "./errors.js";
import type { Ack, ClaimOptions, Job, Nack, Outcome } from "./types.js";

/** Throw from a handler to fail the attempt and retry after `retryInMs`. */
export class Retry extends Error {
  constructor(
    message: string,
    readonly retryInMs?: number,
  ) {
    super(message);
  }
}

export type Handler<P = unknown> = (job: Job<P>) => unknown | Promise<unknown>;

export interface ConsumerOptions {
  /** Jobs per claim (1–100). Default 10. */
  maxJobs?: number;
  /** Long-poll length in ms (≤ 30000). Default 20000. */
  waitMs?: number;
  /** Lease length each heartbeat asks for; default: the queue's `lease_ms`. */
  leaseMs?: number;
  /** Called with the outcomes the server reports. */
  onResults?: (results: Outcome[]) => void;
  /**
   * Called with failures the loop carries on after: a transient failure of a
   * claim, extend or early report, and `LeaseLostError` when an extend finds a
   * lease gone (that job is not run, or its outcome is reported as
   * `lease_lost`); default: console.warn.
   */
  onError?: (err: unknown) => void;
}

/** The shortest lease the API allows (ms). */
const MIN_LEASE_MS = 1000;

/**
 * How long the job's lease runs. On a first attempt this comes from the
 * server's own timestamps (`lease_expires_at − started_at`, no clock skew
 * matters); `started_at` is the first attempt's start, so on a later attempt
 * it is estimated from `lease_expires_at` and the local clock (`now`), at
 * least the API's minimum of 1000 ms.
 */
export function leaseLengthMs(job: Job, now: number = Date.now()): number {
  if (!job.lease_expires_at) return 30_000;
  const expires = Date.parse(job.lease_expires_at);
  if (job.attempts <= 1 && job.started_at) {
    const length = expires - Date.parse(job.started_at);
    if (length > 0) return length;
  }
  return Math.max(MIN_LEASE_MS, expires - now);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A lease the consumer holds for a job that has no outcome yet. */
interface Held {
  lease: string;
  /** Set when an extend answered `409 lease_lost` (or `404`): the job is no longer this consumer's. */
  lost: boolean;
}

const isTransient = (err: unknown) => err instanceof OrderlyError && (err.status === 503 || err.status === 0);

/**
 * Runs a handler for each job of a pull queue. The handler's return value
 * (JSON) becomes the job's `result`; a throw fails the attempt with the
 * error's message as `last_error`. Jobs of one lane are never leased
 * concurrently, so lane order holds. Delivery is at-least-once: make
 * handlers idempotent. A claim that fails with a 503 or a connection failure
 * is retried unchanged under its `claim_id`.
 *
 * Every lease a claim took stays alive until its outcome is reported: while
 * a claim's jobs are handled one after another, a heartbeat every third of
 * the lease extends the leases of the jobs waiting their turn and of the one
 * running, and reports the outcomes of those already finished
 * (`POST /v1/queues/{queue}/ack`). Outcomes that are still unreported when
 * the claim's jobs are done ride on the next claim.
 */
export class Consumer<P = unknown> {
  private stopped = false;
  private acks: Ack[] = [];
  private nacks: Nack[] = [];
  /** Leases held for jobs with no outcome yet (waiting their turn or running), by job id. */
  private readonly held = new Map<string, Held>();
  /** The queue's lease length as last measured exactly (a first attempt's lease). */
  private knownLeaseMs: number | undefined;
  private readonly maxJobs: number;
  private readonly waitMs: number;

  constructor(
    readonly client: Client,
    readonly queue: string,
    readonly handler: Handler<P>,
    readonly options: ConsumerOptions = {},
  ) {
    this.maxJobs = Math.min(Math.max(options.maxJobs ?? 10, 1), 100);
    this.waitMs = Math.min(Math.max(options.waitMs ?? 20_000, 0), MAX_WAIT_MS);
  }

  /** Ends {@link run} after the current claim and jobs. */
  stop(): void {
    this.stopped = true;
  }

  /** Claims and handles jobs until stopped (or, with `exitWhenIdle`, until a claim returns no job). */
  async run({ exitWhenIdle = false }: { exitWhenIdle?: boolean } = {}): Promise<void> {
    let failures = 0;
    try {
      // One claim per request; a claim that failed with a 503 or a
      // connection failure (or timeout) is repeated as it was — same
      // claim_id, same acks and nacks — and answers the jobs and leases it
      // already took, so a lost reply strands no lane.
      let claim: ClaimOptions | undefined;
      let firstSentAt = 0;
      while (!this.stopped) {
        if (claim === undefined) {
          claim = {
            wait_ms: this.waitMs,
            max_jobs: this.maxJobs,
            acks: this.acks,
            nacks: this.nacks,
            claim_id: randomUUID(),
          };
          firstSentAt = Date.now();
        }
        let claimed;
        try {
          claimed = await this.client.claim<P>(this.queue, claim);
        } catch (err) {
          if (!isTransient(err)) throw err;
          failures++;
          this.warn(err);
          await sleep(Math.min(30_000, 200 * 2 ** failures));
          continue;
        }
        // A repeated claim may answer leases an earlier try of it took.
        const leasedAt = failures > 0 ? firstSentAt : Date.now();
        failures = 0;
        claim = undefined;
        this.acks = [];
        this.nacks = [];
        this.reported(claimed.results);
        if (claimed.jobs.length === 0 && exitWhenIdle) return;
        if (claimed.jobs.length > 0) await this.handle(claimed.jobs, leasedAt);
      }
    } finally {
      await this.flush();
    }
  }

  /** Reports outcomes not sent yet. */
  async flush(): Promise<void> {
    if (this.acks.length === 0 && this.nacks.length === 0) return;
    const [acks, nacks] = [this.acks, this.nacks];
    this.acks = [];
    this.nacks = [];
    let results: Outcome[];
    try {
      results = await this.client.report(this.queue, acks, nacks);
    } catch (err) {
      // Kept (ahead of newer ones) for the next claim or flush: a repeated
      // ack or nack answers the outcome it already produced.
      this.acks.unshift(...acks);
      this.nacks.unshift(...nacks);
      throw err;
    }
    this.reported(results);
  }

  private reported(results: Outcome[]): void {
    if (results.length > 0) this.options.onResults?.(results);
  }

  private warn(err: unknown): void {
    (this.options.onError ?? ((e: unknown) => console.warn("orderly consumer:", e)))(err);
  }

  /**
   * Runs one claim's jobs in order while a heartbeat keeps every lease they
   * hold alive (leased at `leasedAt` or later, local clock).
   */
  private async handle(jobs: Job<P>[], leasedAt: number): Promise<void> {
    for (const job of jobs) this.held.set(job.id, { lease: job.lease ?? "", lost: false });
    const heartbeat = this.heartbeat(this.leaseLength(jobs), leasedAt);
    try {
      for (const job of jobs) {
        // Its lease was lost before its turn: the job is back at its lane's
        // head (or another consumer's), so running it here would run it twice.
        if (this.held.get(job.id)?.lost) {
          this.held.delete(job.id);
          continue;
        }
        await this.process(job);
      }
    } finally {
      this.held.clear();
      await heartbeat.stop();
    }
  }

  /** Runs the handler; its outcome then waits to be reported (its lease no longer extended). */
  private async process(job: Job<P>): Promise<void> {
    const lease = job.lease ?? "";
    let outcome: { ack: Ack } | { nack: Nack };
    try {
      const result = await this.handler(job);
      outcome = { ack: { id: job.id, lease, result: result ?? null } };
    } catch (err) {
      const message = err instanceof Error ? err.message || err.name : String(err);
      const nack: Nack = { id: job.id, lease, error: message.slice(0, 1000) };
      if (err instanceof Retry && err.retryInMs !== undefined) nack.retry_in_ms = err.retryInMs;
      outcome = { nack };
    }
    this.held.delete(job.id);
    if ("ack" in outcome) this.acks.push(outcome.ack);
    else this.nacks.push(outcome.nack);
  }

  /**
   * The length of the leases `jobs` were claimed with: exact from a first
   * attempt's timestamps (and remembered), else the shorter of the last
   * exact one and the local estimate.
   */
  private leaseLength(jobs: Job<P>[]): number {
    const now = Date.now();
    const exact = jobs.filter((job) => job.attempts <= 1 && job.started_at && job.lease_expires_at);
    if (exact.length > 0) {
      this.knownLeaseMs = Math.min(...exact.map((job) => leaseLengthMs(job, now)));
      return this.knownLeaseMs;
    }
    return Math.min(this.knownLeaseMs ?? Infinity, ...jobs.map((job) => leaseLengthMs(job, now)));
  }

  /**
   * Every third of the lease (`claimedMs` long from `leasedAt`, then
   * `leaseMs` when set): extends the leases of the jobs with no outcome yet
   * and reports the outcomes not sent yet, whose leases would otherwise
   * lapse. Returns the stopper, which waits for a beat under way.
   */
  private heartbeat(claimedMs: number, leasedAt: number): { stop: () => Promise<void> } {
    const renewedMs = this.options.leaseMs ?? claimedMs;
    let timer: NodeJS.Timeout | undefined;
    let beating: Promise<void> | undefined;
    let done = false;
    const beat = async (): Promise<void> => {
      const started = Date.now();
      const ok = await Promise.all([...[...this.held.keys()].map((id) => this.extend(id)), this.reportEarly()]);
      // After a transient failure, try again before the shortest lease a
      // missed renewal could leave.
      const every = (ok.every(Boolean) ? renewedMs : Math.min(claimedMs, renewedMs)) / 3;
      if (!done) timer = setTimeout(tick, Math.max(0, every - (Date.now() - started)));
    };
    const tick = () => {
      beating = beat();
    };
    timer = setTimeout(tick, Math.max(0, leasedAt + Math.min(claimedMs, renewedMs) / 3 - Date.now()));
    return {
      stop: async () => {
        done = true;
        clearTimeout(timer);
        await beating;
      },
    };
  }

  /** Extends job `id`'s lease; false after a transient failure. */
  private async extend(id: string): Promise<boolean> {
    const held = this.held.get(id);
    if (!held || held.lost) return true;
    try {
      await this.client.extend(id, held.lease, this.options.leaseMs);
      return true;
    } catch (err) {
      this.warn(err);
      // The lease is gone (`lease_lost`), or the job with its queue (`not_found`).
      if (err instanceof LeaseLostError || (err instanceof OrderlyError && err.code === "not_found")) {
        held.lost = true;
        return true;
      }
      return !isTransient(err);
    }
  }

  /** Reports the outcomes not sent yet (at a beat); false after a transient failure. */
  private async reportEarly(): Promise<boolean> {
    try {
      await this.flush();
      return true;
    } catch (err) {
      this.warn(err);
      return !isTransient(err);
    }
  }
}
