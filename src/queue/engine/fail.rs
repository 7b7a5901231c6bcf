//! `fail`: the lease holder's attempt failed (`fail.lua`).

use super::{Engine, EngineResult, EngineScript, Lease, Transition};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new(include_str!("fail.lua"));

/// How a failed attempt should be treated.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// Retry after the given delay if attempts remain.
    Retry { in_ms: u64 },
    /// Do not retry: apply the queue's `on_exhausted` policy now.
    Permanent,
}

impl Engine {
    /// Records a failed attempt of the job held under `lease`.
    pub async fn fail(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        error: &str,
        failure: Failure,
    ) -> EngineResult<Transition> {
        let (retryable, retry_in) = match failure {
            Failure::Retry { in_ms } => ("1", in_ms),
            Failure::Permanent => ("0", 0),
        };
        let mut invocation = self.lease_invocation(&SCRIPT, queue, id, lease);
        invocation.arg(error).arg(retryable).arg(retry_in);
        self.run_transition(&invocation, queue).await
    }
}
