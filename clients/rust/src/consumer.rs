//! [`Consumer`]: the pull loop. Long-poll claim, run the handler while a
//! heartbeat task extends the lease, and report outcomes in batches: the
//! outcomes of one claim's jobs ride on the next claim (`acks` / `nacks`);
//! what is left when the loop ends goes to `POST /v1/queues/{queue}/ack`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::DateTime;
use serde_json::Value;

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

/// How long the job's lease runs, from the server's own timestamps (so clock
/// skew between consumer and server does not matter).
fn lease_length(job: &Job) -> Duration {
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    };
    match (parse(&job.started_at), parse(&job.lease_expires_at)) {
        (Some(start), Some(end)) if end > start => (end - start).to_std().unwrap_or_default(),
        _ => Duration::from_secs(30),
    }
}

/// Extends `job`'s lease every third of its length until aborted.
fn heartbeat(client: Client, job: &Job, lease_ms: Option<u64>) -> tokio::task::JoinHandle<()> {
    let (id, lease) = (job.id.clone(), job.lease.clone().unwrap_or_default());
    let mut every = lease_length(job) / 3;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match client.extend(&id, &lease, lease_ms).await {
                Ok(_) => {
                    if let Some(ms) = lease_ms {
                        every = Duration::from_millis(ms) / 3;
                    }
                }
                Err(err) if err.is_lease_lost() => {
                    log::warn!("job {id}: lease lost while running");
                    return;
                }
                // Transient: the next beat may still be in time.
                Err(err) => log::warn!("job {id}: extend failed: {err}"),
            }
        }
    })
}

/// Runs a handler for each job of a pull queue.
///
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

    /// Lease length each heartbeat asks for (default: the queue's `lease_ms`).
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
    pub async fn run<H, F>(&mut self, mut handler: H, exit_when_idle: bool) -> Result<(), Error>
    where
        H: FnMut(Job) -> F,
        F: Future<Output = Result<Value, HandlerError>>,
    {
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
            failures = 0;
            self.record(claimed.results);
            if claimed.jobs.is_empty() && exit_when_idle {
                break;
            }
            for job in claimed.jobs {
                self.process(&mut handler, job).await;
            }
        }
        if let Some(claim) = failed {
            // Stopped while retrying: its outcomes still go out.
            (self.acks, self.nacks) = (claim.acks, claim.nacks);
        }
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
        let beat = heartbeat(self.client.clone(), &job, self.lease_ms);
        let (id, lease) = (job.id.clone(), job.lease.clone().unwrap_or_default());
        let outcome = handler(job).await;
        beat.abort();
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
