//! `extend`: the lease holder keeps the job longer (`extend.lua`).

use super::{Engine, EngineResult, EngineScript, Lease, Transition};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("extend");

impl Engine {
    /// Extends the live lease to `lease_ms` from now.
    pub async fn extend(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        lease_ms: u64,
    ) -> EngineResult<Transition> {
        let mut invocation = self.lease_invocation(&SCRIPT, queue, id, lease);
        invocation.arg(lease_ms);
        self.run_transition(&invocation, queue).await
    }
}
