//! `due`: the queues of a slot group whose entry in one of the group's
//! indexes is due now (`due.lua`): push queues with a startable lane, or
//! queues with an expired lease.

use redis::{Script, Value};
use std::sync::LazyLock;

use super::{Engine, EngineResult, next_due, string};
use crate::queue::model::QueueRef;

/// Reads one group key only: no library, no queue keys.
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("due.lua")));

/// Entries read per group and call at most.
const DUE_BATCH: usize = 200;

/// Which index of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueIndex {
    /// Push queues with a ready lane (read by the worker).
    Push,
    /// Queues with leases (read by the lease reaper).
    Leases,
}

/// What one group has due.
#[derive(Debug, Default)]
pub struct GroupDue {
    pub queues: Vec<QueueRef>,
    /// Milliseconds until the group's next entry is due; `None`: nothing.
    pub next_due_in_ms: Option<u64>,
}

impl Engine {
    /// The queues of slot group `group` due now in `index`.
    pub async fn due(&self, group: u32, index: DueIndex) -> EngineResult<GroupDue> {
        let name = match index {
            DueIndex::Push => "due",
            DueIndex::Leases => "leases",
        };
        let reply: Vec<Value> = SCRIPT
            .key(format!("{}{name}", self.group_base(group)))
            .arg(DUE_BATCH)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut items = reply.into_iter();
        let next_due_in_ms = next_due(items.next());
        let queues = items
            .filter_map(string)
            .filter_map(|qid| QueueRef::from_tag(&qid))
            .collect();
        Ok(GroupDue {
            queues,
            next_due_in_ms,
        })
    }

    /// [`Engine::due`] of every group, concurrently; `next_due_in_ms` is the
    /// earliest over all groups. A group that cannot be read (its shard is
    /// failing over) is logged and left out, so the others keep flowing; an
    /// error only when no group could be read.
    pub async fn due_everywhere(&self, index: DueIndex) -> EngineResult<GroupDue> {
        let polls = (0..self.groups).map(|g| self.due(g, index));
        let mut all = GroupDue::default();
        let mut first_error = None;
        let mut read = 0;
        for result in futures_util::future::join_all(polls).await {
            let group = match result {
                Ok(group) => group,
                Err(err) => {
                    first_error.get_or_insert(err);
                    continue;
                }
            };
            read += 1;
            all.queues.extend(group.queues);
            all.next_due_in_ms = match (all.next_due_in_ms, group.next_due_in_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        match first_error {
            Some(err) if read == 0 => Err(err),
            Some(err) => {
                log::warn!("{index:?} index of some slot groups unreadable: {err}");
                // Look again soon for the groups that were not read.
                all.next_due_in_ms = Some(all.next_due_in_ms.map_or(500, |ms| ms.min(500)));
                Ok(all)
            }
            None => Ok(all),
        }
    }
}
