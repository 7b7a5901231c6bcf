//! [`Consumer`]: the pull loop. Long-poll claim, run the handler on each
//! claimed job in turn while a heartbeat task extends every lease the
//! consumer holds, and report outcomes in batches: the outcomes of one
//! claim's jobs ride on the next claim (`acks` / `nacks`); what is left when
//! the loop ends goes to `POST /v1/queues/{queue}/ack`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::DateTime;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::{Client, MAX_WAIT_MS};
use crate::error::Error;
use crate::types::{Ack, Claim, Job, Nack, Outcome, OutcomeStatus};

/// A failed attempt: `message` becomes the job's `last_error`. Any
/// `std::error::Error` converts into it, so handlers can use `?`.
#[derive(Debug)]
pub struct HandlerError {
    pub message: String,
    /// Retry after this many ms instead of the queue's backoff.
    pub retry_in_ms: Option<u64>,
}

impl HandlerError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_in_ms: None,
        }
    }

    /// Fail the attempt and retry after `retry_in_ms`.
    pub fn retry_in(message: impl Into<String>, retry_in_ms: u64) -> Self {
        Self {
            message: message.into(),
            retry_in_ms: Some(retry_in_ms),
        }
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(err: E) -> Self {
        HandlerError::new(err.to_string())
    }
}

/// Ends a running [`Consumer`] after its current claim and jobs.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The server's shortest lease (`lease_ms` ≥ 1 s): the length assumed for a
/// lease whose length the consumer cannot tell.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// How long `job`'s lease runs, from the server's own timestamps (so clock
/// skew between consumer and server does not matter): exact on a first
/// attempt, whose `started_at` is when the lease began; on a later attempt
/// `started_at` is the first attempt's start, so this is only an upper bound.
fn lease_length(job: &Job) -> Option<Duration> {
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    };
    match (parse(&job.started_at), parse(&job.lease_expires_at)) {
        (Some(start), Some(end)) if end > start => (end - start).to_std().ok(),
        _ => None,
    }
}

/// When to extend a lease of `length` next: a third of it after it began.
fn next_beat(from: Instant, length: Duration) -> Instant {
    from + (length / 3).max(Duration::from_millis(50))
}

/// A lease the consumer holds: claimed, and not yet answered by an outcome
/// the server took.
struct Held {
    id: String,
    /// How long it runs from its last renewal.
    length: Duration,
    /// When to extend it next.
    due: Instant,
    /// Its outcome is on its way (in a claim or report not answered yet):
    /// a `lease_lost` on extend is then most likely that outcome applied.
    reporting: bool,
}

#[derive(Default)]
struct Leases {
    /// By lease token.
    held: HashMap<String, Held>,
    /// Leases an extend found lost (by token), until their job is skipped
    /// or its outcome reported.
    lost: HashSet<String>,
    /// The queue's lease length, as learned from a first attempt's lease.
    length: Option<Duration>,
}

/// Keeps every lease the consumer holds alive — jobs claimed and waiting
/// their turn, the one running, and finished ones whose outcome is not
/// reported yet — extending each a third of its length after it began or was
/// last renewed, until its outcome is reported. Stops when dropped.
struct Heartbeat {
    leases: Arc<Mutex<Leases>>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(leases: &Mutex<Leases>) -> MutexGuard<'_, Leases> {
    // Nothing panics while holding it; a poisoned lock is still consistent.
    leases
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Heartbeat {
    /// Extends with `lease_ms` (default: the queue's).
    fn start(client: Client, lease_ms: Option<u64>) -> Self {
        let leases = Arc::new(Mutex::new(Leases::default()));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(beat(client, lease_ms, leases.clone(), wake.clone()));
        Self { leases, wake, task }
    }

    /// Holds the leases of a claim's `jobs`, just answered. A `retried`
    /// claim may answer leases taken by an earlier try, long ago: those are
    /// due for extension at once.
    fn hold(&self, jobs: &[Job], retried: bool) {
        if jobs.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut leases = lock(&self.leases);
        // One queue, one `lease_ms`: a first attempt tells it for all.
        if let Some(exact) = jobs
            .iter()
            .filter(|j| j.attempts == 1)
            .find_map(lease_length)
        {
            leases.length = Some(exact);
        }
        for job in jobs {
            let Some(lease) = job.lease.clone() else {
                continue;
            };
            let bound = lease_length(job).unwrap_or(MIN_LEASE);
            let length = match leases.length {
                Some(known) => known.min(bound),
                None if job.attempts == 1 => bound,
                None => MIN_LEASE.min(bound),
            };
            let held = Held {
                id: job.id.clone(),
                length,
                due: if retried { now } else { next_beat(now, length) },
                reporting: false,
            };
            leases.held.insert(lease, held);
        }
        drop(leases);
        self.wake.notify_one();
    }

    /// The outcomes of these leases are being reported.
    fn reporting(&self, acks: &[Ack], nacks: &[Nack]) {
        let mut leases = lock(&self.leases);
        let tokens = acks
            .iter()
            .map(|a| &a.lease)
            .chain(nacks.iter().map(|n| &n.lease));
        for token in tokens {
            if let Some(held) = leases.held.get_mut(token) {
                held.reporting = true;
            }
        }
    }

    /// The server took the outcomes of these leases: no longer held.
    fn release(&self, acks: &[Ack], nacks: &[Nack]) {
        let mut leases = lock(&self.leases);
        let tokens = acks
            .iter()
            .map(|a| &a.lease)
            .chain(nacks.iter().map(|n| &n.lease));
        for token in tokens {
            leases.held.remove(token);
            leases.lost.remove(token);
        }
    }

    /// Whether an extend found `lease` lost (forgetting it: its job is
    /// skipped).
    fn lost(&self, lease: &str) -> bool {
        lock(&self.leases).lost.remove(lease)
    }
}

/// The heartbeat task: sleeps until the next lease is due, then extends
/// every lease due by then or soon after (the leases of one claim come due
/// together), concurrently.
async fn beat(
    client: Client,
    lease_ms: Option<u64>,
    leases: Arc<Mutex<Leases>>,
    wake: Arc<Notify>,
) {
    loop {
        let next = lock(&leases).held.values().map(|held| held.due).min();
        match next {
            None => {
                wake.notified().await;
                continue;
            }
            Some(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = wake.notified() => continue,
                }
            }
        }
        let now = Instant::now();
        let due: Vec<(String, String)> = lock(&leases)
            .held
            .iter()
            .filter(|(_, held)| held.due <= now + held.length / 6)
            .map(|(lease, held)| (held.id.clone(), lease.clone()))
            .collect();
        let mut extends = tokio::task::JoinSet::new();
        for (id, lease) in due {
            let client = client.clone();
            extends.spawn(async move {
                let answer = client.extend(&id, &lease, lease_ms).await;
                (id, lease, answer)
            });
        }
        while let Some(extended) = extends.join_next().await {
            let Ok((id, lease, answer)) = extended else {
                continue;
            };
            let mut leases = lock(&leases);
            match answer {
                Ok(_) => {
                    if let Some(held) = leases.held.get_mut(&lease) {
                        if let Some(ms) = lease_ms {
                            held.length = Duration::from_millis(ms);
                        }
                        held.due = next_beat(now, held.length);
                    }
                }
                // Gone: the lease expired or produced an outcome, or the
                // job (its queue) was deleted.
                Err(err) if err.is_lease_lost() || err.code() == "not_found" => {
                    if let Some(held) = leases.held.remove(&lease) {
                        if held.reporting {
                            log::debug!("job {id}: lease ended (its outcome was reported)");
                        } else {
                            log::warn!("job {id}: lease lost; its outcome will not apply");
                            leases.lost.insert(lease);
                        }
                    }
                }
                // Transient: try again soon, while the lease may still live;
                // otherwise (say, a 401) at the next beat.
                Err(err) => {
                    log::warn!("job {id}: extend failed: {err}");
                    if let Some(held) = leases.held.get_mut(&lease) {
                        held.due = if err.is_transient() {
                            Instant::now() + (held.length / 10).max(Duration::from_millis(50))
                        } else {
                            next_beat(Instant::now(), held.length)
                        };
                    }
                }
            }
        }
    }
}

/// Runs a handler for each job of a pull queue.
///
/// Each claim leases up to `max_jobs` jobs (heads of different lanes); the
/// handler runs on them one after another while a heartbeat task extends
/// every lease still held — including those of jobs waiting their turn and
/// of finished jobs whose outcome rides on the next claim — so a batch may
/// take longer than the queue's `lease_ms`, and so may a single job.
/// The handler's `Ok` value becomes the job's `result`; an `Err` fails the
/// attempt. Jobs of one lane are never leased concurrently, so lane order
/// holds. Delivery is at-least-once: make handlers idempotent. A claim that
/// fails with a `503` or a connection failure is retried unchanged under its
/// `claim_id`.
pub struct Consumer {
    client: Client,
    queue: String,
    max_jobs: usize,
    wait_ms: u64,
    lease_ms: Option<u64>,
    stop: StopHandle,
    acks: Vec<Ack>,
    nacks: Vec<Nack>,
    reported: Vec<Outcome>,
}

impl Consumer {
    /// A consumer of `queue` claiming up to 10 jobs per long-poll of 20 s.
    pub fn new(client: Client, queue: &str) -> Self {
        Self {
            client,
            queue: queue.to_owned(),
            max_jobs: 10,
            wait_ms: 20_000,
            lease_ms: None,
            stop: StopHandle::default(),
            acks: Vec::new(),
            nacks: Vec::new(),
            reported: Vec::new(),
        }
    }

    /// Jobs per claim (1–100).
    pub fn max_jobs(mut self, max_jobs: usize) -> Self {
        self.max_jobs = max_jobs.clamp(1, 100);
        self
    }

    /// Long-poll length (≤ 30000 ms).
    pub fn wait_ms(mut self, wait_ms: u64) -> Self {
        self.wait_ms = wait_ms.min(MAX_WAIT_MS);
        self
    }

    /// Lease length each heartbeat extend asks for (default: the queue's
    /// `lease_ms`).
    pub fn lease_ms(mut self, lease_ms: u64) -> Self {
        self.lease_ms = Some(lease_ms);
        self
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Every outcome the server reported so far (acks and nacks, in order).
    pub fn reported(&self) -> &[Outcome] {
        &self.reported
    }

    /// Claims and handles jobs until stopped (or, with `exit_when_idle`,
    /// until a claim returns no job), then reports what is left.
    ///
    /// While it runs, a heartbeat task extends every lease the consumer
    /// holds — the claimed jobs waiting their turn, the running one, and the
    /// finished ones whose outcome is not reported yet — a third of its
    /// length after it began or was last renewed, so neither a long job nor
    /// a long batch loses its leases. A job whose lease an extend finds lost
    /// before its turn is skipped (another consumer may have it by now).
    pub async fn run<H, F>(&mut self, mut handler: H, exit_when_idle: bool) -> Result<(), Error>
    where
        H: FnMut(Job) -> F,
        F: Future<Output = Result<Value, HandlerError>>,
    {
        // Stops (aborts its task) when dropped: on return, or when this
        // future is dropped.
        let heartbeat = Heartbeat::start(self.client.clone(), self.lease_ms);
        let mut failures = 0u32;
        // A claim that failed with a 503 or a connection failure (or
        // timeout), to be repeated as it was — same claim_id, same acks and
        // nacks — so that it answers the jobs and leases it already took.
        let mut failed: Option<Claim> = None;
        while !self.stop.stopped() {
            let claim = failed.take().unwrap_or_else(|| Claim {
                wait_ms: self.wait_ms,
                max_jobs: self.max_jobs,
                acks: std::mem::take(&mut self.acks),
                nacks: std::mem::take(&mut self.nacks),
                claim_id: Some(Claim::new_id()),
            });
            // Its outcomes' leases stay held (and extended) until it answers.
            heartbeat.reporting(&claim.acks, &claim.nacks);
            let claimed = match self.client.claim(&self.queue, &claim).await {
                Ok(claimed) => claimed,
                Err(err) if err.is_transient() => {
                    failures += 1;
                    log::warn!("claim failed ({err}); retrying it");
                    failed = Some(claim);
                    tokio::time::sleep(Duration::from_millis(200 << failures.min(7))).await;
                    continue;
                }
                Err(err) => {
                    (self.acks, self.nacks) = (claim.acks, claim.nacks);
                    self.flush().await?;
                    return Err(err);
                }
            };
            let retried = failures > 0;
            failures = 0;
            heartbeat.release(&claim.acks, &claim.nacks);
            heartbeat.hold(&claimed.jobs, retried);
            self.record(claimed.results);
            if claimed.jobs.is_empty() && exit_when_idle {
                break;
            }
            for job in claimed.jobs {
                if heartbeat.lost(job.lease.as_deref().unwrap_or_default()) {
                    log::warn!("job {}: lease lost before its turn; not running it", job.id);
                    continue;
                }
                self.process(&mut handler, job).await;
            }
        }
        if let Some(claim) = failed {
            // Stopped while retrying: its outcomes still go out.
            (self.acks, self.nacks) = (claim.acks, claim.nacks);
        }
        heartbeat.reporting(&self.acks, &self.nacks);
        self.flush().await
    }

    /// Reports outcomes not sent yet.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.acks.is_empty() && self.nacks.is_empty() {
            return Ok(());
        }
        let results = self
            .client
            .report(&self.queue, &self.acks, &self.nacks)
            .await?;
        self.acks.clear();
        self.nacks.clear();
        self.record(results);
        Ok(())
    }

    fn record(&mut self, results: Vec<Outcome>) {
        for outcome in &results {
            if matches!(
                outcome.status,
                OutcomeStatus::LeaseLost | OutcomeStatus::NotFound
            ) {
                log::warn!(
                    "job {}: outcome not applied ({:?})",
                    outcome.id,
                    outcome.status
                );
            }
        }
        self.reported.extend(results);
    }

    async fn process<H, F>(&mut self, handler: &mut H, job: Job)
    where
        H: FnMut(Job) -> F,
        F: Future<Output = Result<Value, HandlerError>>,
    {
        let (id, lease) = (job.id.clone(), job.lease.clone().unwrap_or_default());
        let outcome = handler(job).await;
        match outcome {
            Ok(result) => self.acks.push(Ack {
                id,
                lease,
                result: Some(result),
            }),
            Err(err) => self.nacks.push(Nack {
                id,
                lease,
                error: Some(err.message.chars().take(1000).collect()),
                retry_in_ms: err.retry_in_ms,
            }),
        }
    }
}
