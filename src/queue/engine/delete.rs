//! `delete`: removes a queue's keys atomically (`delete.lua`).

use super::{Engine, EngineResult, EngineScript};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("delete");

impl Engine {
    /// Removes every key of the queue and its index entries in one run.
    pub async fn delete_queue(&self, queue: &QueueRef) -> EngineResult<()> {
        let invocation = self.invocation(&SCRIPT, queue);
        self.run::<i64>(&invocation).await.map(drop)
    }
}
