//! `ack`: the lease holder completed the job (`ack.lua`).

use super::{Engine, EngineResult, EngineScript, Lease, Transition};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("ack");

impl Engine {
    /// Completes the job held under `lease`, storing `result` (JSON text).
    pub async fn ack(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        result: &str,
    ) -> EngineResult<Transition> {
        let mut invocation = self.lease_invocation(&SCRIPT, queue, id, lease);
        invocation.arg(result);
        self.run_transition(&invocation, queue).await
    }
}
