//! The queue engine: every state transition of a job is ONE atomic Lua script
//! (in `scripts/`, each documented with the keys it touches). The producer, the
//! worker and the pull-consumer handlers all go through this module; nothing
//! else writes queue keys.
//!
//! ## Redis layout
//!
//! `P` is `redis.key_prefix`; `{q}` is the hash tag `{<owner>:<queue>}`, so all
//! keys of one queue live in one Redis Cluster slot.
//!
//! | key | type | content |
//! |---|---|---|
//! | `P:{q}:seq` | string | per-queue sequence counter (INCR at publish) |
//! | `P:{q}:job:<id>` | hash | id, key, seq, state, payload, attempts, max_attempts, lease_no, lease_token, lease_expires_at, created_at, available_at, started_at, finished_at, result, last_error (attempts and lease_no are absent, i.e. 0, until the first lease; available_at is stored only for delayed jobs); expires `retention_s` after a terminal state (dead jobs never expire) |
//! | `P:{q}:lane:<key>` | list | ids of the lane's unfinished jobs in seq order; the head stays until it is terminal |
//! | `P:{q}:ready` | zset | lane keys whose head may start, score = ms when it may; a lane is in it iff its head is neither leased nor blocked |
//! | `P:{q}:leases` | zset | leased job ids by lease expiry |
//! | `P:{q}:delayed` | zset | ids published with `delay_ms`, by availability, until first claimed |
//! | `P:{q}:jobs` | zset | every stored job id by seq (listing) |
//! | `P:{q}:pending` | zset | non-terminal job ids by seq (stats, oldest age) |
//! | `P:{q}:dead`, `P:{q}:blocked` | zset | dead / blocked job ids by seq |
//! | `P:{q}:expiry` | zset | terminal job ids by when their hash expires (trims `jobs`) |
//! | `P:{q}:counts` | hash | completed, cancelled, retried totals |
//! | `P:{q}:rate:<kind>:<second>` | string | jobs published / completed in that second (kind `published`, `completed`); expires after 2 minutes |
//! | `P:{q}:conf` | hash | push, paused, on_exhausted, retention_s (mirrored from MongoDB) |
//! | `P:index:push` | zset | push queues (tags) with a ready lane, score = earliest ready time |
//! | `P:index:leases` | zset | queues with leases, score = earliest lease expiry |
//! | `P:queues` | set | tags of every queue that has had jobs |
//! | `P:wake` | pub/sub | the tag of a pull queue one of whose lanes became startable now |
//! | `P:wake:push` | pub/sub | the same for push queues (read by the workers only) |
//!
//! The three global keys are the only cross-slot keys; on Redis Cluster they
//! would become per-shard indexes. Times come from the Redis server clock
//! (`TIME`), so several Orderly processes agree on them.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{RedisResult, Script, Value};
use serde_json::value::RawValue;

use super::model::{Job, JobState, QueueRef, rfc3339_ms};

const LIB: &str = include_str!("scripts/lib.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// Every engine script, compiled once per process.
struct Scripts {
    publish: Script,
    claim_push: Script,
    claim_queue: Script,
    ack: Script,
    fail: Script,
    extend: Script,
    release: Script,
    recover: Script,
    cancel: Script,
    configure: Script,
    stats: Script,
    list: Script,
    redrive: Script,
    resolve: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    publish: script(include_str!("scripts/publish.lua")),
    claim_push: script(include_str!("scripts/claim_push.lua")),
    claim_queue: script(include_str!("scripts/claim_queue.lua")),
    ack: script(include_str!("scripts/ack.lua")),
    fail: script(include_str!("scripts/fail.lua")),
    extend: script(include_str!("scripts/extend.lua")),
    release: script(include_str!("scripts/release.lua")),
    recover: script(include_str!("scripts/recover.lua")),
    cancel: script(include_str!("scripts/cancel.lua")),
    configure: script(include_str!("scripts/configure.lua")),
    stats: script(include_str!("scripts/stats.lua")),
    list: script(include_str!("scripts/list.lua")),
    redrive: script(include_str!("scripts/redrive.lua")),
    resolve: script(include_str!("scripts/resolve.lua")),
});

/// A job to publish.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: QueueRef,
    pub id: String,
    pub key: String,
    /// The payload's exact JSON text.
    pub payload: String,
    pub delay_ms: u64,
    pub max_attempts: u32,
    /// The client's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
}

/// What publish did with a job.
#[derive(Debug, Clone)]
pub enum Published {
    /// Enqueued with this seq.
    New { seq: u64, created_at_ms: u64 },
    /// Not enqueued: the idempotency key already names this job.
    Duplicate { original_id: String },
}

/// A fenced lease: the lease number (monotonic per job) and a random token.
/// Rendered to clients as `"<number>.<token>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub number: u64,
    pub token: String,
}

impl Lease {
    pub fn parse(raw: &str) -> Option<Lease> {
        let (number, token) = raw.split_once('.')?;
        let number = number.parse().ok()?;
        (!token.is_empty() && token.len() <= 64).then(|| Lease {
            number,
            token: token.to_owned(),
        })
    }

    pub fn render(&self) -> String {
        format!("{}.{}", self.number, self.token)
    }
}

fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A job leased to the caller.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub queue: QueueRef,
    pub job: Job,
    pub lease: Lease,
}

/// The outcome of [`Engine::ack_and_lease_next`].
#[derive(Debug)]
pub struct Acked {
    /// False when the lease was stale or expired (nothing changed).
    pub completed: bool,
    /// The lane's next head, leased to the caller, when it could start now
    /// and no other push lane was waiting.
    pub next: Option<Claimed>,
    /// Milliseconds until the earliest push lane is due; `None` when none is
    /// scheduled.
    pub next_due_in_ms: Option<u64>,
}

/// The result of a claim call.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    pub jobs: Vec<Claimed>,
    /// Milliseconds until the next lane is due; `None` when nothing is scheduled.
    pub next_due_in_ms: Option<u64>,
}

/// Outcome of a lease-holder transition (ack, fail, extend).
#[derive(Debug)]
pub enum Transition {
    /// Applied; the job as it is now.
    Done(Job),
    /// The lease was stale or expired; nothing changed. The job as it is, if it exists.
    LeaseLost(Option<Job>),
}

/// How a failed attempt should be treated.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// Retry after the given delay if attempts remain.
    Retry { in_ms: u64 },
    /// Do not retry: apply the queue's `on_exhausted` policy now.
    Permanent,
}

/// Outcome of cancel.
#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled(Job),
    NotFound,
    NotCancellable(Job),
}

/// Whether a released job's attempt counts.
#[derive(Debug, Clone, Copy)]
pub enum Release {
    /// A delivery started (shutdown, restart): the attempt counts.
    Started,
    /// No delivery started: the attempt is taken back.
    Unstarted,
}

/// What to do with a stopped job.
#[derive(Debug, Clone, Copy)]
pub enum Resolve {
    Retry,
    Skip,
}

/// Outcome of retry/skip.
#[derive(Debug)]
pub enum Resolution {
    Done(Job),
    NotFound,
    /// The job is not in a state the action applies to.
    Conflict(Job),
}

/// The engine-relevant part of a queue definition, mirrored into Redis.
#[derive(Debug, Clone)]
pub struct EngineConf {
    pub push: bool,
    pub paused: bool,
    pub on_exhausted: &'static str,
    pub retention_s: u64,
}

/// Raw counts of one queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawStats {
    pub pending: u64,
    pub active: u64,
    pub delayed: u64,
    pub blocked: u64,
    pub dead: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub retried: u64,
    pub oldest_pending_created_ms: Option<u64>,
    pub now_ms: u64,
    /// Jobs published / completed in the last 60 seconds (Redis clock).
    pub published_last_minute: u64,
    pub completed_last_minute: u64,
}

impl RawStats {
    /// Jobs that wait to start: unfinished, not leased, not delayed into the
    /// future and not blocked.
    pub fn waiting(&self) -> u64 {
        self.pending
            .saturating_sub(self.active)
            .saturating_sub(self.delayed)
            .saturating_sub(self.blocked)
    }
}

/// A page of a job listing.
#[derive(Debug)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `after` to continue; `None` at the end.
    pub next: Option<u64>,
}

/// Filters of a job listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<JobState>,
    pub key: Option<String>,
    pub after: u64,
    pub limit: usize,
}

/// Entries a listing call examines at most (bounds the script's run time).
const LIST_BUDGET: usize = 2000;

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    redis: ConnectionManager,
    prefix: String,
}

impl Engine {
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
        }
    }

    /// The Redis channel announcing pull queues with newly startable lanes;
    /// push queues are announced on the same name with `:push` appended
    /// (see [`super::notify::WakeHub`]).
    pub fn wake_channel(&self) -> String {
        format!("{}:wake", self.prefix)
    }

    /// The prefix every key of `queue` starts with.
    pub fn queue_base(&self, queue: &QueueRef) -> String {
        format!("{}:{{{}}}:", self.prefix, queue.tag())
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Appends jobs to their lanes in one atomic script run; order is kept.
    /// A job whose idempotency key was seen within `idempotency_window_s` is
    /// not enqueued again.
    pub async fn publish(
        &self,
        jobs: &[NewJob],
        idempotency_window_s: u64,
    ) -> RedisResult<Vec<Published>> {
        let mut invocation = SCRIPTS.publish.key(&self.prefix);
        invocation.arg(jobs.len()).arg(idempotency_window_s.max(1));
        for job in jobs {
            invocation
                .arg(job.queue.tag())
                .arg(&job.id)
                .arg(&job.key)
                .arg(&job.payload)
                .arg(job.delay_ms)
                .arg(job.max_attempts)
                .arg(job.idempotency_key.as_deref().unwrap_or(""));
        }
        let reply: Vec<Value> = invocation.invoke_async(&mut self.conn()).await?;
        let mut items = reply.into_iter();
        let mut published = Vec::with_capacity(jobs.len());
        while let (Some(seq), Some(at), Some(original)) = (items.next(), items.next(), items.next())
        {
            let original = string(original).unwrap_or_default();
            published.push(match (seq, at) {
                _ if !original.is_empty() => Published::Duplicate {
                    original_id: original,
                },
                (Value::Int(seq), Value::Int(at)) => Published::New {
                    seq: seq as u64,
                    created_at_ms: at as u64,
                },
                _ => return Err(unexpected("publish reply")),
            });
        }
        Ok(published)
    }

    /// Leases up to `max` startable lane heads across all push queues.
    pub async fn claim_push(&self, max: usize, lease_ms: u64) -> RedisResult<ClaimBatch> {
        let mut invocation = SCRIPTS.claim_push.key(&self.prefix);
        invocation.arg(max).arg(lease_ms).arg(new_token());
        let reply: Vec<Value> = invocation.invoke_async(&mut self.conn()).await?;
        let mut items = reply.into_iter();
        let next_due_in_ms = next_due(items.next());
        let mut jobs = Vec::new();
        while let (Some(tag), Some(fields)) = (items.next(), items.next()) {
            let queue = string(tag).and_then(|t| QueueRef::from_tag(&t));
            if let Some(claimed) = queue.and_then(|q| claimed_job(q, fields)) {
                jobs.push(claimed);
            }
        }
        Ok(ClaimBatch {
            jobs,
            next_due_in_ms,
        })
    }

    /// Leases up to `max` startable lane heads (distinct lanes) of one queue.
    pub async fn claim_queue(
        &self,
        queue: &QueueRef,
        max: usize,
        lease_ms: u64,
    ) -> RedisResult<ClaimBatch> {
        let mut invocation = SCRIPTS.claim_queue.key(&self.prefix);
        invocation
            .arg(queue.tag())
            .arg(max)
            .arg(lease_ms)
            .arg(new_token());
        let reply: Vec<Value> = invocation.invoke_async(&mut self.conn()).await?;
        let mut items = reply.into_iter();
        let next_due_in_ms = next_due(items.next());
        let jobs = items
            .filter_map(|fields| claimed_job(queue.clone(), fields))
            .collect();
        Ok(ClaimBatch {
            jobs,
            next_due_in_ms,
        })
    }

    async fn lease_transition(
        &self,
        script: &Script,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        extra: &[String],
    ) -> RedisResult<(String, Option<Job>)> {
        let reply = self
            .lease_transition_reply(script, queue, id, lease, extra)
            .await?;
        let mut items = reply.into_iter();
        let outcome = items.next().and_then(string).unwrap_or_default();
        let job = items.next().and_then(|f| job_from_value(queue, f));
        Ok((outcome, job))
    }

    async fn lease_transition_reply(
        &self,
        script: &Script,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        extra: &[String],
    ) -> RedisResult<Vec<Value>> {
        let mut invocation = script.key(&self.prefix);
        invocation
            .arg(queue.tag())
            .arg(id)
            .arg(lease.number)
            .arg(&lease.token);
        for arg in extra {
            invocation.arg(arg);
        }
        invocation.invoke_async(&mut self.conn()).await
    }

    /// Completes the job held under `lease`, storing `result` (JSON text).
    pub async fn ack(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        result: &str,
    ) -> RedisResult<Transition> {
        let (outcome, job) = self
            .lease_transition(&SCRIPTS.ack, queue, id, lease, &[result.to_owned()])
            .await?;
        Ok(transition(outcome, job))
    }

    /// Completes the job held under `lease` (as [`Engine::ack`]) and, when
    /// the lane's next job may start now and no other push lane is waiting,
    /// leases it to the caller for `lease_ms` in the same script run. For the
    /// push worker: a busy lane then costs one round trip per job.
    pub async fn ack_and_lease_next(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        result: &str,
        lease_ms: u64,
    ) -> RedisResult<Acked> {
        let extra = [result.to_owned(), new_token(), lease_ms.to_string()];
        let reply = self
            .lease_transition_reply(&SCRIPTS.ack, queue, id, lease, &extra)
            .await?;
        let mut items = reply.into_iter();
        let completed = items.next().and_then(string).as_deref() == Some("ok");
        let _completed_job = items.next();
        let next = items
            .next()
            .and_then(|fields| claimed_job(queue.clone(), fields));
        Ok(Acked {
            completed,
            next,
            next_due_in_ms: next_due(items.next()),
        })
    }

    /// Records a failed attempt of the job held under `lease`.
    pub async fn fail(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        error: &str,
        failure: Failure,
    ) -> RedisResult<Transition> {
        let (retryable, retry_in) = match failure {
            Failure::Retry { in_ms } => ("1", in_ms),
            Failure::Permanent => ("0", 0),
        };
        let extra = [error.to_owned(), retryable.to_owned(), retry_in.to_string()];
        let (outcome, job) = self
            .lease_transition(&SCRIPTS.fail, queue, id, lease, &extra)
            .await?;
        Ok(transition(outcome, job))
    }

    /// Extends the live lease to `lease_ms` from now.
    pub async fn extend(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        lease_ms: u64,
    ) -> RedisResult<Transition> {
        let (outcome, job) = self
            .lease_transition(&SCRIPTS.extend, queue, id, lease, &[lease_ms.to_string()])
            .await?;
        Ok(transition(outcome, job))
    }

    /// Gives a leased job back to the head of its lane without an outcome,
    /// startable again after `delay_ms`. `Release::Unstarted` also takes back
    /// the claim's attempt (no delivery began).
    pub async fn release(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        delay_ms: u64,
        kind: Release,
    ) -> RedisResult<bool> {
        let released: i64 = SCRIPTS
            .release
            .key(&self.prefix)
            .arg(queue.tag())
            .arg(id)
            .arg(lease.number)
            .arg(&lease.token)
            .arg(delay_ms)
            .arg(matches!(kind, Release::Unstarted) as u8)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(released == 1)
    }

    /// Returns up to `max` expired leases to the heads of their lanes.
    pub async fn recover(&self, max: usize) -> RedisResult<u64> {
        SCRIPTS
            .recover
            .key(&self.prefix)
            .arg(max)
            .invoke_async(&mut self.conn())
            .await
    }

    /// Cancels a waiting job.
    pub async fn cancel(&self, queue: &QueueRef, id: &str) -> RedisResult<CancelOutcome> {
        let reply: Vec<Value> = SCRIPTS
            .cancel
            .key(&self.prefix)
            .arg(queue.tag())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await?;
        let mut items = reply.into_iter();
        let outcome = items.next().and_then(string).unwrap_or_default();
        let job = items.next().and_then(|f| job_from_value(queue, f));
        Ok(match (outcome.as_str(), job) {
            ("ok", Some(job)) => CancelOutcome::Cancelled(job),
            ("not_cancellable", Some(job)) => CancelOutcome::NotCancellable(job),
            _ => CancelOutcome::NotFound,
        })
    }

    /// Moves up to `max` dead jobs back to the fronts of their lanes, in seq order.
    pub async fn redrive(&self, queue: &QueueRef, max: usize) -> RedisResult<u64> {
        SCRIPTS
            .redrive
            .key(&self.prefix)
            .arg(queue.tag())
            .arg(max)
            .invoke_async(&mut self.conn())
            .await
    }

    /// Retries or skips a stopped (blocked or dead) job.
    pub async fn resolve(
        &self,
        queue: &QueueRef,
        id: &str,
        action: Resolve,
    ) -> RedisResult<Resolution> {
        let reply: Vec<Value> = SCRIPTS
            .resolve
            .key(&self.prefix)
            .arg(queue.tag())
            .arg(id)
            .arg(match action {
                Resolve::Retry => "retry",
                Resolve::Skip => "skip",
            })
            .invoke_async(&mut self.conn())
            .await?;
        let mut items = reply.into_iter();
        let outcome = items.next().and_then(string).unwrap_or_default();
        let job = items.next().and_then(|f| job_from_value(queue, f));
        Ok(match (outcome.as_str(), job) {
            ("ok", Some(job)) => Resolution::Done(job),
            ("conflict", Some(job)) => Resolution::Conflict(job),
            _ => Resolution::NotFound,
        })
    }

    /// Mirrors a queue's engine settings into Redis and re-indexes it.
    pub async fn configure(&self, queue: &QueueRef, conf: &EngineConf) -> RedisResult<()> {
        SCRIPTS
            .configure
            .key(&self.prefix)
            .arg(queue.tag())
            .arg(if conf.push { "1" } else { "0" })
            .arg(if conf.paused { "1" } else { "0" })
            .arg(conf.on_exhausted)
            .arg(conf.retention_s)
            .invoke_async::<()>(&mut self.conn())
            .await
    }

    /// The job, if it exists (and belongs to `queue`'s owner).
    pub async fn get(&self, queue: &QueueRef, id: &str) -> RedisResult<Option<Job>> {
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(format!("{}job:{id}", self.queue_base(queue)))
            .query_async(&mut self.conn())
            .await?;
        Ok(job_from_fields(queue, fields.into_iter().collect()))
    }

    /// A page of the queue's jobs in seq order.
    pub async fn list(&self, queue: &QueueRef, filter: &ListFilter) -> RedisResult<JobPage> {
        self.list_from(queue, filter, "jobs").await
    }

    /// A page of the queue's dead jobs in seq order.
    pub async fn dead(&self, queue: &QueueRef, filter: &ListFilter) -> RedisResult<JobPage> {
        self.list_from(queue, filter, "dead").await
    }

    async fn list_from(
        &self,
        queue: &QueueRef,
        filter: &ListFilter,
        source: &str,
    ) -> RedisResult<JobPage> {
        let reply: Vec<Value> = SCRIPTS
            .list
            .key(&self.prefix)
            .arg(queue.tag())
            .arg(filter.after)
            .arg(filter.limit)
            .arg(filter.state.map(JobState::as_str).unwrap_or(""))
            .arg(filter.key.as_deref().unwrap_or(""))
            .arg(if filter.key.is_some() { "1" } else { "0" })
            .arg(LIST_BUDGET)
            .arg(source)
            .invoke_async(&mut self.conn())
            .await?;
        let mut items = reply.into_iter();
        let next = match items.next() {
            Some(Value::Int(n)) if n >= 0 => Some(n as u64),
            _ => None,
        };
        let jobs = items.filter_map(|f| job_from_value(queue, f)).collect();
        Ok(JobPage { jobs, next })
    }

    /// Counts of one queue, read atomically.
    pub async fn stats(&self, queue: &QueueRef) -> RedisResult<RawStats> {
        let v: Vec<i64> = SCRIPTS
            .stats
            .key(&self.prefix)
            .arg(queue.tag())
            .invoke_async(&mut self.conn())
            .await?;
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(RawStats {
            pending: at(0),
            active: at(1),
            delayed: at(2),
            blocked: at(3),
            dead: at(4),
            completed: at(5),
            cancelled: at(6),
            retried: at(7),
            oldest_pending_created_ms: v.get(8).filter(|n| **n >= 0).map(|n| *n as u64),
            now_ms: at(9),
            published_last_minute: at(10),
            completed_last_minute: at(11),
        })
    }

    /// Tags of every queue that has had jobs.
    pub async fn queue_tags(&self) -> RedisResult<Vec<String>> {
        redis::cmd("SMEMBERS")
            .arg(format!("{}:queues", self.prefix))
            .query_async(&mut self.conn())
            .await
    }

    /// Removes every key of the queue and its index entries.
    pub async fn delete_queue(&self, queue: &QueueRef) -> RedisResult<()> {
        let mut conn = self.conn();
        let pattern = format!("{}*", glob_escape(&self.queue_base(queue)));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let tag = queue.tag();
        redis::pipe()
            .zrem(format!("{}:index:push", self.prefix), &tag)
            .zrem(format!("{}:index:leases", self.prefix), &tag)
            .srem(format!("{}:queues", self.prefix), &tag)
            .query_async::<()>(&mut conn)
            .await
    }
}

fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected script reply",
        what.to_owned(),
    ))
}

fn glob_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn transition(outcome: String, job: Option<Job>) -> Transition {
    match (outcome.as_str(), job) {
        ("lease_lost", job) => Transition::LeaseLost(job),
        (_, Some(job)) => Transition::Done(job),
        (_, None) => Transition::LeaseLost(None),
    }
}

fn next_due(value: Option<Value>) -> Option<u64> {
    match value {
        Some(Value::Int(n)) if n >= 0 => Some(n as u64),
        _ => None,
    }
}

fn string(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A flat `HGETALL` reply (field, value, …) as a map.
fn fields_of(value: Value) -> Option<HashMap<String, String>> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut map = HashMap::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        map.insert(string(k)?, string(v)?);
    }
    (!map.is_empty()).then_some(map)
}

fn job_from_value(queue: &QueueRef, value: Value) -> Option<Job> {
    job_from_fields(queue, fields_of(value)?)
}

fn claimed_job(queue: QueueRef, value: Value) -> Option<Claimed> {
    let fields = fields_of(value)?;
    let lease = Lease {
        number: fields.get("lease_no")?.parse().ok()?,
        token: fields.get("lease_token")?.clone(),
    };
    let mut job = job_from_fields(&queue, fields)?;
    job.lease = Some(lease.render());
    Some(Claimed { queue, job, lease })
}

/// Builds the API job object from its stored hash.
fn job_from_fields(queue: &QueueRef, mut f: HashMap<String, String>) -> Option<Job> {
    let ms =
        |f: &HashMap<String, String>, name: &str| f.get(name).and_then(|v| v.parse::<u64>().ok());
    let mut state = JobState::parse(f.get("state")?)?;
    let available_at = ms(&f, "available_at");
    if state == JobState::Delayed && available_at.is_some_and(|at| at <= super::model::now_ms()) {
        state = JobState::Queued;
    }
    let raw = |text: Option<String>| text.and_then(|t| RawValue::from_string(t).ok());
    Some(Job {
        id: f.remove("id")?,
        queue: queue.name.as_str().to_owned(),
        key: f.remove("key").unwrap_or_default(),
        seq: ms(&f, "seq")?,
        state,
        payload: raw(f.remove("payload"))?,
        attempts: ms(&f, "attempts").unwrap_or(0) as u32,
        max_attempts: ms(&f, "max_attempts").unwrap_or(0) as u32,
        result: raw(f.remove("result")),
        last_error: f.remove("last_error"),
        created_at: rfc3339_ms(ms(&f, "created_at")?),
        started_at: ms(&f, "started_at").map(rfc3339_ms),
        finished_at: ms(&f, "finished_at").map(rfc3339_ms),
        available_at: available_at
            .filter(|_| state == JobState::Delayed)
            .map(rfc3339_ms),
        lease: None,
        lease_expires_at: ms(&f, "lease_expires_at")
            .filter(|_| state == JobState::Active)
            .map(rfc3339_ms),
    })
}
