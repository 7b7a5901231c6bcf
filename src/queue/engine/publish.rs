//! `publish`: appends jobs to the tails of their lanes (`publish.lua`).

use std::collections::HashMap;

use futures_util::future::join_all;
use redis::Value;

use super::{Engine, EngineResult, EngineScript, FIRST_EXTRA_KEY, int, string, unexpected};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("publish");

/// A job to publish.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: QueueRef,
    pub id: String,
    pub key: String,
    /// The payload's exact JSON text.
    pub payload: String,
    pub delay_ms: u64,
    pub max_attempts: u32,
    /// The client's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// 0–9: among lanes whose heads may start, higher starts first.
    pub priority: u8,
}

/// What publish did with a job.
#[derive(Debug, Clone)]
pub enum Published {
    /// Enqueued with this seq.
    New { seq: u64, created_at_ms: u64 },
    /// Not enqueued: the idempotency key already names this job.
    Duplicate { original_id: String },
    /// Not enqueued: the queue has no settings in Redis (it was deleted, or
    /// its settings were never mirrored); mirror them and publish again.
    Unconfigured,
    /// The run of this job's queue failed. `outcome_unknown`: it may have
    /// been enqueued (the reply was lost); otherwise it was not.
    Failed {
        outcome_unknown: bool,
        error: String,
    },
}

impl Engine {
    /// Appends jobs to their lanes, one atomic script run per queue (the runs
    /// of different queues are pipelined); order is kept within a queue. A
    /// job whose idempotency key was seen within `idempotency_window_s` is
    /// not enqueued again. Replies are in the order of `jobs`; a queue whose
    /// run failed has [`Published::Failed`] for each of its jobs (the other
    /// queues' outcomes stand).
    pub async fn publish(&self, jobs: &[NewJob], idempotency_window_s: u64) -> Vec<Published> {
        // Jobs by queue, in first-appearance order, keeping their positions.
        let mut by_queue: Vec<(&QueueRef, Vec<usize>)> = Vec::new();
        let mut index: HashMap<&QueueRef, usize> = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            let slot = *index.entry(&job.queue).or_insert_with(|| {
                by_queue.push((&job.queue, Vec::new()));
                by_queue.len() - 1
            });
            by_queue[slot].1.push(i);
        }
        let runs = by_queue.iter().map(|(queue, positions)| {
            let batch: Vec<&NewJob> = positions.iter().map(|&i| &jobs[i]).collect();
            self.publish_queue(queue, batch, idempotency_window_s)
        });
        let results = join_all(runs).await;
        let mut out: Vec<Option<Published>> = vec![None; jobs.len()];
        for ((_, positions), result) in by_queue.iter().zip(results) {
            let published = result.unwrap_or_else(|err| {
                let failed = Published::Failed {
                    outcome_unknown: err.outcome_unknown(),
                    error: err.to_string(),
                };
                vec![failed; positions.len()]
            });
            for (&i, p) in positions.iter().zip(published) {
                out[i] = Some(p);
            }
        }
        out.into_iter()
            .map(|p| {
                p.unwrap_or(Published::Failed {
                    outcome_unknown: false,
                    error: "publish reply is short".into(),
                })
            })
            .collect()
    }

    async fn publish_queue(
        &self,
        queue: &QueueRef,
        jobs: Vec<&NewJob>,
        idempotency_window_s: u64,
    ) -> EngineResult<Vec<Published>> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(idempotency_window_s.max(1)).arg(jobs.len());
        let base = self.queue_base(queue);
        let mut extra_keys = 0;
        for job in &jobs {
            let key_index = match &job.idempotency_key {
                Some(key) => {
                    invocation.key(format!("{base}i:{key}"));
                    extra_keys += 1;
                    FIRST_EXTRA_KEY - 1 + extra_keys
                }
                None => 0,
            };
            invocation
                .arg(&job.id)
                .arg(&job.key)
                .arg(&job.payload)
                .arg(job.delay_ms)
                .arg(job.max_attempts)
                .arg(key_index);
        }
        if jobs.iter().any(|job| job.priority > 0) {
            for job in &jobs {
                invocation.arg(job.priority);
            }
        }
        let reply: Vec<Value> = self.run(&invocation).await?;
        if matches!(reply.first(), Some(v) if string(v.clone()).as_deref() == Some("unconfigured"))
        {
            return Ok(vec![Published::Unconfigured; jobs.len()]);
        }
        if self.wait.replicas > 0 {
            let key = format!("{base}m");
            let replicated = self.wait_for_replicas(&key).await?;
            if replicated < u64::from(self.wait.replicas) {
                log::warn!(
                    "publish to {} reached {replicated} of {} replica(s) within {} ms",
                    queue.tag(),
                    self.wait.replicas,
                    self.wait.timeout_ms
                );
            }
        }
        // { created_at, first seq, (index, original id) per duplicate }: the
        // other jobs got consecutive seqs, in order.
        let mut items = reply.into_iter();
        let (Some(at), Some(first)) = (items.next(), items.next()) else {
            return Err(unexpected("publish reply is short"));
        };
        let created_at_ms = int(&at).ok_or_else(|| unexpected("publish time"))?;
        let mut seq = int(&first).ok_or_else(|| unexpected("publish seq"))?;
        let mut duplicates = HashMap::new();
        while let (Some(index), Some(original)) = (items.next(), items.next()) {
            let index = int(&index).ok_or_else(|| unexpected("publish duplicate"))?;
            let original = string(original).ok_or_else(|| unexpected("publish duplicate"))?;
            duplicates.insert(index as usize, original);
        }
        let mut published = Vec::with_capacity(jobs.len());
        for i in 0..jobs.len() {
            published.push(match duplicates.remove(&i) {
                Some(original_id) => Published::Duplicate { original_id },
                None => {
                    seq += 1;
                    Published::New {
                        seq: seq - 1,
                        created_at_ms,
                    }
                }
            });
        }
        Ok(published)
    }
}
