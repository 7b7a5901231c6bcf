//! `ack`: the lease holder completed the job (`ack.lua`).

use redis::Value;

use super::claim::{Claimed, claimed};
use super::{Engine, EngineResult, EngineScript, Lease, Transition, next_due, string};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new(include_str!("ack.lua"));

/// The outcome of [`Engine::ack_and_lease_next`].
#[derive(Debug)]
pub struct Acked {
    /// False when the lease was stale or expired (nothing changed).
    pub completed: bool,
    /// The lane's next head, leased to the caller, when it could start now
    /// and no other push work of its slot group was due.
    pub next: Option<Claimed>,
    /// Milliseconds until the queue's earliest ready lane is due; `None`
    /// when none is scheduled.
    pub next_due_in_ms: Option<u64>,
}

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

    /// Completes the job held under `lease` (as [`Engine::ack`]) and, when
    /// the lane's next job may start now and no other push work of the group
    /// is due, leases it to the caller for `lease_ms` in the same script run.
    /// For the push worker: a busy lane costs one round trip per job.
    /// `chain_token` is the next lease's token: a repeat with the same one
    /// (after a lost reply) answers the job the first run leased.
    pub async fn ack_and_lease_next(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        result: &str,
        lease_ms: u64,
        chain_token: &str,
    ) -> EngineResult<Acked> {
        let mut invocation = self.lease_invocation(&SCRIPT, queue, id, lease);
        invocation.arg(result).arg(chain_token).arg(lease_ms);
        let reply: Vec<Value> = self.run(&invocation).await?;
        let mut items = reply.into_iter();
        let completed = items.next().and_then(string).as_deref() == Some("ok");
        let _completed_job = items.next();
        let next = items.next().and_then(|v| claimed(queue, v));
        Ok(Acked {
            completed,
            next,
            next_due_in_ms: next_due(items.next()),
        })
    }
}
