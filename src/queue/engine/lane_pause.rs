//! `lane_pause`: pause or resume one lane (`lane_pause.lua`).

use redis::Value;

use super::lanes::lane_page;
use super::{Engine, EngineResult, EngineScript};
use crate::queue::model::{Lane, QueueRef};

static SCRIPT: EngineScript = EngineScript::new("lane_pause");

impl Engine {
    /// Pauses (`paused`) or resumes lane `key`; answers the lane as it is
    /// now (`None` while it has no unfinished job: the pause still holds
    /// for jobs published later).
    pub async fn pause_lane(
        &self,
        queue: &QueueRef,
        key: &str,
        paused: bool,
    ) -> EngineResult<Option<Lane>> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(key).arg(if paused { "1" } else { "0" });
        let reply: Vec<Value> = self.run(&invocation).await?;
        Ok(lane_page(reply).1.into_iter().next())
    }
}
