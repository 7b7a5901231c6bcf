//! The queue engine: every state transition of a job is ONE atomic Lua script,
//! one module per transition beside its `.lua` file, each decoding its own
//! typed reply. The producer, the worker, the lease reaper and the HTTP
//! handlers all go through this module; nothing else writes queue keys.
//!
//! It must never build a key name inside Lua, touch two hash slots in one
//! script, or need keys of two queues in one script: that is what lets the
//! same engine run on one Redis and on a Redis Cluster (`docs/architecture.md`).
//!
//! ## Redis layout (engine v2)
//!
//! `P` is `redis.key_prefix`. Queues are spread over `redis.slot_groups`
//! slot groups by a stable hash of `<owner>:<queue>` (the queue id, `qid`);
//! every key of a group shares the hash tag `{g<n>}`, so a queue's keys and
//! its group's index keys live in one Redis Cluster slot and one script can
//! update both atomically. `Q` is `P:{g<n>}:q:<owner>:<queue>`.
//!
//! | key | type | content |
//! |---|---|---|
//! | `Q:m` | hash | `seq` counter; flow control: the mirrored `rate_per_s`, `rate_burst`, `max_active` and the token bucket `tb_tokens`, `tb_at`; `lane_scan` (the lanes listing's scan for lanes older than `Q:n`: cursor, then `done`); `completed`, `cancelled`, `retried` totals; `pending`, the number of unfinished jobs (written once per script run); the mirrored settings `push`, `paused`, `on_exhausted`, `retention_s` and their version `conf_v`; `watched_until` (ms until which finished jobs are announced to waiting reads); `born`, the settings version the queue was created with (its life, named by idempotency keys); after a delete only `deleted_v` (the deleted settings version, a tombstone for a day) |
//! | `Q:j` | hash | job id → msgpack record: key, seq, state, attempts, max_attempts, lease_no, lease_token, lease_expires_at, created_at, available_at, started_at, finished_at, last_error, result, next (the lane's next job id), outcome (what lease `lease_no` produced; its token stays beside it so a repeated ack/nack answers it), payload (its JSON text), then, once the job is leased again after a lease that produced an outcome, {lease_no, token, outcome} of that lease (its repeats still answer it) |
//! | `Q:b` | hash | no longer written (payloads are in the records); kept in `KEYS` so `delete` still removes an old one |
//! | `Q:l` | hash | lane key → msgpack {head id, tail id, length, hint}; lanes are chained through `next`, in seq order; the head stays until it is terminal; `hint` is the job a redrive last put back (where the next one is looked for) |
//! | `Q:r` | zset | lane keys whose head may start, score = ms when it may; a lane is in it iff its head is neither leased nor blocked |
//! | `Q:e` | zset | leased job ids by lease expiry |
//! | `Q:o` | zset | every stored job id by seq (listing) |
//! | `Q:p` | zset | no longer written (unfinished jobs are counted in `Q:m`'s `pending`; the oldest is the lowest lane head in `Q:n`); kept in `KEYS` so `delete` still removes an old one |
//! | `Q:d` | zset | ids published with `delay_ms`, by availability, until first leased |
//! | `Q:x`, `Q:k` | zset | dead / blocked job ids by seq |
//! | `Q:t` | zset | terminal job ids by when their retention ends (trimmed 128 at a time) |
//! | `Q:s` | hash | per-second publish/complete counters, a 60-field ring per kind |
//! | `Q:n` | zset | lanes with unfinished jobs for the lanes listing, stuck first: score = head seq, plus 10^15 unless the head is blocked |
//! | `Q:u` | hash | paused lanes: lane key → ms when its head may start (`''`: not yet); a paused lane is not in `Q:r` |
//! | `Q:h` | zset | ready lanes whose head has a priority, score = (9 − priority) × 2^42 + ready ms; claim looks here first (may keep stale entries; `Q:r` decides) |
//! | `Q:y` | hash | job id → priority (1–9), for jobs published with one |
//! | `Q:i:<idempotency key>` | string | `<job id> <born>` (`born`: `Q:m`'s settings version the queue was created with, so a key of the queue's earlier life does not count), expires after the idempotency window; a bare job id from before `born` existed counts while its job exists |
//! | `Q:c:<claim id>` | string | msgpack (id, lease number, token)… of the leases a claim with that `claim_id` took; expires with them |
//! | `P:{g<n>}:g:due` | zset | push queues (qids) with a ready lane, score = earliest ready time |
//! | `P:{g<n>}:g:leases` | zset | queues with leases, score = earliest lease expiry; a queue without leases but with finished records is there until its oldest record's retention ends (+2 s): the reaper's `recover` trims it |
//! | `P:{g<n>}:g:live` | zset | qids with unfinished jobs (the gauge sampler reads only these) |
//! | `P:{g<n>}:g:wake` | channel | `p<qid>` / `u<qid>`: a push / pull queue has a lane startable now; `d<qid>`: a job of a watched queue finished (sharded pub/sub on a cluster) |
//! | `P:layout` | string | the number of slot groups, fixed at first start |
//!
//! Times come from the Redis server clock (`TIME`), so processes agree.
//! Finding work never scans queues: the worker and the lease reaper read the
//! groups' indexes (one command per group) and are woken by the group
//! channels; a lost wake-up only delays work until the next poll.

mod ack;
mod cancel;
mod chain;
mod claim;
mod configure;
mod delete;
mod due;
mod extend;
mod fail;
mod lane_pause;
mod lanes;
mod list;
mod outcomes;
mod publish;
mod recover;
mod redrive;
mod release;
mod resolve;
mod stats;
mod view;
mod watch;

pub use cancel::CancelOutcome;
pub use chain::{Acked, ChainAck};
pub use claim::{ClaimBatch, Claimed, Mode};
pub use configure::EngineConf;
pub use due::{DueIndex, GroupDue};
pub use fail::Failure;
pub use lanes::{LaneFilter, LanePage};
pub use list::{JobPage, ListFilter};
pub use outcomes::{Outcome, OutcomeKind, Reported};
pub use publish::{NewJob, Published};
pub use recover::Recovered;
pub use release::Release;
pub use resolve::{Resolution, Resolve};
pub use stats::RawStats;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use rmpv::ValueRef;
use serde_json::value::RawValue;

use super::model::{Job, JobState, QueueRef, rfc3339_ms};

const LIB: &str = include_str!("lib.lua");

/// Why an engine call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Redis did not answer (down, unreachable, failing over, timed out): the
    /// caller may retry; the HTTP layer answers `503`.
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] RedisError),
    /// Redis answered something the engine does not understand (a script
    /// error, a reply of the wrong shape): a bug; `500` and a log line.
    #[error("unexpected redis reply: {0}")]
    Unexpected(String),
}

impl From<RedisError> for EngineError {
    fn from(err: RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        match err.kind() {
            ErrorKind::Parse
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::CrossSlot) => {
                Self::Unexpected(err.to_string())
            }
            _ => Self::Unavailable(err),
        }
    }
}

impl EngineError {
    /// The request may have reached Redis and run there, but its reply never
    /// came (the connection broke or timed out after sending): its outcome is
    /// unknown. A refused connection or an error reply (the cluster being
    /// down, a read-only replica) means it did not run.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Unavailable(err) => {
                !err.is_connection_refusal()
                    && (err.is_io_error() || err.is_timeout() || err.is_connection_dropped())
            }
            Self::Unexpected(_) => false,
        }
    }
}

pub type EngineResult<T> = Result<T, EngineError>;

/// A job-state transition's fenced lease: the lease number (monotonic per
/// job) and a random token. Rendered to clients as `"<number>.<token>"`.
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

    /// When a pull claim issued this lease (ms since the epoch, this
    /// service's clock), if its token says (`timed_token`): the start of the
    /// attempt, for the processing-time histogram. Tokens are compared
    /// whole by the engine, so only a token the engine issued ever settles
    /// an attempt.
    pub fn issued_at_ms(&self) -> Option<u64> {
        let base = self.token.split('-').next()?;
        let (_random, at) = base.split_at_checked(TOKEN_RANDOM_LEN)?;
        u64::from_str_radix(at.strip_prefix('t')?, 16).ok()
    }
}

/// Hex digits of a token's random part.
const TOKEN_RANDOM_LEN: usize = 32;

/// A fresh random lease token (also a worker's claim id and chain token).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fresh random lease token that also says when it was issued
/// (`Lease::issued_at_ms`): `<32 hex>t<ms, hex>`.
pub fn timed_token() -> String {
    format!("{}t{:x}", new_token(), super::model::now_ms())
}

/// Outcome of a lease-holder transition (ack, fail, extend).
#[derive(Debug)]
pub enum Transition {
    /// Applied; the job as it is now.
    Done(Job),
    /// A repeat of an ack or nack whose lease already produced `outcome`
    /// (its reply was lost): nothing changed; the job as it is now.
    Repeated { outcome: JobState, job: Job },
    /// The lease was stale or expired; nothing changed. The job, if it exists.
    LeaseLost(Option<Job>),
}

/// The Redis connection the engine talks through: one server, or a cluster.
/// Either is rebuilt after connection errors ([`Lazy`]).
#[derive(Clone)]
pub enum RedisConn {
    Single(Arc<Lazy<ConnectionManager>>),
    /// Connected on first use, so the process starts while the cluster is down.
    Cluster(Arc<Lazy<ClusterConnection>>),
}

/// Makes a connection.
pub type Connect<C> =
    Box<dyn Fn() -> futures_util::future::BoxFuture<'static, redis::RedisResult<C>> + Send + Sync>;

/// A connection made on first use, and made again after timeouts or
/// connection errors (at most once every [`RESET_EVERY`]). A cluster
/// connection whose view went stale during a failover can keep timing out
/// even towards healthy masters; a `ConnectionManager` whose connections are
/// killed in quick succession (`CLIENT KILL`) can end up answering "broken
/// pipe" to every request without reconnecting.
pub struct Lazy<C> {
    connect: Connect<C>,
    /// The connection and its generation (how many were made before it).
    conn: tokio::sync::Mutex<Option<(u64, C)>>,
    generation: std::sync::atomic::AtomicU64,
    last_reset: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often a failing connection is rebuilt at most.
const RESET_EVERY: Duration = Duration::from_millis(500);

impl<C: Clone> Lazy<C> {
    pub fn new(connect: Connect<C>) -> Self {
        Self {
            connect,
            conn: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            last_reset: std::sync::Mutex::new(None),
        }
    }

    /// The current connection and its generation, made if there is none.
    async fn get(&self) -> redis::RedisResult<(u64, C)> {
        let mut conn = self.conn.lock().await;
        if let Some(current) = conn.as_ref() {
            return Ok(current.clone());
        }
        let fresh = (self.connect)().await?;
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        *conn = Some((generation, fresh.clone()));
        Ok((generation, fresh))
    }

    /// Looks at the outcome of a request made on connection `generation`: a
    /// sign of a broken connection or a stale view drops that connection
    /// (not a newer one), so a later request starts afresh.
    async fn check<T>(
        &self,
        generation: u64,
        result: redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        if let Err(err) = &result
            && stale_view(err)
        {
            let due = {
                let mut last = self.last_reset.lock().unwrap_or_else(|e| e.into_inner());
                let due = last.is_none_or(|at| at.elapsed() >= RESET_EVERY);
                if due {
                    *last = Some(std::time::Instant::now());
                }
                due
            };
            let mut conn = self.conn.lock().await;
            if due
                && conn
                    .as_ref()
                    .is_some_and(|(current, _)| *current == generation)
            {
                log::warn!("redis connection reset after: {err}");
                *conn = None;
            }
        }
        result
    }
}

/// Errors after which a connection may be broken or a cluster connection's
/// view of the cluster stale: timeouts and broken connections, and a write
/// that reached a node which is no master (any more) or a shard that is down.
fn stale_view(err: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    err.is_timeout()
        || err.is_io_error()
        || err.is_connection_dropped()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
            ) | ErrorKind::ClusterConnectionNotFound
        )
}

impl RedisConn {
    /// Sends `cmd` to every master — on a cluster a reply per master, keyed
    /// by its address (the client connects to masters only); on one Redis to
    /// it — whatever the command's own routing would be (`CONFIG GET` goes to
    /// one random node of a cluster).
    pub async fn on_every_master(&self, cmd: Cmd) -> redis::RedisResult<Value> {
        match self {
            RedisConn::Single(lazy) => {
                RedisConn::with(lazy, async |c: &mut ConnectionManager| {
                    cmd.query_async::<Value>(c).await
                })
                .await
            }
            RedisConn::Cluster(lazy) => {
                use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                RedisConn::with(lazy, async |c: &mut ClusterConnection| {
                    c.route_command(cmd, routing).await
                })
                .await
            }
        }
    }

    /// Runs `request` on the current connection, resetting it after errors.
    async fn with<T, C, F>(lazy: &Lazy<C>, request: F) -> redis::RedisResult<T>
    where
        C: Clone,
        F: AsyncFnOnce(&mut C) -> redis::RedisResult<T>,
    {
        let (generation, mut conn) = lazy.get().await?;
        let result = request(&mut conn).await;
        lazy.check(generation, result).await
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(lazy) => Box::pin(Self::with(lazy, async |c: &mut ConnectionManager| {
                c.req_packed_command(cmd).await
            })),
            Self::Cluster(lazy) => Box::pin(Self::with(lazy, async |c: &mut ClusterConnection| {
                c.req_packed_command(cmd).await
            })),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(lazy) => {
                Box::pin(Self::with(lazy, async move |c: &mut ConnectionManager| {
                    c.req_packed_commands(pipeline, offset, count).await
                }))
            }
            Self::Cluster(lazy) => {
                Box::pin(Self::with(lazy, async move |c: &mut ClusterConnection| {
                    c.req_packed_commands(pipeline, offset, count).await
                }))
            }
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The engine's scripts by name: each becomes one function of the engine's
/// Redis function library ([`Library`]).
const SCRIPTS: [(&str, &str); 20] = [
    ("ack", include_str!("ack.lua")),
    ("cancel", include_str!("cancel.lua")),
    ("chain", include_str!("chain.lua")),
    ("claim", include_str!("claim.lua")),
    ("configure", include_str!("configure.lua")),
    ("delete", include_str!("delete.lua")),
    ("extend", include_str!("extend.lua")),
    ("fail", include_str!("fail.lua")),
    ("lane_pause", include_str!("lane_pause.lua")),
    ("lanes", include_str!("lanes.lua")),
    ("list", include_str!("list.lua")),
    ("outcomes", include_str!("outcomes.lua")),
    ("publish", include_str!("publish.lua")),
    ("recover", include_str!("recover.lua")),
    ("redrive", include_str!("redrive.lua")),
    ("release", include_str!("release.lua")),
    ("resolve", include_str!("resolve.lua")),
    ("stats", include_str!("stats.lua")),
    ("view", include_str!("view.lua")),
    ("watch", include_str!("watch.lua")),
];

/// Scripts that only read: registered `no-writes` and called with
/// `FCALL_RO`, so a Redis that refuses writes (out of memory under
/// `noeviction`, too few replicas for `min-replicas-to-write`) still answers
/// job and queue reads.
fn read_only(script: &str) -> bool {
    matches!(script, "view" | "stats")
}

/// One engine script: a function of the [`Library`], called with `FCALL`.
struct EngineScript {
    name: &'static str,
}

impl EngineScript {
    const fn new(name: &'static str) -> Self {
        Self { name }
    }
}

/// The engine's Redis function library: `lib.lua` once, then every script
/// of [`SCRIPTS`] as a function whose body starts with `begin_run`. Loaded
/// with `FUNCTION LOAD` (on a cluster, to the called key's master) when a
/// call finds its function missing — first use, a Redis that lost its data, a new
/// master — so the library's definitions are made once per load, not per
/// call as an `EVAL` prelude would (about 14 µs of Redis time per call).
/// Its name carries a hash of its text, so each version calls its own (an
/// older version's library stays until deleted: `FUNCTION DELETE` once no
/// process of that version runs). Wake-ups go out with `PUBLISH` on
/// one server and `SPUBLISH` (sharded, stays on the shard) on a cluster,
/// hence one library per flavour.
struct Library {
    /// `orderly_<hash>`; function `<name>_<script>`.
    name: String,
    text: String,
}

impl Library {
    fn get(cluster: bool) -> &'static Library {
        static SINGLE: OnceLock<Library> = OnceLock::new();
        static CLUSTER: OnceLock<Library> = OnceLock::new();
        let (cell, cmd) = if cluster {
            (&CLUSTER, "SPUBLISH")
        } else {
            (&SINGLE, "PUBLISH")
        };
        cell.get_or_init(|| Library::build(cmd))
    }

    fn build(publish_cmd: &str) -> Library {
        // FNV-1a over everything the text is made of.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |text: &str| {
            for byte in text.bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(publish_cmd);
        feed(LIB);
        for (name, body) in SCRIPTS {
            feed(name);
            feed(body);
        }
        let name = format!("orderly_{hash:016x}");
        let mut text = format!("#!lua name={name}\nlocal PUBLISH_CMD = '{publish_cmd}'\n{LIB}\n");
        for (script, body) in SCRIPTS {
            let flags = if read_only(script) { "'no-writes'" } else { "" };
            text.push_str(&format!(
                "redis.register_function{{function_name = '{name}_{script}', flags = {{ {flags} }}, \
                 callback = function(KEYS, ARGV)\nbegin_run(KEYS, ARGV)\n\
                 return end_run((function()\n{body}\nend)())\nend}}\n"
            ));
        }
        Library { name, text }
    }

    /// `FUNCTION LOAD REPLACE` of the library.
    fn load_command(&self) -> Cmd {
        log::info!("loading redis function library {}", self.name);
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(&self.text);
        cmd
    }

    fn function(&self, script: &EngineScript) -> String {
        format!("{}_{}", self.name, script.name)
    }
}

/// A call of one engine script: its keys and arguments.
struct Invocation {
    script: &'static EngineScript,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation {
    fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn key<T: redis::ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    fn command(&self, library: &Library) -> Cmd {
        let fcall = if read_only(self.script.name) {
            "FCALL_RO"
        } else {
            "FCALL"
        };
        let mut cmd = redis::cmd(fcall);
        cmd.arg(library.function(self.script))
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}

/// Redis does not know the function (the library is not loaded there).
fn function_missing(err: &RedisError) -> bool {
    err.to_string().contains("Function not found")
}

/// The fixed keys of one queue and its slot group, in the order every
/// script expects them in `KEYS` (see `lib.lua`).
struct QueueKeys {
    keys: [String; 21],
}

/// `KEYS` index (1-based, as Lua counts) of a script's first extra key.
const FIRST_EXTRA_KEY: usize = 22;

const QUEUE_KEY_SUFFIXES: [&str; 13] = [
    "m", "j", "b", "l", "r", "e", "o", "p", "d", "x", "k", "t", "s",
];

/// Queue keys of lanes, flow control and priority (`KEYS[18..=21]`, after
/// the group keys): lane index, paused lanes, prioritised ready lanes, job
/// priorities.
const LANE_KEY_SUFFIXES: [&str; 4] = ["n", "u", "h", "y"];

/// How publishes wait for replicas (`redis.wait_replicas`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaWait {
    pub replicas: u32,
    pub timeout_ms: u64,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    conn: RedisConn,
    prefix: Arc<str>,
    groups: u32,
    cluster: bool,
    wait: ReplicaWait,
}

impl Engine {
    pub fn new(conn: RedisConn, prefix: &str, groups: u32) -> Self {
        let cluster = matches!(conn, RedisConn::Cluster(_));
        Self {
            conn,
            prefix: Arc::from(prefix),
            groups: groups.max(1),
            cluster,
            wait: ReplicaWait::default(),
        }
    }

    /// Publishes wait for `wait.replicas` replicas (0: they do not wait).
    pub fn with_replica_wait(mut self, wait: ReplicaWait) -> Self {
        self.wait = wait;
        self
    }

    /// Waits until the writes so far to `key`'s master are on
    /// `wait.replicas` replicas, or `wait.timeout_ms` passed; answers how
    /// many replicas have them.
    async fn wait_for_replicas(&self, key: &str) -> EngineResult<u64> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.wait.replicas).arg(self.wait.timeout_ms);
        let reply = self.on_key_master(cmd, key.as_bytes()).await?;
        int(&reply).ok_or_else(|| unexpected("WAIT reply"))
    }

    /// Sends `cmd` to the master that holds `key` (on one server: to it),
    /// whatever the command's own routing would be.
    async fn on_key_master(&self, cmd: Cmd, key: &[u8]) -> EngineResult<Value> {
        Ok(match &self.conn {
            RedisConn::Single(lazy) => {
                RedisConn::with(lazy, async |c: &mut ConnectionManager| {
                    cmd.query_async::<Value>(c).await
                })
                .await?
            }
            RedisConn::Cluster(lazy) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let (generation, mut conn) = lazy.get().await?;
                lazy.check(generation, conn.route_command(cmd, routing).await)
                    .await?
            }
        })
    }

    /// An engine on the Redis (or cluster) `settings` name.
    pub fn connect(settings: &crate::configuration::RedisSettings) -> redis::RedisResult<Self> {
        let conn = crate::storage::redis_connection(settings)?;
        Ok(Self::new(
            conn,
            &settings.key_prefix,
            settings.slot_groups(),
        ))
    }

    /// Number of slot groups.
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// The slot group of a queue: FNV-1a of its id, stable across processes
    /// and versions (it decides where the queue's keys live).
    pub fn group_of(&self, queue: &QueueRef) -> u32 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in queue.tag().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % u64::from(self.groups)) as u32
    }

    fn group_base(&self, group: u32) -> String {
        format!("{}:{{g{group}}}:g:", self.prefix)
    }

    /// The wake channel of a slot group.
    pub fn wake_channel(&self, group: u32) -> String {
        format!("{}wake", self.group_base(group))
    }

    /// Every group's wake channel, by group number.
    pub fn wake_channels(&self) -> Vec<String> {
        (0..self.groups).map(|g| self.wake_channel(g)).collect()
    }

    /// The prefix every key of `queue` starts with.
    pub fn queue_base(&self, queue: &QueueRef) -> String {
        format!(
            "{}:{{g{}}}:q:{}:",
            self.prefix,
            self.group_of(queue),
            queue.tag()
        )
    }

    fn keys(&self, queue: &QueueRef) -> QueueKeys {
        let base = self.queue_base(queue);
        let group = self.group_base(self.group_of(queue));
        let keys = std::array::from_fn(|i| match i {
            0..13 => format!("{base}{}", QUEUE_KEY_SUFFIXES[i]),
            13 => format!("{group}due"),
            14 => format!("{group}leases"),
            15 => format!("{group}live"),
            16 => format!("{group}wake"),
            _ => format!("{base}{}", LANE_KEY_SUFFIXES[i - 17]),
        });
        QueueKeys { keys }
    }

    /// The fixed keys of `queue` in the order every script gets them
    /// (`lib.lua`'s header): for tests that audit the raw layout.
    pub fn queue_keys(&self, queue: &QueueRef) -> [String; 21] {
        self.keys(queue).keys
    }

    /// An invocation of `script` on `queue`: its fixed keys, then the queue id.
    fn invocation(&self, script: &'static EngineScript, queue: &QueueRef) -> Invocation {
        let mut invocation = Invocation {
            script,
            keys: Vec::with_capacity(22),
            args: Vec::with_capacity(8),
        };
        for key in self.keys(queue).keys {
            invocation.key(key);
        }
        invocation.arg(queue.tag());
        invocation
    }

    /// An invocation of a lease holder's transition (`script`) on job `id`
    /// of `queue` under `lease`: the fixed keys, the queue id, then id,
    /// lease number and token; the transition's own arguments follow.
    fn lease_invocation(
        &self,
        script: &'static EngineScript,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
    ) -> Invocation {
        let mut invocation = self.invocation(script, queue);
        invocation.arg(id).arg(lease.number).arg(&lease.token);
        invocation
    }

    /// Runs a transition that answers `{ outcome, job }`.
    async fn run_transition(
        &self,
        invocation: &Invocation,
        queue: &QueueRef,
    ) -> EngineResult<Transition> {
        let reply: Vec<Value> = self.run(invocation).await?;
        Ok(transition(queue, reply))
    }

    /// Calls the script's function; loads the library first where Redis
    /// does not have it, and calls once more.
    async fn run<T: redis::FromRedisValue>(&self, invocation: &Invocation) -> EngineResult<T> {
        let library = Library::get(self.cluster);
        let cmd = invocation.command(library);
        let mut conn = self.conn.clone();
        match cmd.query_async::<T>(&mut conn).await {
            Err(err) if function_missing(&err) => {}
            other => return Ok(other?),
        }
        // Loaded on the called key's master only (its replicas get it by
        // replication, another master at its own first miss), so one master
        // being down does not fail calls that never go there.
        let key = &invocation.keys[0];
        self.on_key_master(library.load_command(), key).await?;
        match cmd.query_async::<T>(&mut conn).await {
            Err(err) if function_missing(&err) && self.cluster => {}
            other => return Ok(other?),
        }
        // Still missing: the call went elsewhere than the key's master in
        // the client's slot map (ASK to the importing master while a slot
        // migrates). Every master gets it; one that is down does not stop
        // the others.
        let everywhere = library.load_command();
        if let Err(err) = everywhere.query_async::<Value>(&mut conn).await {
            log::warn!("loading {} on every master: {err}", library.name);
        }
        Ok(cmd.query_async::<T>(&mut conn).await?)
    }

    /// Records the number of slot groups at first start; refuses a
    /// different number later (queues would be looked for in other slots).
    pub async fn check_layout(&self) -> EngineResult<()> {
        let key = format!("{}:layout", self.prefix);
        let mut conn = self.conn.clone();
        let _: bool = redis::cmd("SET")
            .arg(&key)
            .arg(self.groups)
            .arg("NX")
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        let stored: u32 = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        if stored != self.groups {
            return Err(EngineError::Unexpected(format!(
                "redis.slot_groups is {} but the data in Redis was written with {stored}",
                self.groups
            )));
        }
        Ok(())
    }

    /// `true` if Redis answers `PING` within `timeout` (every master, on a
    /// cluster: the cluster client routes PING to all of them).
    pub async fn answers(&self, timeout: Duration) -> bool {
        let mut conn = self.conn.clone();
        let ping = async move { redis::cmd("PING").query_async::<Value>(&mut conn).await };
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }
}

fn unexpected(what: &str) -> EngineError {
    EngineError::Unexpected(what.to_owned())
}

fn string(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) if *n >= 0 => Some(*n as u64),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

fn next_due(value: Option<Value>) -> Option<u64> {
    match value {
        Some(Value::Int(n)) if n >= 0 => Some(n as u64),
        _ => None,
    }
}

/// A job as the scripts return it (`view` in lib.lua), with its lease.
struct JobView {
    job: Job,
    lease: Option<Lease>,
}

/// Decodes a script's job view (`view` in lib.lua): the id and the record
/// as its scripts pack it, 17 msgpack values in a row — key, seq, state,
/// attempts, max_attempts, lease_no, lease_token, lease_expires_at,
/// created_at, available_at, started_at, finished_at, last_error, result,
/// next, outcome, payload (`false` where absent); an 18th (an earlier
/// lease's outcome, for repeats) may follow and is not read. `None` for an
/// empty array (no such job).
fn job_view(queue: &QueueRef, value: Value) -> Option<JobView> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut items = items.into_iter();
    let id = string(items.next()?)?;
    let Some(Value::BulkString(packed)) = items.next() else {
        return None;
    };
    let mut rd = packed.as_slice();
    let mut fields = std::iter::from_fn(|| rmpv::decode::read_value_ref(&mut rd).ok());
    let mut next = || fields.next().unwrap_or(ValueRef::Nil);
    let text = |v: ValueRef| match v {
        ValueRef::String(s) => s.into_str().map(str::to_owned),
        _ => None,
    };
    let number = |v: ValueRef| match v {
        ValueRef::Integer(n) => n.as_u64(),
        // (cmsgpack writes a Lua number that is not integral as a float.)
        ValueRef::F64(f) if f >= 0.0 => Some(f as u64),
        ValueRef::F32(f) if f >= 0.0 => Some(f as u64),
        _ => None,
    };
    let key = text(next()).unwrap_or_default();
    let seq = number(next())?;
    let mut state = JobState::parse(&text(next())?)?;
    let attempts = number(next()).unwrap_or(0) as u32;
    let max_attempts = number(next()).unwrap_or(0) as u32;
    let lease_no = number(next());
    let lease_token = text(next());
    let lease_expires_at = number(next());
    let created_at = number(next())?;
    let available_at = number(next());
    let started_at = number(next());
    let finished_at = number(next());
    let last_error = text(next());
    let result = text(next());
    let _next_in_lane = next();
    let _outcome = next();
    let payload = text(next())?;
    if state == JobState::Delayed && available_at.is_some_and(|at| at <= super::model::now_ms()) {
        state = JobState::Queued;
    }
    let raw = |text: Option<String>| text.and_then(|t| RawValue::from_string(t).ok());
    let lease = match (lease_no, lease_token) {
        (Some(number), Some(token)) if state == JobState::Active => Some(Lease { number, token }),
        _ => None,
    };
    let job = Job {
        id,
        queue: queue.name.as_str().to_owned(),
        key,
        seq,
        state,
        payload: RawValue::from_string(payload).ok()?,
        attempts,
        max_attempts,
        result: raw(result),
        last_error,
        created_at: rfc3339_ms(created_at),
        started_at: started_at.map(rfc3339_ms),
        finished_at: finished_at.map(rfc3339_ms),
        available_at: available_at
            .filter(|_| state == JobState::Delayed)
            .map(rfc3339_ms),
        lease: None,
        outcome: None,
        lease_expires_at: lease_expires_at
            .filter(|_| state == JobState::Active)
            .map(rfc3339_ms),
    };
    Some(JobView { job, lease })
}

fn job_from_value(queue: &QueueRef, value: Value) -> Option<Job> {
    job_view(queue, value).map(|v| v.job)
}

/// Decodes `{ outcome, job }` replies.
fn outcome_and_job(queue: &QueueRef, reply: Vec<Value>) -> (String, Option<Job>) {
    let mut items = reply.into_iter();
    let outcome = items.next().and_then(string).unwrap_or_default();
    let job = items.next().and_then(|v| job_from_value(queue, v));
    (outcome, job)
}

/// A transition script's reply: { outcome, job-or-empty [, 'repeat'] }.
fn transition(queue: &QueueRef, mut reply: Vec<Value>) -> Transition {
    let repeat = reply.len() > 2 && reply.pop().and_then(string).as_deref() == Some("repeat");
    let (outcome, job) = outcome_and_job(queue, reply);
    match (outcome.as_str(), job) {
        ("lease_lost", job) => Transition::LeaseLost(job),
        (outcome, Some(job)) if repeat => match JobState::parse(outcome) {
            Some(outcome) => Transition::Repeated { outcome, job },
            None => Transition::Done(job),
        },
        (_, Some(job)) => Transition::Done(job),
        (_, None) => Transition::LeaseLost(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::model::QueueName;

    #[test]
    fn a_timed_token_tells_when_it_was_issued_and_others_do_not() {
        let before = crate::queue::model::now_ms();
        let lease = Lease {
            number: 1,
            token: format!("{}-3", timed_token()),
        };
        let issued = lease.issued_at_ms().expect("a timed token");
        assert!(issued >= before && issued <= crate::queue::model::now_ms());
        for token in [
            new_token(),
            format!("{}-1", new_token()),
            "t5".into(),
            "x".repeat(64),
        ] {
            assert_eq!(Lease { number: 1, token }.issued_at_ms(), None);
        }
    }

    fn engine(groups: u32) -> Engine {
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let connect: Connect<ConnectionManager> = Box::new(move || {
            let client = client.clone();
            Box::pin(
                async move { ConnectionManager::new_lazy_with_config(client, Default::default()) },
            )
        });
        Engine::new(RedisConn::Single(Arc::new(Lazy::new(connect))), "P", groups)
    }

    #[actix_web::test]
    async fn a_queue_keys_and_its_group_keys_share_one_hash_tag() {
        let engine = engine(64);
        let queue = QueueRef::new("owner-1", QueueName::parse("emails").unwrap());
        let keys = engine.keys(&queue).keys;
        let tag = format!("{{g{}}}", engine.group_of(&queue));
        for key in &keys {
            let open = key.find('{').unwrap();
            let close = key[open..].find('}').unwrap() + open;
            assert_eq!(&key[open..=close], tag, "{key}");
        }
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[actix_web::test]
    async fn queues_spread_over_every_group() {
        let engine = engine(16);
        let groups: std::collections::HashSet<u32> = (0..400)
            .map(|i| {
                let name = QueueName::parse(&format!("q{i}")).unwrap();
                engine.group_of(&QueueRef::new("owner", name))
            })
            .collect();
        assert_eq!(groups.len(), 16);
    }
}
