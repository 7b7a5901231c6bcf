//! `extend`: the lease holder keeps the job longer (`extend.lua`).

use redis::Value;

use super::{Engine, EngineResult, EngineScript, Lease, Transition, outcome_and_job, transition};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new(include_str!("extend.lua"));

impl Engine {
    /// Extends the live lease to `lease_ms` from now.
    pub async fn extend(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        lease_ms: u64,
    ) -> EngineResult<Transition> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation
            .arg(id)
            .arg(lease.number)
            .arg(&lease.token)
            .arg(lease_ms);
        let reply: Vec<Value> = self.run(&invocation).await?;
        let (outcome, job) = outcome_and_job(queue, reply);
        Ok(transition(outcome, job))
    }
}
