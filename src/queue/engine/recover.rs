//! `recover`: expired leases of one queue go back to the heads of their
//! lanes (`recover.lua`).

use redis::Value;

use super::{Engine, EngineResult, EngineScript, string, unexpected};
use crate::queue::model::{JobState, QueueRef};

static SCRIPT: EngineScript = EngineScript::new("recover");

/// A job whose lease expired, and the state that left it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub id: String,
    /// `Queued` (back at its lane's head), or `Dead` / `Blocked` (a pull
    /// job whose last attempt expired).
    pub state: JobState,
}

impl Engine {
    /// Returns up to `max` expired leases of `queue`; answers their jobs.
    pub async fn recover(&self, queue: &QueueRef, max: usize) -> EngineResult<Vec<Recovered>> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(max);
        let reply: Vec<Value> = self.run(&invocation).await?;
        reply
            .chunks(2)
            .map(|pair| {
                let id = pair.first().cloned().and_then(string);
                let state = pair
                    .get(1)
                    .cloned()
                    .and_then(string)
                    .and_then(|s| JobState::parse(&s));
                match (id, state) {
                    (Some(id), Some(state)) => Ok(Recovered { id, state }),
                    _ => Err(unexpected("recover reply")),
                }
            })
            .collect()
    }
}
