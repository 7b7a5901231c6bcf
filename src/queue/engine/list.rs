//! `list`: pages of a queue's jobs or dead letters in seq order (`list.lua`).

use redis::Value;

use super::{Engine, EngineResult, EngineScript, job_from_value};
use crate::queue::model::{Job, JobState, QueueRef};

static SCRIPT: EngineScript = EngineScript::new("list");

/// Entries a listing call examines at most (bounds the script's run time).
const LIST_BUDGET: usize = 2000;

/// A page of a job listing.
#[derive(Debug)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `after` to continue; `None` at the end.
    pub next: Option<u64>,
}

/// Filters of a job listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<JobState>,
    pub key: Option<String>,
    pub after: u64,
    pub limit: usize,
}

impl Engine {
    /// A page of the queue's jobs in seq order.
    pub async fn list(&self, queue: &QueueRef, filter: &ListFilter) -> EngineResult<JobPage> {
        self.list_from(queue, filter, "jobs").await
    }

    /// A page of the queue's dead jobs in seq order.
    pub async fn dead(&self, queue: &QueueRef, filter: &ListFilter) -> EngineResult<JobPage> {
        self.list_from(queue, filter, "dead").await
    }

    async fn list_from(
        &self,
        queue: &QueueRef,
        filter: &ListFilter,
        source: &str,
    ) -> EngineResult<JobPage> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation
            .arg(filter.after)
            .arg(filter.limit)
            .arg(filter.state.map(JobState::as_str).unwrap_or(""))
            .arg(filter.key.as_deref().unwrap_or(""))
            .arg(if filter.key.is_some() { "1" } else { "0" })
            .arg(LIST_BUDGET)
            .arg(source);
        let reply: Vec<Value> = self.run(&invocation).await?;
        let mut items = reply.into_iter();
        let next = match items.next() {
            Some(Value::Int(n)) if n >= 0 => Some(n as u64),
            _ => None,
        };
        let jobs = items.filter_map(|v| job_from_value(queue, v)).collect();
        Ok(JobPage { jobs, next })
    }
}
