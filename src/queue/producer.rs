//! The queue-producer actor: publishes jobs with group commit.
//!
//! Concurrent [`Publish`] requests are buffered and written together by one
//! engine `publish` script run (one Redis round trip for many requests). At
//! most [`MAX_IN_FLIGHT`] runs are outstanding; while they are, new requests
//! accumulate into the next batch, so batches grow with load and a lone
//! request pays exactly one round trip. Each request's jobs stay contiguous
//! and in order within a run, and a run is atomic, so a batch publish is all
//! or nothing. The producer never reads queue definitions.

use actix::prelude::*;
use prometheus::IntCounter;
use tokio::sync::oneshot;

use super::engine::{Engine, NewJob, Published};

/// Script runs outstanding at once (they are pipelined on one connection,
/// and Redis runs them in the order sent).
pub const MAX_IN_FLIGHT: usize = 4;
/// Jobs per script run at most (bounds how long one run blocks Redis: a
/// run of 1,000 jobs takes a few ms; a batch request, atomic by contract,
/// is never split, so a run holds at most one full batch).
pub const MAX_JOBS_PER_RUN: usize = 1000;

/// Publish these jobs atomically, in order.
#[derive(Message)]
#[rtype(result = "Result<Vec<Published>, PublishError>")]
pub struct Publish(pub Vec<NewJob>);

/// Why a publish did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// Nothing was enqueued.
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    /// The request reached Redis but its reply never came: the jobs may have
    /// been enqueued (a retry with the same idempotency keys is safe).
    #[error("publish outcome unknown: {0}")]
    OutcomeUnknown(String),
}

type Reply = oneshot::Sender<Result<Vec<Published>, PublishError>>;

pub struct Producer {
    engine: Engine,
    published: IntCounter,
    idempotency_window_s: u64,
    waiting: Vec<(Vec<NewJob>, Reply)>,
    in_flight: usize,
}

impl Producer {
    pub fn new(engine: Engine, published: IntCounter, idempotency_window_s: u64) -> Self {
        Self {
            engine,
            published,
            idempotency_window_s,
            waiting: Vec::new(),
            in_flight: 0,
        }
    }

    /// Starts a script run with as many waiting requests as fit.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight >= MAX_IN_FLIGHT || self.waiting.is_empty() {
            return;
        }
        let mut take = 0;
        let mut jobs_in_run = 0;
        for (jobs, _) in &self.waiting {
            if take > 0 && jobs_in_run + jobs.len() > MAX_JOBS_PER_RUN {
                break;
            }
            jobs_in_run += jobs.len();
            take += 1;
        }
        let batch: Vec<(Vec<NewJob>, Reply)> = self.waiting.drain(..take).collect();
        let mut all = Vec::with_capacity(jobs_in_run);
        let mut requests = Vec::with_capacity(take);
        for (jobs, reply) in batch {
            requests.push((jobs.len(), reply));
            all.extend(jobs);
        }
        self.in_flight += 1;
        let engine = self.engine.clone();
        let window = self.idempotency_window_s;
        let run = async move { engine.publish(&all, window).await };
        ctx.spawn(run.into_actor(self).map(move |published, act, ctx| {
            act.in_flight -= 1;
            let new = published
                .iter()
                .filter(|p| matches!(p, Published::New { .. }))
                .count();
            act.published.inc_by(new as u64);
            let mut rest = published.into_iter();
            for (count, reply) in requests {
                let mine: Vec<Published> = rest.by_ref().take(count).collect();
                let _ = reply.send(request_outcome(mine));
            }
            act.flush(ctx);
        }));
    }
}

/// One request's answer: its jobs' outcomes, or why its queue's run failed
/// (a request's jobs are all of one run, so they share it).
fn request_outcome(published: Vec<Published>) -> Result<Vec<Published>, PublishError> {
    let failed = published.iter().find_map(|p| match p {
        Published::Failed {
            outcome_unknown,
            error,
        } => Some((*outcome_unknown, error.clone())),
        _ => None,
    });
    match failed {
        Some((true, error)) => {
            log::warn!("publish outcome unknown: {error}");
            Err(PublishError::OutcomeUnknown(error))
        }
        Some((false, error)) => {
            log::warn!("publish failed: {error}");
            Err(PublishError::Unavailable(error))
        }
        None => Ok(published),
    }
}

impl Actor for Producer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX);
    }
}

impl Handler<Publish> for Producer {
    type Result = ResponseFuture<Result<Vec<Published>, PublishError>>;

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.waiting.push((msg.0, reply));
        self.flush(ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(PublishError::Unavailable("producer stopped".into())))
        })
    }
}
