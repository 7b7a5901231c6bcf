//! `chain`: the push worker's completed deliveries of one queue, each acked
//! and, when its lane's next job may start now, that job leased in the same
//! script run (`chain.lua`).

use redis::Value;

use super::claim::{Claimed, claimed};
use super::{Engine, EngineResult, EngineScript, Lease, next_due, string, unexpected};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("chain");

/// A completed delivery to ack.
#[derive(Debug, Clone)]
pub struct ChainAck {
    pub id: String,
    pub lease: Lease,
    /// The receiver's result (JSON text).
    pub result: String,
    /// The token of the next job's lease: a repeat with the same one (after
    /// a lost reply) answers the job the first run leased.
    pub chain_token: String,
}

/// What one [`ChainAck`] did.
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
    /// Completes the job held under `lease` (as [`Engine::ack`]) and, when
    /// the lane's next job may start now and no other push work of the group
    /// is due, leases it to the caller for `lease_ms` in the same script run.
    pub async fn ack_and_lease_next(
        &self,
        queue: &QueueRef,
        id: &str,
        lease: &Lease,
        result: &str,
        lease_ms: u64,
        chain_token: &str,
    ) -> EngineResult<Acked> {
        let ack = ChainAck {
            id: id.to_owned(),
            lease: lease.clone(),
            result: result.to_owned(),
            chain_token: chain_token.to_owned(),
        };
        let mut acked = self
            .ack_and_lease_next_many(queue, std::slice::from_ref(&ack), lease_ms)
            .await?;
        acked
            .pop()
            .ok_or_else(|| unexpected("chain reply is short"))
    }

    /// [`Engine::ack_and_lease_next`] for many deliveries of one queue, in
    /// order, in one script run; one answer each.
    pub async fn ack_and_lease_next_many(
        &self,
        queue: &QueueRef,
        acks: &[ChainAck],
        lease_ms: u64,
    ) -> EngineResult<Vec<Acked>> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(lease_ms).arg(acks.len());
        for ack in acks {
            invocation
                .arg(&ack.id)
                .arg(ack.lease.number)
                .arg(&ack.lease.token)
                .arg(&ack.result)
                .arg(&ack.chain_token);
        }
        let reply: Vec<Value> = self.run(&invocation).await?;
        if reply.len() != acks.len() + 1 {
            return Err(unexpected("chain reply is short"));
        }
        let mut items = reply.into_iter();
        let answers: Vec<Value> = items.by_ref().take(acks.len()).collect();
        let next_due_in_ms = next_due(items.next());
        answers
            .into_iter()
            .map(|answer| {
                let Value::Array(parts) = answer else {
                    return Err(unexpected("chain item"));
                };
                let mut parts = parts.into_iter();
                let completed = parts.next().and_then(string).as_deref() == Some("ok");
                let next = parts.next().and_then(|v| claimed(queue, v));
                Ok(Acked {
                    completed,
                    next,
                    next_due_in_ms,
                })
            })
            .collect()
    }
}
