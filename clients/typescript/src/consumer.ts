/**
 * `Consumer`: the pull loop. Long-poll claim, run the handler while a timer
 * extends the lease, and report outcomes in batches: the outcomes of one
 * claim's jobs ride on the next claim (`acks` / `nacks`); what is left when
 * the loop ends goes to `POST /v1/queues/{queue}/ack`.
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
  /** Called with transient failures (claim or extend); default: console.warn. */
  onError?: (err: unknown) => void;
}

/** How long the job's lease runs, from the server's own timestamps (no clock skew matters). */
export function leaseLengthMs(job: Job): number {
  if (job.started_at && job.lease_expires_at) {
    const length = Date.parse(job.lease_expires_at) - Date.parse(job.started_at);
    if (length > 0) return length;
  }
  return 30_000;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs a handler for each job of a pull queue. The handler's return value
 * (JSON) becomes the job's `result`; a throw fails the attempt with the
 * error's message as `last_error`. Jobs of one lane are never leased
 * concurrently, so lane order holds. Delivery is at-least-once: make
 * handlers idempotent. A claim that fails with a 503 or a connection failure
 * is retried unchanged under its `claim_id`.
 */
export class Consumer<P = unknown> {
  private stopped = false;
  private acks: Ack[] = [];
  private nacks: Nack[] = [];
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
      while (!this.stopped) {
        claim ??= {
          wait_ms: this.waitMs,
          max_jobs: this.maxJobs,
          acks: this.acks,
          nacks: this.nacks,
          claim_id: randomUUID(),
        };
        let claimed;
        try {
          claimed = await this.client.claim<P>(this.queue, claim);
        } catch (err) {
          if (!(err instanceof OrderlyError) || !(err.status === 503 || err.status === 0)) throw err;
          failures++;
          this.warn(err);
          await sleep(Math.min(30_000, 200 * 2 ** failures));
          continue;
        }
        failures = 0;
        claim = undefined;
        this.reported(claimed.results);
        if (claimed.jobs.length === 0 && exitWhenIdle) return;
        for (const job of claimed.jobs) await this.process(job);
      }
    } finally {
      await this.flush();
    }
  }

  /** Reports outcomes not sent yet. */
  async flush(): Promise<void> {
    if (this.acks.length === 0 && this.nacks.length === 0) return;
    this.reported(await this.client.report(this.queue, this.acks, this.nacks));
  }

  private reported(results: Outcome[]): void {
    this.acks = [];
    this.nacks = [];
    if (results.length > 0) this.options.onResults?.(results);
  }

  private warn(err: unknown): void {
    (this.options.onError ?? ((e: unknown) => console.warn("orderly consumer:", e)))(err);
  }

  private async process(job: Job<P>): Promise<void> {
    const lease = job.lease ?? "";
    const stopBeat = this.heartbeat(job);
    try {
      const result = await this.handler(job);
      this.acks.push({ id: job.id, lease, result: result ?? null });
    } catch (err) {
      const message = err instanceof Error ? err.message || err.name : String(err);
      const nack: Nack = { id: job.id, lease, error: message.slice(0, 1000) };
      if (err instanceof Retry && err.retryInMs !== undefined) nack.retry_in_ms = err.retryInMs;
      this.nacks.push(nack);
    } finally {
      stopBeat();
    }
  }

  /** Extends `job`'s lease every third of its length; returns the stopper. */
  private heartbeat(job: Job<P>): () => void {
    let every = leaseLengthMs(job) / 3;
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const beat = async () => {
      try {
        await this.client.extend(job.id, job.lease ?? "", this.options.leaseMs);
        if (this.options.leaseMs) every = this.options.leaseMs / 3;
      } catch (err) {
        if (err instanceof LeaseLostError) {
          this.warn(err);
          return;
        }
        this.warn(err); // transient: the next beat may still be in time
      }
      if (!done) timer = setTimeout(beat, every);
    };
    timer = setTimeout(beat, every);
    return () => {
      done = true;
      clearTimeout(timer);
    };
  }
}
