//! `lanes`: the lanes listing, stuck first (`lanes.lua`); reads only.

use redis::Value;

use super::{Engine, EngineResult, EngineScript, int, string};
use crate::queue::model::{Lane, LaneHead, LaneState, QueueRef, rfc3339_ms};

static SCRIPT: EngineScript = EngineScript::new("lanes");

/// Lane index entries one listing call examines at most (each costs a few
/// reads): bounds the script's run time at any number of lanes.
const LANE_BUDGET: usize = 200;

/// Filters of a lanes listing.
#[derive(Debug, Clone, Default)]
pub struct LaneFilter {
    pub state: Option<LaneState>,
    /// The `next` of the previous page.
    pub after: Option<u64>,
    pub limit: usize,
}

/// A page of lanes.
#[derive(Debug)]
pub struct LanePage {
    pub lanes: Vec<Lane>,
    /// Pass as `after` to continue; `None` at the end.
    pub next: Option<u64>,
}

/// Decodes `{ next, now, views… }`.
pub(super) fn lane_page(reply: Vec<Value>) -> (Option<u64>, Vec<Lane>) {
    let mut items = reply.into_iter();
    let next = items.next().as_ref().and_then(int);
    let now = items.next().as_ref().and_then(int).unwrap_or(0);
    let lanes = items.filter_map(|v| lane_view(v, now)).collect();
    (next, lanes)
}

/// `{ key, state, length, head id, seq, attempts, last_error, created_at,
/// available_at, priority }` → a [`Lane`].
fn lane_view(value: Value, now: u64) -> Option<Lane> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut items = items.into_iter();
    let mut next = || items.next().unwrap_or(Value::Nil);
    let key = string(next()).unwrap_or_default();
    let state = LaneState::parse(&string(next())?)?;
    let length = int(&next()).unwrap_or(0);
    let id = string(next())?;
    let seq = int(&next())?;
    let attempts = int(&next()).unwrap_or(0) as u32;
    let last_error = string(next());
    let created_at = int(&next())?;
    let available_at =
        int(&next()).filter(|_| !matches!(state, LaneState::Active | LaneState::Blocked));
    let priority = int(&next()).unwrap_or(0).min(9) as u8;
    Some(Lane {
        key,
        state,
        length,
        head: LaneHead {
            id,
            seq,
            attempts,
            last_error,
            created_at: rfc3339_ms(created_at),
            available_at: available_at.map(rfc3339_ms),
            priority,
        },
        head_age_ms: now.saturating_sub(created_at),
    })
}

impl Engine {
    /// A page of the queue's lanes with unfinished jobs, stuck first.
    pub async fn lanes(&self, queue: &QueueRef, filter: &LaneFilter) -> EngineResult<LanePage> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation
            .arg("list")
            .arg(
                filter
                    .after
                    .map_or_else(|| "-1".to_owned(), |a| a.to_string()),
            )
            .arg(filter.limit)
            .arg(filter.state.map(LaneState::as_str).unwrap_or(""))
            .arg(LANE_BUDGET);
        let reply: Vec<Value> = self.run(&invocation).await?;
        let (next, lanes) = lane_page(reply);
        Ok(LanePage { lanes, next })
    }

    /// One lane, `None` when it has no unfinished job.
    pub async fn lane(&self, queue: &QueueRef, key: &str) -> EngineResult<Option<Lane>> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg("one").arg(key);
        let reply: Vec<Value> = self.run(&invocation).await?;
        Ok(lane_page(reply).1.into_iter().next())
    }
}
