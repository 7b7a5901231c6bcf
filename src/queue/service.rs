//! The queue service: what the HTTP handlers ask of queues that takes more
//! than one engine call — the two long-polls (claim-and-wait, get-and-wait).
//! Both wait on the process's wake hub, never by polling Redis: a claim wakes
//! when a lane of its queue becomes startable, a job read when a job of its
//! queue finishes (the queue is `watch`ed meanwhile); each re-checks at least
//! every [`FALLBACK_RECHECK`] in case a notification was lost.
//!
//! It never decides HTTP statuses (handlers map its results) and never
//! writes queue keys itself (the engine does).

use std::time::{Duration, Instant};

use super::Queues;
use super::engine::{ClaimBatch, EngineResult};
use super::model::{Job, QueueRef};

/// Longest a long-poll waits without looking at Redis again.
pub const FALLBACK_RECHECK: Duration = Duration::from_secs(1);

impl Queues {
    /// Leases up to `max_jobs` startable lane heads of pull queue `queue`,
    /// waiting up to `wait` for some to become startable.
    pub async fn claim_and_wait(
        &self,
        queue: &QueueRef,
        max_jobs: usize,
        lease_ms: u64,
        wait: Duration,
    ) -> EngineResult<Vec<Job>> {
        let deadline = Instant::now() + wait;
        let waiter = self.hub.waiter(&queue.tag());
        loop {
            // Registered before claiming, so a wake during the claim is not lost.
            let notified = waiter.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let batch: ClaimBatch = self.engine.claim_queue(queue, max_jobs, lease_ms).await?;
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
