//! `stats`: a consistent snapshot of one queue's counts (`stats.lua`), and
//! the queues of a group that have unfinished work.

use super::{Engine, EngineResult, EngineScript};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("stats");

/// Raw counts of one queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawStats {
    pub pending: u64,
    pub active: u64,
    pub delayed: u64,
    pub blocked: u64,
    pub dead: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub retried: u64,
    pub oldest_pending_created_ms: Option<u64>,
    pub now_ms: u64,
    /// Jobs published / completed in the last 60 seconds (Redis clock).
    pub published_last_minute: u64,
    pub completed_last_minute: u64,
    /// Lanes paused (`lanes/{key}/pause`), with jobs or not.
    pub paused_lanes: u64,
    /// When the oldest lane head was published.
    pub oldest_head_created_ms: Option<u64>,
}

impl RawStats {
    /// Jobs that wait to start: unfinished, not leased, not delayed into the
    /// future and not blocked.
    pub fn waiting(&self) -> u64 {
        self.pending
            .saturating_sub(self.active)
            .saturating_sub(self.delayed)
            .saturating_sub(self.blocked)
    }
}

impl Engine {
    /// Counts of one queue, read atomically.
    pub async fn stats(&self, queue: &QueueRef) -> EngineResult<RawStats> {
        let invocation = self.invocation(&SCRIPT, queue);
        let v: Vec<i64> = self.run(&invocation).await?;
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(RawStats {
            pending: at(0),
            active: at(1),
            delayed: at(2),
            blocked: at(3),
            dead: at(4),
            completed: at(5),
            cancelled: at(6),
            retried: at(7),
            oldest_pending_created_ms: v.get(8).filter(|n| **n >= 0).map(|n| *n as u64),
            now_ms: at(9),
            published_last_minute: at(10),
            completed_last_minute: at(11),
            paused_lanes: at(12),
            oldest_head_created_ms: v.get(13).filter(|n| **n >= 0).map(|n| *n as u64),
        })
    }

    /// Queues of slot group `group` that have unfinished jobs or leases.
    pub async fn live_queues(&self, group: u32) -> EngineResult<Vec<QueueRef>> {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{}live", self.group_base(group)))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(ids.iter().filter_map(|id| QueueRef::from_tag(id)).collect())
    }
}
