//! `cancel`: a waiting job leaves its lane for good (`cancel.lua`).

use redis::Value;

use super::{Engine, EngineResult, EngineScript, outcome_and_job};
use crate::queue::model::{Job, QueueRef};

static SCRIPT: EngineScript = EngineScript::new("cancel");

/// Outcome of cancel.
#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled(Job),
    NotFound,
    NotCancellable(Job),
}

impl Engine {
    /// Cancels a waiting job.
    pub async fn cancel(&self, queue: &QueueRef, id: &str) -> EngineResult<CancelOutcome> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(id);
        let reply: Vec<Value> = self.run(&invocation).await?;
        Ok(match outcome_and_job(queue, reply) {
            (outcome, Some(job)) if outcome == "ok" => CancelOutcome::Cancelled(job),
            (outcome, Some(job)) if outcome == "not_cancellable" => {
                CancelOutcome::NotCancellable(job)
            }
            _ => CancelOutcome::NotFound,
        })
    }
}
