//! `recover`: expired leases of one queue go back to the heads of their
//! lanes (`recover.lua`).

use super::{Engine, EngineResult, EngineScript};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("recover");

impl Engine {
    /// Returns up to `max` expired leases of `queue`; answers how many.
    pub async fn recover(&self, queue: &QueueRef, max: usize) -> EngineResult<u64> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(max);
        self.run(&invocation).await
    }
}
