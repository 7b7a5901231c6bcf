//! `redrive`: dead jobs go back into their lanes in seq order (`redrive.lua`).

use super::{Engine, EngineResult, EngineScript};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new(include_str!("redrive.lua"));

impl Engine {
    /// Moves up to `max` dead jobs back into their lanes, in seq order.
    pub async fn redrive(&self, queue: &QueueRef, max: usize) -> EngineResult<u64> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(max);
        self.run(&invocation).await
    }
}
