//! `release`: the lease holder gives a job back without an outcome
//! (`release.lua`).

use super::{Engine, EngineResult, EngineScript, Lease};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("release");

/// Whether a released job's attempt counts.
#[derive(Debug, Clone, Copy)]
pub enum Release {
    /// A delivery started (shutdown, restart): the attempt counts.
    Started,
    /// No delivery started: the attempt is taken back.
    Unstarted,
}

impl Engine {
    /// Gives a leased job back to the head of its lane, startable again
    /// after `delay_ms`. `false` if the lease was no longer live.
    pub async fn release(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        delay_ms: u64,
        kind: Release,
    ) -> EngineResult<bool> {
        let mut invocation = self.lease_invocation(&SCRIPT, queue, id, lease);
        invocation
            .arg(delay_ms)
            .arg(matches!(kind, Release::Unstarted) as u8);
        let released: i64 = self.run(&invocation).await?;
        Ok(released == 1)
    }
}
