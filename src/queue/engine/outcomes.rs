//! `outcomes`: a pull consumer's acks and nacks of one queue, in one script
//! run (`outcomes.lua`, or a claim's own run: [`Engine::claim_after`]).

use super::{Engine, EngineResult, EngineScript, Failure, Lease, string};
use crate::queue::model::{JobState, QueueRef};

static SCRIPT: EngineScript = EngineScript::new("outcomes");

/// One outcome to report.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub lease: Lease,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone)]
pub enum OutcomeKind {
    /// Completed, with this result (JSON text).
    Ack { result: String },
    /// The attempt failed.
    Nack { error: String, failure: Failure },
}

/// What an outcome did (`ack` / `fail` would have answered the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Completed,
    Retrying,
    Dead,
    Blocked,
    LeaseLost,
    NotFound,
    /// A repeat of an outcome its lease had produced (the reply was lost):
    /// that outcome (`Completed`, `Retrying`, `Dead` or `Blocked`); nothing
    /// changed now, so it is not counted again.
    Repeated(JobState),
}

impl Reported {
    /// The status, a repeat's as its first answer was.
    pub fn settled(self) -> Reported {
        match self {
            Reported::Repeated(JobState::Completed) => Reported::Completed,
            Reported::Repeated(JobState::Retrying) => Reported::Retrying,
            Reported::Repeated(JobState::Dead) => Reported::Dead,
            Reported::Repeated(JobState::Blocked) => Reported::Blocked,
            Reported::Repeated(_) => Reported::NotFound,
            other => other,
        }
    }
}

/// Appends `n` and the outcomes' argument groups (as `apply_outcomes` in
/// lib.lua reads them) to a script call.
pub(super) fn outcome_args(invocation: &mut super::Invocation, outcomes: &[Outcome]) {
    invocation.arg(outcomes.len());
    for outcome in outcomes {
        let kind = match &outcome.kind {
            OutcomeKind::Ack { .. } => "a",
            OutcomeKind::Nack { .. } => "n",
        };
        invocation
            .arg(kind)
            .arg(&outcome.id)
            .arg(outcome.lease.number)
            .arg(&outcome.lease.token);
        match &outcome.kind {
            OutcomeKind::Ack { result } => {
                invocation.arg(result).arg("").arg(0).arg(0).arg(0);
            }
            OutcomeKind::Nack { error, failure } => failure.args(invocation, error),
        }
    }
}

/// The statuses `apply_outcomes` answered, one per outcome sent.
pub(super) fn statuses(reply: Vec<redis::Value>, sent: usize) -> EngineResult<Vec<Reported>> {
    let statuses = reply
        .into_iter()
        .map(|v| {
            let text = string(v).unwrap_or_default();
            if let Some(repeat) = text.strip_prefix('=') {
                return JobState::parse(repeat).map_or(Reported::NotFound, Reported::Repeated);
            }
            match text.as_str() {
                "completed" => Reported::Completed,
                "retrying" => Reported::Retrying,
                "dead" => Reported::Dead,
                "blocked" => Reported::Blocked,
                "lease_lost" => Reported::LeaseLost,
                _ => Reported::NotFound,
            }
        })
        .collect::<Vec<_>>();
    if statuses.len() != sent {
        return Err(super::unexpected("outcomes reply is short"));
    }
    Ok(statuses)
}

impl Engine {
    /// Applies `outcomes` in order in one script run; one status each.
    pub async fn report_outcomes(
        &self,
        queue: &QueueRef,
        outcomes: &[Outcome],
    ) -> EngineResult<Vec<Reported>> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        outcome_args(&mut invocation, outcomes);
        let reply: Vec<redis::Value> = self.run(&invocation).await?;
        statuses(reply, outcomes.len())
    }
}
