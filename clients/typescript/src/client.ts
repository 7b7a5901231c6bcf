/** `Client`: one Orderly base URL and one bearer token, over the global `fetch`. */

import { randomUUID } from "node:crypto";

import { ConnectionError, errorFromAnswer, OrderlyError } from "./errors.js";
import type {
  Ack,
  Claimed,
  ClaimOptions,
  ExpiredJob,
  Job,
  Nack,
  Outcome,
  Published,
  PublishBatchOptions,
  PublishItem,
  PublishOptions,
} from "./types.js";

/** Longest long-poll the server accepts (ms). */
export const MAX_WAIT_MS = 30_000;

export interface ClientOptions {
  /** Timeout of one request in ms (long-polls add their wait). Default 10000. */
  timeoutMs?: number;
  /** Retries of a publish (single or batch) after a 503 or a connection failure. Default 4. */
  retries?: number;
  /** First retry delay in ms, doubling each time. Default 200. */
  retryBackoffMs?: number;
}

interface CallOptions {
  body?: unknown;
  headers?: Record<string, string>;
  waitMs?: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const seg = encodeURIComponent;

/**
 * Whether a publish answered {@link ExpiredJob}: its `Idempotency-Key` was
 * used before, by a job that is gone (past its retention). Nothing was
 * enqueued.
 */
export function isExpired<P>(published: Published<P>): published is ExpiredJob {
  return published.state === "expired";
}

/**
 * Talks to one Orderly with one bearer token: a JWT from {@link Client.login}
 * or an API key (`ok_…`).
 */
export class Client {
  readonly baseUrl: string;
  readonly token: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly retryBackoffMs: number;

  constructor(baseUrl: string, token: string, options: ClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.retries = options.retries ?? 4;
    this.retryBackoffMs = options.retryBackoffMs ?? 200;
  }

  /** Creates an account; returns `{id, email, created_at}`. */
  static async register(baseUrl: string, email: string, password: string): Promise<{ id: string; email: string }> {
    return new Client(baseUrl, "").call("POST", "/v1/auth/register", { body: { email, password } });
  }

  /** Logs in; returns a client holding the access token. */
  static async login(baseUrl: string, email: string, password: string, options?: ClientOptions): Promise<Client> {
    const answer = await new Client(baseUrl, "").call<{ access_token: string }>("POST", "/v1/auth/login", {
      body: { email, password },
    });
    return new Client(baseUrl, answer.access_token, options);
  }

  /** Any API call: the decoded JSON answer, or a thrown {@link OrderlyError}. */
  async call<T>(method: string, path: string, options: CallOptions = {}): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json", ...options.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    let response: Response;
    let text: string;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers,
        body,
        signal: AbortSignal.timeout(this.timeoutMs + (options.waitMs ?? 0)),
      });
      text = await response.text();
    } catch (err) {
      throw new ConnectionError(err instanceof Error ? err.message : String(err), { cause: err });
    }
    if (!response.ok) throw errorFromAnswer(response.status, text);
    try {
      return (text ? JSON.parse(text) : null) as T;
    } catch {
      throw new OrderlyError(response.status, "unexpected_answer", text.slice(0, 200));
    }
  }

  /** Runs `attempt`, retrying 503s (and connection failures when `connectionRetryable`). */
  private async retrying<T>(connectionRetryable: boolean, attempt: () => Promise<T>): Promise<T> {
    for (let n = 0; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        const retryable =
          err instanceof OrderlyError && (err.status === 503 || (connectionRetryable && err instanceof ConnectionError));
        if (!retryable || n >= this.retries) throw err;
        await sleep(this.retryBackoffMs * 2 ** n * (0.5 + Math.random() / 2));
      }
    }
  }

  /** Creates or updates a queue with `settings` (as in the API). */
  putQueue(queue: string, settings: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.call("PUT", `/v1/queues/${seg(queue)}`, { body: settings });
  }

  /**
   * Publishes one job. Retried after a 503 or a connection failure under one
   * `Idempotency-Key` (generated once here when not given), so a retry never
   * enqueues the job twice. Answers the job — the original one when the key
   * was used before — or, when that original is gone past its retention,
   * an {@link ExpiredJob} (`state: "expired"`; nothing was enqueued).
   */
  publish<P>(queue: string, payload: P, options: PublishOptions = {}): Promise<Published<P>> {
    const body: PublishItem<P> = { payload };
    if (options.key !== undefined) body.key = options.key;
    if (options.delay_ms !== undefined) body.delay_ms = options.delay_ms;
    if (options.priority !== undefined) body.priority = options.priority;
    const headers = { "idempotency-key": options.idempotencyKey ?? randomUUID() };
    return this.retrying(true, () => this.call("POST", `/v1/queues/${seg(queue)}/jobs`, { body, headers }));
  }

  /**
   * Publishes up to 1000 jobs atomically, in order. Retried after a 503 or a
   * connection failure under one `Idempotency-Key` for the whole batch
   * (generated once here when not given; job i is published under
   * `<key>#<i>` unless it has its own `idempotency_key`), so a retry never
   * enqueues a job twice: a repeat answers the original jobs (an original
   * that is gone, past its retention, is left out).
   */
  async publishBatch<P>(queue: string, jobs: PublishItem<P>[], options: PublishBatchOptions = {}): Promise<Job<P>[]> {
    const headers = { "idempotency-key": options.idempotencyKey ?? randomUUID() };
    const answer = await this.retrying(true, () =>
      this.call<{ jobs: Job<P>[] }>("POST", `/v1/queues/${seg(queue)}/jobs/batch`, { body: { jobs }, headers }),
    );
    return answer.jobs;
  }

  /** Reads a job; with `waitMs` (≤ 30000), waits until it is terminal or the wait ends. */
  getJob<P = unknown>(id: string, waitMs?: number): Promise<Job<P>> {
    const query = waitMs === undefined ? "" : `?wait_ms=${waitMs}`;
    return this.call("GET", `/v1/jobs/${seg(id)}${query}`, { waitMs });
  }

  /**
   * Reports the claim's outcomes (if any), then leases up to `max_jobs` jobs.
   * With a `claim_id` the whole request is safe to repeat (after a 503 or a
   * connection failure): it answers the jobs and leases it already took.
   */
  async claim<P = unknown>(queue: string, options: ClaimOptions = {}): Promise<Claimed<P>> {
    const body: ClaimOptions = { wait_ms: options.wait_ms ?? 0, max_jobs: options.max_jobs ?? 1 };
    if (options.acks?.length) body.acks = options.acks;
    if (options.nacks?.length) body.nacks = options.nacks;
    if (options.claim_id !== undefined) body.claim_id = options.claim_id;
    const answer = await this.call<{ jobs: Job<P>[]; results?: Outcome[] }>("POST", `/v1/queues/${seg(queue)}/claim`, {
      body,
      waitMs: body.wait_ms,
    });
    return { jobs: answer.jobs, results: answer.results ?? [] };
  }

  /**
   * Batch ack/nack (≤ 1000 items): one outcome per item, acks first, in
   * order. A stale lease is an outcome (`lease_lost`), not an error.
   */
  async report(queue: string, acks: Ack[] = [], nacks: Nack[] = []): Promise<Outcome[]> {
    const answer = await this.call<{ results: Outcome[] }>("POST", `/v1/queues/${seg(queue)}/ack`, {
      body: { acks, nacks },
    });
    return answer.results;
  }

  ack(id: string, lease: string, result?: unknown): Promise<Job> {
    return this.call("POST", `/v1/jobs/${seg(id)}/ack`, { body: { lease, result: result ?? null } });
  }

  nack(id: string, lease: string, error?: string, retryInMs?: number): Promise<Job> {
    return this.call("POST", `/v1/jobs/${seg(id)}/nack`, { body: { lease, error, retry_in_ms: retryInMs } });
  }

  /** Renews a lease for `leaseMs` (default: the queue's) from now; `LeaseLostError` when it is gone. */
  extend(id: string, lease: string, leaseMs?: number): Promise<Job> {
    return this.call("POST", `/v1/jobs/${seg(id)}/extend`, { body: { lease, lease_ms: leaseMs } });
  }
}
