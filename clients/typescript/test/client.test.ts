/** The TypeScript client against a live Orderly named by ORDERLY_URL (scripts/clients_test.sh starts one). */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connect, createServer, type Server } from "node:net";
import { describe, it } from "node:test";

import {
  Client,
  ConnectionError,
  Consumer,
  isExpired,
  LeaseLostError,
  OrderlyError,
  OutcomeUnknownError,
  sign,
  verifySignature,
} from "../src/index.js";
import { errorFromAnswer } from "../src/errors.js";
import type { ExpiredJob, Job, Outcome, Published, PublishItem } from "../src/index.js";

const url = process.env.ORDERLY_URL;
const live = url ? {} : { skip: "ORDERLY_URL is not set: these tests need a live Orderly (scripts/clients_test.sh)" };

/** A client for a freshly registered user. */
async function user(): Promise<Client> {
  const email = `ts-${randomUUID()}@example.com`;
  const password = "correct horse battery";
  await Client.register(url!, email, password);
  return Client.login(url!, email, password);
}

const queueName = () => `q-${randomUUID().slice(0, 12)}`;

/** The job a publish enqueued (or the original one), never an expired repeat. */
function enqueued<P>(published: Published<P>): Job<P> {
  assert.ok(!isExpired(published), `unexpected expired repeat ${published.id}`);
  return published;
}

/** Polls `probe` until it answers something `done` accepts, or fails after `deadlineMs`. */
async function pollUntil<T>(probe: () => Promise<T>, done: (value: T) => boolean, deadlineMs: number): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    assert.ok(Date.now() < deadline, `still not there after ${deadlineMs} ms: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Every job of `queue` (one page of up to 1000). */
async function queuedJobs(client: Client, queue: string): Promise<Job[]> {
  return (await client.call<{ jobs: Job[] }>("GET", `/v1/queues/${queue}/jobs?limit=1000`)).jobs;
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A loopback TCP proxy to Orderly that drops its first connection as soon as
 * the answer starts: the request was processed, the client never hears back.
 */
async function dropFirstAnswer(target: string): Promise<{ url: string; connections: () => number; server: Server }> {
  const { hostname, port } = new URL(target);
  let connections = 0;
  const server = createServer((client) => {
    const first = ++connections === 1;
    const upstream = connect(Number(port), hostname);
    client.pipe(upstream);
    if (first) {
      upstream.once("data", () => {
        client.destroy();
        upstream.destroy();
      });
    } else {
      upstream.pipe(client);
    }
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address() as { port: number };
  return { url: `http://127.0.0.1:${address.port}`, connections: () => connections, server };
}

describe("publish", live, () => {
  it("retries a publish whose answer was lost under one idempotency key", async () => {
    const client = await user();
    const queue = queueName();
    const proxy = await dropFirstAnswer(url!);
    try {
      const flaky = new Client(proxy.url, client.token, { retryBackoffMs: 10 });
      const job = await flaky.publish(queue, { once: true });
      assert.equal(proxy.connections(), 2);
      const claimed = await client.claim(queue, { max_jobs: 10 });
      assert.deepEqual(
        claimed.jobs.map((j) => j.id),
        [job.id],
      );
    } finally {
      proxy.server.close();
    }
  });

  it("returns the job and get reads it", async () => {
    const client = await user();
    const queue = queueName();
    const job = enqueued(await client.publish(queue, { n: 1 }, { key: "ann" }));
    assert.deepEqual([job.queue, job.key, job.state, job.payload], [queue, "ann", "queued", { n: 1 }]);
    assert.equal((await client.getJob(job.id)).seq, job.seq);
    const delayed = await client.publish(queue, 2, { delay_ms: 60_000 });
    assert.equal(delayed.state, "delayed");
  });

  it("enqueues once per idempotency key", async () => {
    const client = await user();
    const queue = queueName();
    const first = await client.publish(queue, "x", { idempotencyKey: "order-17" });
    const again = await client.publish(queue, "x", { idempotencyKey: "order-17" });
    assert.equal(again.id, first.id);
  });

  it("raises typed errors carrying the API code", async () => {
    const client = await user();
    await assert.rejects(client.getJob("nope"), (err: unknown) => {
      assert.ok(err instanceof OrderlyError);
      assert.equal(err.code, "not_found");
      assert.ok(err.requestId);
      return true;
    });
    await assert.rejects(client.publishBatch(queueName(), []), (err: unknown) => {
      assert.ok(err instanceof OrderlyError);
      assert.equal(err.code, "validation_failed");
      assert.ok("jobs" in err.fields);
      return true;
    });
    const unreachable = new Client(`http://127.0.0.1:${await closedPort()}`, client.token, {
      retries: 1,
      retryBackoffMs: 10,
    });
    await assert.rejects(unreachable.publish("q", 1), ConnectionError);
  });

  it("publishes a batch in order", async () => {
    const client = await user();
    const jobs = await client.publishBatch(
      queueName(),
      [0, 1, 2, 3, 4].map((n) => ({ payload: n, key: "lane" })),
    );
    assert.deepEqual(
      jobs.map((j) => j.payload),
      [0, 1, 2, 3, 4],
    );
    assert.ok(jobs.every((j, i) => i === 0 || jobs[i - 1].seq < j.seq));
  });

  it("answers the original jobs to a batch repeated with its key", async () => {
    const client = await user();
    const queue = queueName();
    const items: PublishItem[] = [0, 1, 2].map((n) => ({ payload: n, key: `k${n}` }));
    items.push({ payload: "own", idempotency_key: "own-key" });
    const first = await client.publishBatch(queue, items, { idempotencyKey: "batch-1" });
    const again = await client.publishBatch(queue, items, { idempotencyKey: "batch-1" });
    assert.deepEqual(
      again.map((j) => j.id),
      first.map((j) => j.id),
    );
    // The job with its own key is that key's job for a single publish too.
    assert.equal((await client.publish(queue, "own", { idempotencyKey: "own-key" })).id, first[3].id);
    assert.equal((await queuedJobs(client, queue)).length, 4);
  });

  it("retries a batch whose answer was lost and enqueues it once", async () => {
    const client = await user();
    const queue = queueName();
    const proxy = await dropFirstAnswer(url!);
    try {
      const flaky = new Client(proxy.url, client.token, { retryBackoffMs: 10 });
      const jobs = await flaky.publishBatch(
        queue,
        [0, 1, 2].map((n) => ({ payload: n, key: "lane" })),
      );
      assert.equal(proxy.connections(), 2);
      assert.deepEqual(
        (await queuedJobs(client, queue)).map((j) => j.id),
        jobs.map((j) => j.id),
      );
    } finally {
      proxy.server.close();
    }
  });

  it("publishes with a priority: higher priorities start first", async () => {
    const client = await user();
    const queue = queueName();
    // Oldest first without priorities; each job its own lane.
    for (const priority of [0, 9, 5]) await client.publish(queue, priority, { key: `p${priority}`, priority });
    await client.publishBatch(queue, [
      { payload: 2, key: "b2", priority: 2 },
      { payload: 7, key: "b7", priority: 7 },
      { payload: 0.5, key: "b0" },
    ]);
    const order: unknown[] = [];
    for (let n = 0; n < 6; n++) order.push(...(await client.claim(queue, { max_jobs: 1 })).jobs.map((j) => j.payload));
    assert.deepEqual(order, [9, 7, 5, 2, 0, 0.5]);
    await assert.rejects(client.publish(queue, "x", { priority: 10 }), (err: unknown) => {
      assert.ok(err instanceof OrderlyError);
      assert.equal(err.code, "validation_failed");
      assert.ok("priority" in err.fields);
      return true;
    });
  });

  it("answers an expired repeat, typed, when the original outlived its retention", async () => {
    const client = await user();
    const queue = queueName();
    await client.putQueue(queue, { retention_s: 1 });
    const original = enqueued(await client.publish(queue, "once", { idempotencyKey: "K1" }));
    const [claimed] = (await client.claim(queue)).jobs;
    await client.ack(claimed.id, claimed.lease!);
    // Repeated until the completed original is dropped (a second past
    // retention_s, trimmed in batches): then the answer is expired.
    const repeat = await pollUntil(
      () => client.publish(queue, "once", { idempotencyKey: "K1" }),
      (answer) => answer.state === "expired",
      20_000,
    );
    // @ts-expect-error -- no seq before narrowing: an expired repeat has none
    assert.equal(repeat.seq, undefined);
    assert.ok(isExpired(repeat));
    const expired: ExpiredJob = repeat;
    assert.deepEqual(expired, { id: original.id, queue, state: "expired" });
    // Nothing was enqueued by the repeats.
    assert.deepEqual(await queuedJobs(client, queue), []);
  });

  it("tells outcome_unknown from other 503s", () => {
    const unknown = errorFromAnswer(503, JSON.stringify({ error: { code: "outcome_unknown", message: "m" } }));
    assert.ok(unknown instanceof OutcomeUnknownError);
    assert.equal(unknown.status, 503);
    const down = errorFromAnswer(503, JSON.stringify({ error: { code: "unavailable", message: "m" } }));
    assert.ok(!(down instanceof OutcomeUnknownError));
  });
});

describe("consumer", live, () => {
  it("gets the same lease from a claim repeated with its claim_id", async () => {
    const client = await user();
    const queue = queueName();
    await client.putQueue(queue, { lease_ms: 60_000 });
    const job = await client.publish(queue, "x", { key: "lane" });
    const claimId = randomUUID();
    const first = await client.claim(queue, { max_jobs: 5, claim_id: claimId });
    const again = await client.claim(queue, { max_jobs: 5, claim_id: claimId });
    assert.deepEqual(
      first.jobs.map((j) => j.id),
      [job.id],
    );
    assert.deepEqual(
      again.jobs.map((j) => [j.id, j.lease]),
      first.jobs.map((j) => [j.id, j.lease]),
    );
    assert.deepEqual((await client.claim(queue, { max_jobs: 5, claim_id: randomUUID() })).jobs, []);
    // The whole request repeats: its ack answers the outcome it produced.
    const ack = { id: job.id, lease: first.jobs[0].lease! };
    const done = await client.claim(queue, { acks: [ack], claim_id: "after-ack" });
    const repeat = await client.claim(queue, { acks: [ack], claim_id: "after-ack" });
    assert.deepEqual(done.results, [{ id: job.id, status: "completed" }]);
    assert.deepEqual(repeat.results, done.results);
  });

  it("retries a claim whose answer was lost under the same claim_id", async () => {
    const client = await user();
    const queue = queueName();
    // Leases far longer than the test: a claim whose lease had to expire would not finish in time.
    await client.putQueue(queue, { lease_ms: 60_000 });
    const job = await client.publish(queue, { n: 1 }, { key: "lane" });
    const proxy = await dropFirstAnswer(url!);
    const seen: string[] = [];
    try {
      const flaky = new Client(proxy.url, client.token);
      const consumer = new Consumer(
        flaky,
        queue,
        (claimed) => {
          seen.push(claimed.id);
          return "ok";
        },
        { waitMs: 0, onError: () => {} },
      );
      await consumer.run({ exitWhenIdle: true });
    } finally {
      proxy.server.close();
    }
    // The first claim leased the job but its answer was lost; the retry under
    // the same claim_id answered that lease instead of finding the lane busy.
    assert.ok(proxy.connections() >= 2);
    assert.deepEqual(seen, [job.id]);
    const done = await client.getJob(job.id);
    assert.deepEqual([done.state, done.attempts, done.result], ["completed", 1, "ok"]);
  });

  it("keeps a long job alive with extend", async () => {
    const client = await user();
    const queue = queueName();
    await client.putQueue(queue, { lease_ms: 1000, max_attempts: 3 });
    const job = await client.publish(queue, { work: "slow" });
    const seen: number[] = [];
    const consumer = new Consumer<{ work: string }>(
      client,
      queue,
      async (claimed) => {
        seen.push(claimed.attempts);
        // Real work that outlives the 1 s lease three times over.
        const until = Date.now() + 3000;
        while (Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50));
        return { done: claimed.payload.work };
      },
      { waitMs: 0 },
    );
    await consumer.run({ exitWhenIdle: true });
    const done = await client.getJob(job.id, 5000);
    assert.equal(done.state, "completed");
    assert.equal(done.attempts, 1);
    assert.deepEqual(seen, [1]);
    assert.deepEqual(done.result, { done: "slow" });
  });

  it("keeps every lease of a claim alive until its outcome is reported", async () => {
    const client = await user();
    const queue = queueName();
    await client.putQueue(queue, { lease_ms: 1000 });
    const jobs = await client.publishBatch(
      queue,
      [0, 1, 2, 3].map((n) => ({ payload: n, key: `lane-${n}` })),
    );
    const runs = new Map<string, number>();
    const reported: Outcome[] = [];
    const consumer = new Consumer(
      client,
      queue,
      async (job) => {
        runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
        // One claim takes all four; together they outlast the 1 s lease twice over.
        await new Promise((resolve) => setTimeout(resolve, 500));
        return job.payload;
      },
      { waitMs: 0, onResults: (results) => reported.push(...results) },
    );
    await consumer.run({ exitWhenIdle: true });
    assert.deepEqual(
      jobs.map((job) => runs.get(job.id)),
      [1, 1, 1, 1],
    );
    assert.deepEqual(
      reported.map((o) => o.status),
      ["completed", "completed", "completed", "completed"],
    );
    for (const job of jobs) {
      const done = await client.getJob(job.id, 5000);
      assert.deepEqual([done.state, done.attempts, done.result], ["completed", 1, job.payload]);
    }
  });

  it("keeps a retried job's lease alive", async () => {
    const client = await user();
    const queue = queueName();
    await client.putQueue(queue, { lease_ms: 1000 });
    const job = enqueued(await client.publish(queue, "again"));
    const [first] = (await client.claim(queue)).jobs;
    await client.nack(first.id, first.lease!, "not yet", 3000);
    // The second attempt's started_at is still the first one's, 3 s before its lease.
    const seen: number[] = [];
    const consumer = new Consumer(
      client,
      queue,
      async (claimed) => {
        seen.push(claimed.attempts);
        consumer.stop(); // after this claim's job (the long-poll waits for its retry)
        await new Promise((resolve) => setTimeout(resolve, 1500));
        return "done";
      },
      { waitMs: 10_000 },
    );
    await consumer.run();
    assert.deepEqual(seen, [2]);
    const done = await client.getJob(job.id, 5000);
    assert.deepEqual([done.state, done.attempts], ["completed", 2]);
  });

  it("acks and nacks in batches", async () => {
    const client = await user();
    const queue = queueName();
    await client.putQueue(queue, { max_attempts: 2, backoff: { initial_ms: 10, max_ms: 10 } });
    const ok: Job[] = [];
    for (const n of [0, 1, 2]) ok.push(enqueued(await client.publish(queue, n, { key: `k${n}` })));
    const bad = await client.publish(queue, "fail", { key: "bad" });
    const reported: Outcome[] = [];
    const consumer = new Consumer(
      client,
      queue,
      (job) => {
        if (job.payload === "fail") throw new Error("cannot do it");
        return (job.payload as number) * 10;
      },
      { waitMs: 200, onResults: (results) => reported.push(...results) },
    );
    await consumer.run({ exitWhenIdle: true });
    for (const job of ok) {
      const done = await client.getJob(job.id);
      assert.deepEqual([done.state, done.result], ["completed", (job.payload as number) * 10]);
    }
    const failed = await client.getJob(bad.id);
    assert.deepEqual([failed.state, failed.last_error, failed.attempts], ["dead", "cannot do it", 2]);
    assert.deepEqual(
      reported.filter((o) => o.id === bad.id).map((o) => o.status),
      ["retrying", "dead"],
    );
  });

  it("batch ack reports each item in order", async () => {
    const client = await user();
    const queue = queueName();
    await client.putQueue(queue);
    for (const key of ["a", "b", "c"]) await client.publish(queue, key, { key });
    const [a, b, c] = (await client.claim(queue, { max_jobs: 3 })).jobs;
    const results = await client.report(
      queue,
      [
        { id: a.id, lease: a.lease!, result: "A" },
        { id: c.id, lease: b.lease! },
      ],
      [{ id: b.id, lease: b.lease!, error: "later", retry_in_ms: 60_000 }],
    );
    assert.deepEqual(results, [
      { id: a.id, status: "completed" },
      { id: c.id, status: "lease_lost" },
      { id: b.id, status: "retrying" },
    ]);
    await assert.rejects(client.extend(a.id, a.lease!), LeaseLostError);
    // A claim reports c's outcome first, then leases nothing (b waits).
    const claimed = await client.claim(queue, { max_jobs: 3, acks: [{ id: c.id, lease: c.lease! }] });
    assert.deepEqual(claimed.results, [{ id: c.id, status: "completed" }]);
    assert.deepEqual(claimed.jobs, []);
  });
});

describe("verifySignature", () => {
  const secret = "whsec-test";
  const body = '{"n":1}';
  const now = () => Math.floor(Date.now() / 1000);

  it("accepts a valid signature", () => {
    assert.equal(verifySignature(secret, sign(secret, body, now()), body), true);
    assert.equal(verifySignature(secret, sign(secret, body, now()), Buffer.from(body)), true);
  });

  it("rejects a tampered body", () => {
    assert.equal(verifySignature(secret, sign(secret, body, now()), '{"n":2}'), false);
  });

  it("rejects a wrong secret", () => {
    assert.equal(verifySignature(secret, sign("other-secret", body, now()), body), false);
  });

  it("rejects a too old timestamp and malformed headers", () => {
    assert.equal(verifySignature(secret, sign(secret, body, now() - 3600), body, { toleranceS: 300 }), false);
    for (const header of ["", "garbage", "t=abc,v1=00", `t=${now()}`, `t=${now()},v1=zz`, undefined]) {
      assert.equal(verifySignature(secret, header, body), false, String(header));
    }
  });
});
