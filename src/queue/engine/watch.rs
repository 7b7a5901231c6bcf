//! `watch`: a long-polling job read asks the queue to announce finished
//! jobs for a while (`watch.lua`).

use std::time::Duration;

use super::{Engine, EngineResult, EngineScript};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("watch");

impl Engine {
    /// Terminal transitions of `queue` are announced on its group's wake
    /// channel (`d<qid>`) for `for_how_long` from now.
    pub async fn watch(&self, queue: &QueueRef, for_how_long: Duration) -> EngineResult<()> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(for_how_long.as_millis() as u64);
        self.run::<i64>(&invocation).await.map(drop)
    }
}
