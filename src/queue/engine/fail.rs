//! `fail`: the lease holder's attempt failed (`fail.lua`).

use super::{Engine, EngineResult, EngineScript, Lease, Transition};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("fail");

/// How a failed attempt should be treated.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// Retry after the given delay if attempts remain.
    Retry { in_ms: u64 },
    /// Retry after the queue's exponential backoff for the job's attempts
    /// (computed in the script, with equal jitter) if attempts remain.
    Backoff { initial_ms: u64, max_ms: u64 },
    /// Do not retry: apply the queue's `on_exhausted` policy now.
    Permanent,
}

impl Failure {
    /// Appends a failed attempt's arguments as `fail_attempt` in lib.lua
    /// reads them: the error, the mode, its two numbers, and the jitter.
    pub(super) fn args(self, invocation: &mut super::Invocation, error: &str) {
        let (mode, a, b) = match self {
            Failure::Retry { in_ms } => ("retry", in_ms, 0),
            Failure::Backoff { initial_ms, max_ms } => ("backoff", initial_ms, max_ms),
            Failure::Permanent => ("permanent", 0, 0),
        };
        invocation
            .arg(error)
            .arg(mode)
            .arg(a)
            .arg(b)
            .arg(format!("{:.6}", fastrand::f64()));
    }
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
        let mut invocation = self.lease_invocation(&SCRIPT, queue, id, lease);
        failure.args(&mut invocation, error);
        self.run_transition(&invocation, queue).await
    }
}
