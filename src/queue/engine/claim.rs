//! `claim`: leases startable lane heads of one queue (`claim.lua`), for the
//! push worker and for pull consumers alike.

use redis::Value;

use super::outcomes::{Outcome, Reported, outcome_args, statuses};
use super::{
    Engine, EngineResult, EngineScript, Lease, job_view, new_token, next_due, timed_token,
};
use crate::queue::model::{Job, QueueRef};

static SCRIPT: EngineScript = EngineScript::new("claim");

/// Who claims: the push worker takes only push queues' jobs, consumers only
/// pull queues'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Push,
    Pull,
}

/// A job leased to the caller.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub queue: QueueRef,
    pub job: Job,
    pub lease: Lease,
}

/// The result of a claim call.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    pub jobs: Vec<Claimed>,
    /// Milliseconds until the queue's next lane is due; `None` when none is
    /// scheduled.
    pub next_due_in_ms: Option<u64>,
}

/// A leased job from a script's job view.
pub(super) fn claimed(queue: &QueueRef, value: Value) -> Option<Claimed> {
    let view = job_view(queue, value)?;
    let lease = view.lease?;
    let mut job = view.job;
    job.lease = Some(lease.render());
    Some(Claimed {
        queue: queue.clone(),
        job,
        lease,
    })
}

impl Engine {
    /// Leases up to `max` startable lane heads (distinct lanes) of one queue.
    /// With a `claim_id`, a repeat while any lease it took lives answers
    /// those same jobs and leases instead of leasing more (a lost reply is
    /// retried safely).
    pub async fn claim(
        &self,
        queue: &QueueRef,
        max: usize,
        lease_ms: u64,
        mode: Mode,
        claim_id: Option<&str>,
    ) -> EngineResult<ClaimBatch> {
        let (_, batch) = self
            .claim_after(queue, &[], max, lease_ms, mode, claim_id)
            .await?;
        Ok(batch)
    }

    /// [`Engine::claim`] after applying a pull consumer's `outcomes` of
    /// earlier jobs in the same script run (as [`Engine::report_outcomes`]
    /// would; one status each): the lanes they complete may have their next
    /// jobs leased right here, in one round trip.
    pub async fn claim_after(
        &self,
        queue: &QueueRef,
        outcomes: &[Outcome],
        max: usize,
        lease_ms: u64,
        mode: Mode,
        claim_id: Option<&str>,
    ) -> EngineResult<(Vec<Reported>, ClaimBatch)> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation
            .arg(max)
            .arg(lease_ms)
            .arg(match mode {
                Mode::Push => new_token(),
                // (A pull attempt's start, for the processing-time histogram.)
                Mode::Pull => timed_token(),
            })
            .arg(match mode {
                Mode::Push => "push",
                Mode::Pull => "pull",
            })
            .arg(claim_id.unwrap_or_default());
        outcome_args(&mut invocation, outcomes);
        if let Some(claim_id) = claim_id {
            invocation.key(format!("{}c:{claim_id}", self.queue_base(queue)));
        }
        let reply: Vec<Value> = self.run(&invocation).await?;
        let mut items = reply.into_iter();
        let next_due_in_ms = next_due(items.next());
        let reported = match items.next() {
            Some(Value::Array(answered)) => statuses(answered, outcomes.len())?,
            _ => return Err(super::unexpected("claim reply without statuses")),
        };
        let jobs = items.filter_map(|v| claimed(queue, v)).collect();
        Ok((
            reported,
            ClaimBatch {
                jobs,
                next_due_in_ms,
            },
        ))
    }

    /// Leases up to `max` startable lane heads of one pull queue.
    pub async fn claim_queue(
        &self,
        queue: &QueueRef,
        max: usize,
        lease_ms: u64,
    ) -> EngineResult<ClaimBatch> {
        self.claim(queue, max, lease_ms, Mode::Pull, None).await
    }
}
