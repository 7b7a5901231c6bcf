//! `resolve`: retry or skip a stopped job (`resolve.lua`).

use redis::Value;

use super::{Engine, EngineResult, EngineScript, outcome_and_job};
use crate::queue::model::{Job, QueueRef};

static SCRIPT: EngineScript = EngineScript::new("resolve");

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

impl Engine {
    /// Retries or skips a stopped (blocked or dead) job.
    pub async fn resolve(
        &self,
        queue: &QueueRef,
        id: &str,
        action: Resolve,
    ) -> EngineResult<Resolution> {
        // A dead job going back into a very long lane may take several
        // bounded runs to find its place ('again').
        loop {
            let mut invocation = self.invocation(&SCRIPT, queue);
            invocation.arg(id).arg(match action {
                Resolve::Retry => "retry",
                Resolve::Skip => "skip",
            });
            let reply: Vec<Value> = self.run(&invocation).await?;
            return Ok(match outcome_and_job(queue, reply) {
                (outcome, _) if outcome == "again" => continue,
                (outcome, Some(job)) if outcome == "ok" => Resolution::Done(job),
                (outcome, Some(job)) if outcome == "conflict" => Resolution::Conflict(job),
                _ => Resolution::NotFound,
            });
        }
    }
}
