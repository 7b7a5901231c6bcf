//! The queue service: what the HTTP handlers ask of queues that takes more
//! than one engine call — publishing (the queue's settings, ids, the producer's
//! group commit, the view of new jobs and of idempotent repeats) and the two
//! long-polls (claim-and-wait, get-and-wait).
//! Both wait on the process's wake hub, never by polling Redis: a claim wakes
//! when a lane of its queue becomes startable, a job read when a job of its
//! queue finishes (the queue is `watch`ed meanwhile); each re-checks at least
//! every [`FALLBACK_RECHECK`] in case a notification was lost.
//!
//! It never decides HTTP statuses (handlers map its results) and never
//! writes queue keys itself (the engine does).

use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::Queues;
use super::engine::{
    ClaimBatch, EngineError, EngineResult, Mode, NewJob, Outcome, Published, Reported,
};
use super::model::{Job, JobId, JobState, QueueRef, rfc3339_ms};
use super::producer::{Publish, PublishError};
use super::registry::RegistryError;

/// A job to publish, as parsed from a request; the service adds its id and
/// the queue's `max_attempts`.
#[derive(Debug, Clone)]
pub struct Draft {
    pub key: String,
    /// The payload's exact JSON text.
    pub payload: String,
    pub delay_ms: u64,
    pub idempotency_key: Option<String>,
    /// 0–9; higher starts first among startable lanes.
    pub priority: u8,
}

/// What publishing one job did.
#[derive(Debug)]
pub enum Publication {
    /// Enqueued: the new job.
    Enqueued(Box<Job>),
    /// An idempotent repeat, nothing enqueued: the original job's id and the
    /// job itself (`None` once it is gone).
    Repeat {
        original_id: String,
        original: Option<Box<Job>>,
    },
}

/// Why a queue-service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("producer unavailable: {0}")]
    Producer(#[from] actix::MailboxError),
}

/// Longest a long-poll waits without looking at Redis again.
pub const FALLBACK_RECHECK: Duration = Duration::from_secs(1);

impl Queues {
    /// Publishes `drafts` to `queue` (created with default settings if
    /// new) in one atomic run, in order; one [`Publication`] per draft.
    pub async fn publish(
        &self,
        queue: &QueueRef,
        drafts: Vec<Draft>,
    ) -> Result<Vec<Publication>, ServiceError> {
        let definition = self.registry.get_or_create(queue).await?;
        let mut jobs: Vec<NewJob> = drafts
            .into_iter()
            .map(|draft| NewJob {
                queue: queue.clone(),
                id: JobId::generate(&queue.name).id,
                key: draft.key,
                payload: draft.payload,
                delay_ms: draft.delay_ms,
                max_attempts: definition.settings.max_attempts,
                idempotency_key: draft.idempotency_key,
                priority: draft.priority,
            })
            .collect();
        let mut published = self.producer.send(Publish(jobs.clone())).await??;
        if published
            .iter()
            .any(|p| matches!(p, Published::Unconfigured))
        {
            // The queue was deleted (by any process) since this process
            // cached it: publishing creates it again, as for a new name.
            self.registry.invalidate(queue);
            let definition = self.registry.get_or_create(queue).await?;
            for job in &mut jobs {
                job.max_attempts = definition.settings.max_attempts;
            }
            published = self.producer.send(Publish(jobs.clone())).await??;
        }
        // The originals of idempotent repeats, read concurrently (pipelined
        // on the one connection): a repeated batch is one wait, not one per job.
        let originals = futures_util::future::try_join_all(published.iter().map(|p| async move {
            match p {
                Published::Duplicate { original_id } => self.engine.get(queue, original_id).await,
                _ => Ok(None),
            }
        }))
        .await?;
        let mut publications = Vec::with_capacity(jobs.len());
        for ((job, outcome), original) in jobs.into_iter().zip(published).zip(originals) {
            publications.push(match outcome {
                Published::New { seq, created_at_ms } => {
                    log::info!("job_id={} published seq={seq}", job.id);
                    Publication::Enqueued(Box::new(new_job_view(job, seq, created_at_ms)))
                }
                Published::Duplicate { original_id } => Publication::Repeat {
                    original_id,
                    original: original.map(Box::new),
                },
                Published::Unconfigured | Published::Failed { .. } => {
                    return Err(ServiceError::Publish(PublishError::Unavailable(
                        "the queue's settings could not be mirrored into redis".into(),
                    )));
                }
            });
        }
        Ok(publications)
    }

    /// Leases up to `max_jobs` startable lane heads of pull queue `queue`,
    /// waiting up to `wait` for some to become startable. With a `claim_id`,
    /// a repeat while its leases live answers the same jobs and leases.
    /// `outcomes` of earlier jobs are applied by the first claim, in its
    /// script run: `on_applied` gets their statuses (one each) as soon as
    /// that run answers, before any wait, so they are counted, logged and
    /// timed when they happen; on an error, either both that run's outcomes
    /// and leases happened (its reply was lost) or neither.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_and_wait(
        &self,
        queue: &QueueRef,
        outcomes: &[Outcome],
        on_applied: impl FnOnce(Vec<Reported>),
        max_jobs: usize,
        lease_ms: u64,
        wait: Duration,
        claim_id: Option<&str>,
    ) -> EngineResult<Vec<Job>> {
        let deadline = Instant::now() + wait;
        let waiter = self.hub.waiter(&queue.tag());
        // Until the first claim's run answered for `outcomes`.
        let mut on_applied = Some(on_applied);
        loop {
            // Registered before claiming, so a wake during the claim is not lost.
            let notified = waiter.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            // The outcomes go with the first claim only.
            let given = if on_applied.is_some() { outcomes } else { &[] };
            let claim =
                self.engine
                    .claim_after(queue, given, max_jobs, lease_ms, Mode::Pull, claim_id);
            let batch: ClaimBatch = match claim.await {
                Ok((statuses, batch)) => {
                    if let Some(applied) = on_applied.take() {
                        applied(statuses);
                    }
                    batch
                }
                // A later claim of the wait failed: the outcomes the first
                // one applied are answered, with no jobs (an error would hide
                // them; the consumer's next claim meets the failure itself).
                Err(err) if on_applied.is_none() => {
                    log::warn!("claim during a wait failed: {err}");
                    return Ok(Vec::new());
                }
                Err(err) => return Err(err),
            };
            let now = Instant::now();
            if !batch.jobs.is_empty() || now >= deadline {
                let jobs: Vec<Job> = batch.jobs.into_iter().map(|c| c.job).collect();
                for job in &jobs {
                    log::info!("job_id={} claimed attempt={}", job.id, job.attempts);
                }
                return Ok(jobs);
            }
            let mut until = deadline.min(now + FALLBACK_RECHECK);
            if let Some(due) = batch.next_due_in_ms {
                until = until.min(now + Duration::from_millis(due));
            }
            let _ = tokio::time::timeout_at(until.into(), notified).await;
        }
    }

    /// The job (`None` if there is none), once it is terminal or `wait`
    /// has passed.
    pub async fn get_and_wait(
        &self,
        queue: &QueueRef,
        id: &str,
        wait: Duration,
    ) -> EngineResult<Option<Job>> {
        let deadline = Instant::now() + wait;
        let waiter = self.hub.finish_waiter(&queue.tag());
        let mut watched = false;
        loop {
            let notified = waiter.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let Some(job) = self.engine.get(queue, id).await? else {
                return Ok(None);
            };
            let now = Instant::now();
            if job.state.is_terminal() || now >= deadline {
                return Ok(Some(job));
            }
            if !watched {
                // Announcements start now; the job is read once more, so a
                // finish between the read above and the watch is not missed.
                self.engine.watch(queue, deadline - now).await?;
                watched = true;
                continue;
            }
            let until = deadline.min(now + FALLBACK_RECHECK);
            let _ = tokio::time::timeout_at(until.into(), notified).await;
        }
    }
}

/// The job object of a freshly published job.
fn new_job_view(job: NewJob, seq: u64, created_at_ms: u64) -> Job {
    let delayed = job.delay_ms > 0;
    Job {
        id: job.id,
        queue: job.queue.name.as_str().to_owned(),
        key: job.key,
        seq,
        state: if delayed {
            JobState::Delayed
        } else {
            JobState::Queued
        },
        payload: RawValue::from_string(job.payload)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON")),
        attempts: 0,
        max_attempts: job.max_attempts,
        result: None,
        last_error: None,
        created_at: rfc3339_ms(created_at_ms),
        started_at: None,
        finished_at: None,
        available_at: delayed.then(|| rfc3339_ms(created_at_ms + job.delay_ms)),
        lease: None,
        lease_expires_at: None,
        outcome: None,
    }
}
