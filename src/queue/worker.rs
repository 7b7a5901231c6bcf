//! The worker actor: drives push-queue jobs to an outcome.
//!
//! Started under `actix::Supervisor`. It leases startable lane heads of push
//! queues (`Engine::claim` per queue, one lease per lane, so lanes never run
//! two jobs at once), keeps up to `worker.concurrency` deliveries in flight,
//! extends each lease while its delivery runs, and reports every outcome to the
//! engine (ack, retry with backoff, or exhaustion). A completed job's ack also
//! leases the lane's next head when it may start now and no other push lane is
//! waiting (`Engine::ack_and_lease_next`), and that job is delivered in the
//! same slot: a busy lane costs one Redis round trip per job. It learns which
//! queues to claim from the wake hub (`Wake(Some(queue))`), and from a poll
//! of every slot group's push due index at the next scheduled due time and
//! every second as a fallback; it never spins. Expired leases are the lease
//! reaper's (`reaper.rs`), gauges the sampler's (`sampler.rs`).
//!
//! A Redis error never cancels a delivery in flight: claiming pauses with a
//! backoff, a lease extension that fails is tried again, and an outcome that
//! could not be reported is reported again (acks and nacks are idempotent per
//! lease, and a claim is repeated with its `claim_id`) for as long as the
//! lease is known to live. A delivery whose lease is lost (another process
//! took the job over, or it could not be extended in time) is aborted. If the
//! actor itself stops (a panic, [`Crash`]), the supervisor restarts it and the
//! restarted actor first releases the leases its cancelled deliveries held. A
//! panic in delivery code becomes a failed attempt. Pull-mode queues are never
//! touched here.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;

use super::ack_commit::AckCommit;
use super::delivery::{Push, PushOutcome, Pusher};
use super::engine::{
    ChainAck, ClaimBatch, Claimed, DueIndex, Engine, EngineError, EngineResult, Failure, Lease,
    Mode, Release, Transition, new_token,
};
use super::model::{Delivery, JobState, QueueRef};
pub use super::notify::Wake;
use super::registry::QueueRegistry;
use crate::metrics::JobMetrics;

/// Fallback poll of the groups' due indexes, in case a wake was missed.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often leases that could not be released are tried again.
const ORPHAN_RETRY: Duration = Duration::from_millis(500);
/// Delay before a job given back unstarted may be claimed again.
const UNSTARTED_RETRY_MS: u64 = 1_000;
/// The longest one claim may take before it counts as failed (so a stuck
/// request cannot stop claiming).
const ROUND_LIMIT: Duration = Duration::from_secs(15);
/// How long shutdown waits for chained jobs to be handed back.
const GIVE_BACK_GRACE: Duration = Duration::from_secs(2);
/// First pause before a failed lease extension or outcome report is tried
/// again (doubling up to [`REPORT_PAUSE_MAX`]).
const REPORT_PAUSE: Duration = Duration::from_millis(50);
const REPORT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Stop the actor as if it had failed (fault injection and tests); its
/// supervisor restarts it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Graceful shutdown: start no new delivery, wait up to `grace` for the ones
/// in flight, then release the leases of those still running. Answers how many
/// leases were released.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain {
    pub grace: Duration,
}

/// What every delivery needs; shared by the actor and its futures.
pub struct WorkerDeps {
    pub engine: Engine,
    /// Group commit of completed deliveries' acks.
    pub acks: Arc<AckCommit>,
    pub registry: QueueRegistry,
    pub pusher: Pusher,
    pub metrics: JobMetrics,
    /// Lease of a push delivery; renewed every third of it while it runs.
    pub lease_ms: u64,
    /// Push queues waiting for a free slot (the worker's candidates): while
    /// any wait, an ack does not lease its lane's next job, so slots go back
    /// to claiming and busy lanes cannot starve other queues (on a cluster
    /// the ack script only sees its own slot group).
    pub waiting_queues: std::sync::atomic::AtomicUsize,
    /// Queues whose settings this process could not read (none cached and
    /// MongoDB not answering), and until when it leaves them to others.
    pub unreadable: std::sync::Mutex<HashMap<String, Instant>>,
}

pub struct Worker {
    deps: Arc<WorkerDeps>,
    concurrency: usize,
    /// Leases held by deliveries of this actor, released after a restart.
    in_flight: HashMap<String, (QueueRef, Lease)>,
    /// Leases of cancelled deliveries that could not be released yet.
    orphans: Vec<(String, (QueueRef, Lease))>,
    /// Push queues that may have a startable lane, to claim from in turn.
    candidates: VecDeque<QueueRef>,
    candidate_set: HashSet<QueueRef>,
    /// A poll of the groups' due indexes is wanted before the next claim.
    poll_wanted: bool,
    claiming: bool,
    claim_again: bool,
    consecutive_failures: u32,
    resume_at: Option<Instant>,
    next_due: Option<(Instant, SpawnHandle)>,
    /// Set by [`Drain`]: no new claims, and deliveries started from now on
    /// lease no next head with their ack (a chained job leased just before
    /// is delivered or, after the grace period, released like the others).
    draining: bool,
    /// Deliveries in flight, watched by [`Drain`].
    in_flight_count: tokio::sync::watch::Sender<usize>,
}

impl Worker {
    pub fn new(deps: Arc<WorkerDeps>, concurrency: usize) -> Self {
        Self {
            deps,
            concurrency: concurrency.max(1),
            in_flight: HashMap::new(),
            orphans: Vec::new(),
            candidates: VecDeque::new(),
            candidate_set: HashSet::new(),
            poll_wanted: true,
            claiming: false,
            claim_again: false,
            consecutive_failures: 0,
            resume_at: None,
            next_due: None,
            draining: false,
            in_flight_count: tokio::sync::watch::Sender::new(0),
        }
    }

    fn restart_delay(&self) -> Duration {
        match self.consecutive_failures {
            0 => Duration::ZERO,
            n => Duration::from_millis(100u64 << n.min(5)).min(Duration::from_secs(2)),
        }
    }

    /// A claim round failed (Redis did not answer): claiming pauses with a
    /// growing backoff; deliveries in flight go on.
    fn claim_failed(&mut self, ctx: &mut Context<Self>, err: EngineError) {
        self.consecutive_failures += 1;
        let pause = self.restart_delay();
        log::warn!("claiming paused for {pause:?} after a redis error: {err}");
        self.poll_wanted = true;
        self.resume_at = Some(Instant::now() + pause);
        ctx.run_later(pause, |act, ctx| {
            act.resume_at = None;
            act.claim(ctx);
        });
    }

    /// Remembers a push queue to claim from.
    fn candidate(&mut self, queue: QueueRef) {
        if self.candidate_set.insert(queue.clone()) {
            self.candidates.push_back(queue);
        }
        self.count_waiting();
    }

    fn count_waiting(&self) {
        let waiting = self.candidates.len();
        self.deps
            .waiting_queues
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
    }

    /// Claims from the candidate queues (after a poll of the groups' due
    /// indexes, when one is wanted) until the free slots are used.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        if self.claiming {
            self.claim_again = true;
            return;
        }
        if self.resume_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let capacity = self.concurrency.saturating_sub(self.in_flight.len());
        if capacity == 0 || (self.candidates.is_empty() && !self.poll_wanted) {
            return;
        }
        self.claiming = true;
        let poll = std::mem::take(&mut self.poll_wanted);
        let mut queues: Vec<QueueRef> = self.candidates.drain(..).collect();
        self.candidate_set.clear();
        self.count_waiting();
        let deps = self.deps.clone();
        let claim = async move {
            let mut next_poll_ms = None;
            if poll {
                let due = deps.engine.due_everywhere(DueIndex::Push).await?;
                for queue in due.queues {
                    if !queues.contains(&queue) {
                        queues.push(queue);
                    }
                }
                next_poll_ms = due.next_due_in_ms.filter(|ms| *ms > 0);
            }
            let mut left = capacity;
            // Settings reads of uncached queues stop for this round after
            // this (a round must not wait on MongoDB for each of them).
            let probe_until = Instant::now() + SETTINGS_PROBE_ROUND;
            let mut claimed = Vec::new();
            let mut untried = Vec::new();
            for queue in queues {
                if left == 0 {
                    untried.push(queue);
                    continue;
                }
                // One queue's failure (its shard failing over, a slow reply)
                // never drops what the round already leased: that queue waits
                // for the next poll, the others go on. A claim whose reply
                // was lost is repeated once with its claim id, which answers
                // the leases it took rather than stranding them.
                // Lanes of a queue whose settings this process cannot read
                // would only be claimed and handed back (again and again,
                // while other processes could deliver them): skipped.
                if !settings_readable(&deps, &queue, probe_until).await {
                    next_poll_ms = Some(
                        next_poll_ms
                            .map_or(UNREADABLE_RETRY_MS, |p: u64| p.min(UNREADABLE_RETRY_MS)),
                    );
                    continue;
                }
                let claim = claim_once_more(&deps, &queue, left);
                let batch: ClaimBatch = match tokio::time::timeout(ROUND_LIMIT, claim).await {
                    Ok(Ok(batch)) => batch,
                    Ok(Err(err)) => {
                        log::warn!("claim on {} failed: {err}", queue.tag());
                        next_poll_ms = Some(next_poll_ms.map_or(500, |p: u64| p.min(500)));
                        continue;
                    }
                    Err(_) => {
                        log::warn!("claim on {} timed out", queue.tag());
                        next_poll_ms = Some(next_poll_ms.map_or(500, |p: u64| p.min(500)));
                        continue;
                    }
                };
                left -= batch.jobs.len().min(left);
                match batch.next_due_in_ms {
                    // More startable now than the slots took: try again.
                    Some(0) => untried.push(queue),
                    Some(ms) => next_poll_ms = Some(next_poll_ms.map_or(ms, |p: u64| p.min(ms))),
                    None => {}
                }
                claimed.extend(batch.jobs);
            }
            Ok::<_, EngineError>((claimed, untried, next_poll_ms))
        };

        ctx.spawn(claim.into_actor(self).map(move |result, act, ctx| {
            act.claiming = false;
            let (claimed, untried, next_poll_ms) = match result {
                Ok(outcome) => outcome,
                Err(err) => return act.claim_failed(ctx, err),
            };
            act.consecutive_failures = 0;
            for job in claimed {
                act.deliver(job, ctx);
            }
            let more = !untried.is_empty();
            for queue in untried {
                act.candidate(queue);
            }
            if let Some(ms) = next_poll_ms {
                act.wake_at(Duration::from_millis(ms), ctx);
            }
            let has_room = act.in_flight.len() < act.concurrency;
            if std::mem::take(&mut act.claim_again) || (more && has_room) {
                ctx.notify(Wake(None));
            }
        }));
    }

    /// Schedules a wake-up, keeping only the earliest pending one.
    fn wake_at(&mut self, after: Duration, ctx: &mut Context<Self>) {
        let due = Instant::now() + after;
        if let Some((existing, handle)) = self.next_due.take() {
            if existing <= due && existing > Instant::now() {
                self.next_due = Some((existing, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(after, |act, ctx| {
            act.next_due = None;
            act.poll_wanted = true;
            act.claim(ctx);
        });
        self.next_due = Some((due, handle));
    }

    fn deliver(&mut self, claimed: Claimed, ctx: &mut Context<Self>) {
        let id = claimed.job.id.clone();
        let held = (claimed.queue.clone(), claimed.lease.clone());
        self.in_flight.insert(id.clone(), held);
        self.in_flight_count.send_replace(self.in_flight.len());
        let deps = self.deps.clone();
        let chain = !self.draining;
        let queue = claimed.queue.clone();
        ctx.spawn(deliver_one(deps, claimed, chain).into_actor(self).map(
            move |after, act, ctx| {
                act.in_flight.remove(&id);
                act.in_flight_count.send_replace(act.in_flight.len());
                match after {
                    // The lane's next job, already leased: same slot.
                    // Shutting down: nothing new starts, the chained job goes back.
                    After::Chained(next) if act.draining => act.give_back(*next, ctx),
                    After::Chained(next) => act.deliver(*next, ctx),
                    // The queue may have more startable lanes (or other
                    // queues wait for the slot): claim.
                    After::Due(Some(0)) => {
                        act.candidate(queue);
                        act.claim(ctx);
                    }
                    After::Due(Some(ms)) => {
                        act.wake_at(Duration::from_millis(ms), ctx);
                        act.claim(ctx);
                    }
                    After::Due(None) => act.claim(ctx),
                }
            },
        ));
    }

    /// Hands a job the ack chained during shutdown back to the head of its
    /// lane, unstarted (its attempt is taken back). Counted as in flight until
    /// done, so `Drain` waits for it.
    fn give_back(&mut self, claimed: Claimed, ctx: &mut Context<Self>) {
        let Claimed { queue, job, lease } = claimed;
        let id = job.id;
        self.in_flight
            .insert(id.clone(), (queue.clone(), lease.clone()));
        self.in_flight_count.send_replace(self.in_flight.len());
        let engine = self.deps.engine.clone();
        let job_id = id.clone();
        let release = async move {
            engine
                .release(&queue, &job_id, &lease, 0, Release::Unstarted)
                .await
        };
        ctx.spawn(release.into_actor(self).map(move |result, act, _| {
            if let Err(err) = result {
                log::warn!("could not give back job_id={id}: {err}");
            }
            act.in_flight.remove(&id);
            act.in_flight_count.send_replace(act.in_flight.len());
        }));
    }

    /// Gives back leases whose deliveries were cancelled by a restart.
    fn release_orphans(&mut self, ctx: &mut Context<Self>) {
        self.orphans.extend(self.in_flight.drain());
        self.in_flight_count.send_replace(0);
        if self.orphans.is_empty() {
            return;
        }
        log::warn!(
            "releasing {} lease(s) held before the restart",
            self.orphans.len()
        );
        // Cloned, not taken: if this actor restarts mid-way, nothing is lost.
        let orphans = self.orphans.clone();
        let deps = self.deps.clone();
        let release = async move {
            let mut released = Vec::new();
            for (id, (queue, lease)) in orphans {
                let release = deps
                    .engine
                    .release(&queue, &id, &lease, 0, Release::Started);
                match release.await {
                    Ok(_) => released.push(id),
                    Err(err) => log::warn!("could not release job_id={id} yet: {err}"),
                }
            }
            released
        };
        ctx.spawn(release.into_actor(self).map(|released, act, ctx| {
            act.orphans.retain(|(id, _)| !released.contains(id));
            // Still held by nobody: keep trying, so the lanes do not wait for
            // the leases to expire once Redis is back.
            if !act.orphans.is_empty() {
                ctx.run_later(ORPHAN_RETRY, |act, ctx| act.release_orphans(ctx));
            }
            act.claim(ctx);
        }));
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX);
        let delay = self.restart_delay();
        self.resume_at = Some(Instant::now() + delay);
        ctx.run_later(delay, |act, ctx| {
            act.resume_at = None;
            act.release_orphans(ctx);
            ctx.run_interval(POLL_EVERY, |act, ctx| {
                act.poll_wanted = true;
                act.claim(ctx);
            });
            act.claim(ctx);
        });
    }
}

impl Supervised for Worker {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.deps.metrics.worker_restarts.inc();
        self.claiming = false;
        self.claim_again = false;
        self.poll_wanted = true;
        self.next_due = None;
        log::warn!("worker restarting");
    }
}

impl Handler<Wake> for Worker {
    type Result = ();

    fn handle(&mut self, wake: Wake, ctx: &mut Self::Context) {
        match wake.0 {
            Some(queue) => self.candidate(queue),
            None => self.poll_wanted = true,
        }
        self.claim(ctx);
    }
}

impl Handler<Drain> for Worker {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let mut count = self.in_flight_count.subscribe();
        log::info!(
            "draining {} delivery(ies), grace {:?}",
            self.in_flight.len(),
            msg.grace
        );
        let settle = async move {
            let _ = tokio::time::timeout(msg.grace, count.wait_for(|n| *n == 0)).await;
        };
        Box::pin(settle.into_actor(self).then(|_, act, _| {
            let leftover: Vec<(String, (QueueRef, Lease))> = act.in_flight.drain().collect();
            act.in_flight_count.send_replace(0);
            let mut count = act.in_flight_count.subscribe();
            let engine = act.deps.engine.clone();
            async move {
                let mut released = 0;
                for (id, (queue, lease)) in leftover {
                    match engine
                        .release(&queue, &id, &lease, 0, Release::Started)
                        .await
                    {
                        Ok(true) => released += 1,
                        Ok(false) => {}
                        Err(err) => log::warn!("could not release job_id={id}: {err}"),
                    }
                }
                if released > 0 {
                    log::warn!("released {released} lease(s) still in flight at shutdown");
                }
                // Jobs that acks chained meanwhile are being given back.
                let _ = tokio::time::timeout(GIVE_BACK_GRACE, count.wait_for(|n| *n == 0)).await;
                released
            }
            .into_actor(act)
        }))
    }
}

impl Handler<Crash> for Worker {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Self::Context) {
        log::warn!("worker asked to crash");
        ctx.stop();
    }
}

/// What a slot does after a delivery.
enum After {
    /// Deliver the lane's next job, leased by the ack.
    Chained(Box<Claimed>),
    /// The slot is free; ms until the earliest push lane is due (`Some(0)`:
    /// claim now; `None`: nothing is scheduled, a wake will come).
    Due(Option<u64>),
}

/// Claims up to `max` startable heads of `queue` for the worker; if Redis
/// does not answer, the claim is repeated once with the same claim id, which
/// answers the leases the first run took if it ran.
async fn claim_once_more(
    deps: &WorkerDeps,
    queue: &QueueRef,
    max: usize,
) -> EngineResult<ClaimBatch> {
    let claim_id = new_token();
    let claim = || {
        deps.engine
            .claim(queue, max, deps.lease_ms, Mode::Push, Some(&claim_id))
    };
    match claim().await {
        Err(EngineError::Unavailable(err)) => {
            log::warn!("claim on {} failed, repeating it: {err}", queue.tag());
            tokio::time::sleep(REPORT_PAUSE).await;
            claim().await
        }
        other => other,
    }
}

/// Until when this process knows a lease lives: it was granted or last
/// extended for `lease_ms` at a time no earlier than the call was sent.
struct LeaseClock(Cell<Instant>);

impl LeaseClock {
    /// A lease just taken; the claim or ack that took it was sent a little
    /// earlier, which the margin covers.
    fn new(lease_ms: u64) -> Self {
        LeaseClock(Cell::new(Instant::now() + lease_margin(lease_ms)))
    }

    fn confirmed(&self, sent: Instant, lease_ms: u64) {
        self.0.set(sent + lease_margin(lease_ms));
    }

    fn left(&self) -> Duration {
        self.0.get().saturating_duration_since(Instant::now())
    }
}

/// The part of a lease this process counts on: 90 % (the rest covers clock
/// drift and the reaper's timing on other processes).
fn lease_margin(lease_ms: u64) -> Duration {
    Duration::from_millis(lease_ms - lease_ms / 10)
}

/// Calls `report` until Redis answers, pausing between tries, for as long as
/// the lease is known to live. Ack and nack are idempotent per lease, so a
/// try whose reply was lost is safely repeated. `None`: gave up.
async fn report_while_leased<T, F, Fut>(
    clock: &LeaseClock,
    job_id: &str,
    mut report: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = EngineResult<T>>,
{
    let mut pause = REPORT_PAUSE;
    loop {
        match report().await {
            Ok(reply) => return Some(reply),
            Err(err) if clock.left() > pause => {
                log::warn!("job_id={job_id} outcome not recorded yet ({err}); trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(REPORT_PAUSE_MAX);
            }
            Err(err) => {
                log::warn!("job_id={job_id} outcome not recorded before its lease ran out: {err}");
                return None;
            }
        }
    }
}

/// How long a read of a queue's settings may take before a claim round
/// leaves the queue to other processes.
const SETTINGS_PROBE: Duration = Duration::from_millis(500);
/// How long one claim round may spend reading uncached queues' settings.
const SETTINGS_PROBE_ROUND: Duration = Duration::from_secs(1);
/// How long a queue whose settings could not be read is left to others.
const UNREADABLE_FOR: Duration = Duration::from_secs(5);
/// How soon a round that skipped such a queue looks again.
const UNREADABLE_RETRY_MS: u64 = 1_000;

/// Whether this process can deliver `queue`'s jobs: its settings are cached,
/// or read now from MongoDB within `SETTINGS_PROBE`. A queue that could not
/// be read is not tried again for `UNREADABLE_FOR` (a process started while
/// MongoDB is down claimed such lanes and handed them back for the whole
/// outage — black-box test: 8.5-18 s delays — while a running process could
/// deliver them). The read itself is not cut short: it goes on in the
/// background and caches the settings when MongoDB answers, so a slow
/// MongoDB delays a queue, never stops it. Probes stop for the round once
/// its `probe_until` has passed (the rest wait for the next round). A queue
/// that no longer exists counts as readable: its claims hand its jobs back
/// as before.
async fn settings_readable(deps: &WorkerDeps, queue: &QueueRef, probe_until: Instant) -> bool {
    if deps.registry.has_cached(queue) {
        return true;
    }
    let tag = queue.tag();
    let now = Instant::now();
    {
        let unreadable = deps.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        if unreadable.get(&tag).is_some_and(|until| now < *until) {
            return false;
        }
    }
    if now >= probe_until {
        return false;
    }
    let (sent, answer) = tokio::sync::oneshot::channel();
    let (registry, read) = (deps.registry.clone(), queue.clone());
    actix::spawn(async move {
        let _ = sent.send(registry.get(&read).await.is_ok());
    });
    let wait = SETTINGS_PROBE.min(probe_until.saturating_duration_since(now));
    let readable = matches!(tokio::time::timeout(wait, answer).await, Ok(Ok(true)));
    let mut unreadable = deps.unreadable.lock().unwrap_or_else(|e| e.into_inner());
    if readable {
        unreadable.remove(&tag);
    } else {
        log::warn!(
            "queue {tag}: settings not readable now, its lanes are left to other processes for {} s",
            UNREADABLE_FOR.as_secs()
        );
        unreadable.insert(tag, Instant::now() + UNREADABLE_FOR);
    }
    readable
}

/// Runs one delivery attempt to its outcome; with `chain`, a completed job's
/// ack may lease the lane's next job.
async fn deliver_one(deps: Arc<WorkerDeps>, claimed: Claimed, chain: bool) -> After {
    let Claimed {
        queue, job, lease, ..
    } = claimed;
    let clock = LeaseClock::new(deps.lease_ms);
    // Without usable settings no delivery starts: give the job back without
    // spending an attempt, and look again a little later.
    let give_back = || async {
        let kind = Release::Unstarted;
        let release = deps
            .engine
            .release(&queue, &job.id, &lease, UNSTARTED_RETRY_MS, kind);
        if let Err(err) = release.await {
            log::warn!(
                "could not give back job_id={} (its lease will expire): {err}",
                job.id
            );
        }
        After::Due(Some(0))
    };
    let definition = match deps.registry.get(&queue).await {
        Ok(Some(definition)) => definition,
        Ok(None) => return give_back().await,
        Err(err) => {
            log::warn!("queue settings unavailable for job_id={}: {err}", job.id);
            return give_back().await;
        }
    };
    let (Delivery::Push { timeout_ms, .. }, Some(url)) =
        (&definition.settings.delivery, definition.push_url())
    else {
        // Redis says push, the cached definition says pull: it is stale
        // (a push URL that does not parse is never stored).
        deps.registry.invalidate(&queue);
        return give_back().await;
    };
    let started = Instant::now();
    let push = Push {
        url,
        timeout: Duration::from_millis(*timeout_ms),
        signing_secret: definition.signing_secret.as_deref().unwrap_or_default(),
        job_id: &job.id,
        queue: queue.name.as_str(),
        key: &job.key,
        seq: job.seq,
        attempt: job.attempts,
        lease: lease.number,
        payload: job.payload.get().as_bytes(),
    };
    let attempt = AssertUnwindSafe(deps.pusher.push(push)).catch_unwind();
    let outcome = match with_heartbeat(&deps, &queue, &job.id, &lease, &clock, attempt).await {
        Some(Ok(outcome)) => outcome,
        Some(Err(_)) => PushOutcome::Retry {
            error: "delivery code panicked".into(),
        },
        // The lease is lost: the delivery was aborted; whoever holds the
        // job now decides its outcome.
        None => return After::Due(Some(0)),
    };
    deps.metrics
        .processing
        .observe(started.elapsed().as_secs_f64());
    let chain = chain
        && deps
            .waiting_queues
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0;
    let report = match outcome {
        PushOutcome::Delivered { result } if chain => {
            // One chain token for every try, so a repeat finds the job the
            // first try leased.
            let ack = ChainAck {
                id: job.id.clone(),
                lease: lease.clone(),
                result,
                chain_token: new_token(),
            };
            let acked = report_while_leased(&clock, &job.id, || {
                deps.acks.ack_and_lease_next(&queue, ack.clone())
            })
            .await;
            let Some(acked) = acked else {
                return After::Due(Some(0));
            };
            if !acked.completed {
                log::warn!(
                    "job_id={} lease lost before its outcome was recorded",
                    job.id
                );
                return After::Due(Some(0));
            }
            deps.metrics.record(JobState::Completed);
            log::info!("job_id={} attempt={} state=completed", job.id, job.attempts);
            return match acked.next {
                Some(next) => After::Chained(Box::new(next)),
                None => After::Due(acked.next_due_in_ms),
            };
        }
        PushOutcome::Delivered { result } => {
            report_while_leased(&clock, &job.id, || {
                deps.engine.ack(&queue, &job.id, &lease, &result)
            })
            .await
        }
        PushOutcome::Retry { error } => {
            let backoff = &definition.settings.backoff;
            let failure = Failure::Backoff {
                initial_ms: backoff.initial_ms,
                max_ms: backoff.max_ms,
            };
            report_while_leased(&clock, &job.id, || {
                deps.engine.fail(&queue, &job.id, &lease, &error, failure)
            })
            .await
        }
        // The receiver named when to come back: the lane waits that long
        // (at most `backoff.max_ms`), its head first; the attempt counts.
        PushOutcome::RetryAfter { error, after } => {
            let in_ms = (after.as_millis() as u64).min(definition.settings.backoff.max_ms);
            let failure = Failure::Retry { in_ms };
            report_while_leased(&clock, &job.id, || {
                deps.engine.fail(&queue, &job.id, &lease, &error, failure)
            })
            .await
        }
        PushOutcome::Permanent { error } => {
            report_while_leased(&clock, &job.id, || {
                deps.engine
                    .fail(&queue, &job.id, &lease, &error, Failure::Permanent)
            })
            .await
        }
    };
    match report {
        Some(Transition::Done(after)) => {
            deps.metrics.record(after.state);
            log::info!(
                "job_id={} attempt={} state={}",
                after.id,
                after.attempts,
                after.state.as_str()
            );
        }
        // The worker's own earlier report went through but its reply was
        // lost (it reports again only then): counted here, once.
        Some(Transition::Repeated { outcome, .. }) => {
            deps.metrics.record(outcome);
            log::info!(
                "job_id={} state={} (reported again)",
                job.id,
                outcome.as_str()
            );
        }
        Some(Transition::LeaseLost(_)) => {
            log::warn!(
                "job_id={} lease lost before its outcome was recorded",
                job.id
            );
        }
        None => {}
    }
    After::Due(Some(0))
}

/// Awaits `attempt` while extending the lease every third of its length.
/// `None` when the lease is lost or could not be extended before this
/// process stops counting on it: the attempt is then dropped (the HTTP
/// request is cancelled), so no other process starts the job while this
/// one still delivers it.
async fn with_heartbeat<F: Future>(
    deps: &WorkerDeps,
    queue: &QueueRef,
    id: &str,
    lease: &Lease,
    clock: &LeaseClock,
    attempt: F,
) -> Option<F::Output> {
    let every = Duration::from_millis((deps.lease_ms / 3).max(50));
    let heartbeat = async {
        let mut pause = every;
        loop {
            tokio::time::sleep(pause.min(clock.left())).await;
            let left = clock.left();
            if left.is_zero() {
                log::warn!("job_id={id} lease could not be extended in time; delivery aborted");
                return;
            }
            let sent = Instant::now();
            let extend = deps.engine.extend(queue, id, lease, deps.lease_ms);
            match tokio::time::timeout(left, extend).await {
                Ok(Ok(Transition::Done(_))) => {
                    clock.confirmed(sent, deps.lease_ms);
                    pause = every;
                }
                Ok(Ok(Transition::LeaseLost(_) | Transition::Repeated { .. })) => {
                    log::warn!("job_id={id} lease lost during delivery; delivery aborted");
                    return;
                }
                Ok(Err(err)) => {
                    log::warn!("job_id={id} lease extension failed, trying again: {err}");
                    pause = REPORT_PAUSE;
                }
                Err(_) => pause = Duration::ZERO,
            }
        }
    };
    let mut attempt = std::pin::pin!(attempt);
    tokio::select! {
        biased;
        output = &mut attempt => Some(output),
        () = heartbeat => None,
    }
}

impl JobMetrics {
    /// Counts a transition by the state it produced.
    pub fn record(&self, state: JobState) {
        match state {
            JobState::Completed => self.completed.inc(),
            JobState::Retrying => self.retried.inc(),
            JobState::Dead | JobState::Blocked => self.dead.inc(),
            _ => {}
        }
    }
}
