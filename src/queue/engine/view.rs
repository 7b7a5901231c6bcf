//! `view`: reads one job (`view.lua`).

use redis::Value;

use super::{Engine, EngineResult, EngineScript, job_from_value};
use crate::queue::model::{Job, QueueRef};

static SCRIPT: EngineScript = EngineScript::new("view");

impl Engine {
    /// The job, if it exists (and belongs to `queue`'s owner).
    pub async fn get(&self, queue: &QueueRef, id: &str) -> EngineResult<Option<Job>> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(id);
        let reply: Value = self.run(&invocation).await?;
        Ok(job_from_value(queue, reply))
    }
}
