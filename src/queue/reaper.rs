//! The lease reaper: a small supervised actor that returns expired leases
//! (of any process) to the heads of their lanes.
//!
//! Every second it reads each slot group's lease index (one command per
//! group) and runs `recover` on the queues whose earliest lease has expired:
//! its work grows with the queues that hold leases, never with the queues
//! ever created. It never delivers anything; a recovered lane announces
//! itself on its group's wake channel like any other. On a Redis error it
//! stops and its supervisor restarts it.

use std::time::Duration;

use actix::prelude::*;

use super::engine::{DueIndex, Engine, EngineError};
use crate::metrics::JobMetrics;

/// How often expired leases are looked for.
const RECOVER_EVERY: Duration = Duration::from_secs(1);
/// The longest a sweep may take before it counts as failed.
const SWEEP_LIMIT: Duration = Duration::from_secs(15);
/// Expired leases returned per queue and run at most.
const RECOVER_BATCH: usize = 1000;

pub struct Reaper {
    engine: Engine,
    metrics: JobMetrics,
    running: bool,
}

impl Reaper {
    pub fn new(engine: Engine, metrics: JobMetrics) -> Self {
        Self {
            engine,
            metrics,
            running: false,
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let (engine, metrics) = (self.engine.clone(), self.metrics.clone());
        let run = async move {
            let due = engine.due_everywhere(DueIndex::Leases).await?;
            log::debug!("lease sweep: {} queue(s) due", due.queues.len());
            let mut recovered = 0;
            // One queue's failure (its shard failing over) must not hold
            // back the recovery of the others.
            for queue in due.queues {
                match engine.recover(&queue, RECOVER_BATCH).await {
                    Ok(jobs) => {
                        for job in &jobs {
                            log::info!(
                                "job_id={} state={} (lease expired)",
                                job.id,
                                job.state.as_str()
                            );
                            // (Back at its lane's head is no outcome; an
                            // exhausted job is, and counted as one.)
                            metrics.record(job.state);
                        }
                        recovered += jobs.len();
                    }
                    Err(err) => log::warn!("could not recover leases of {}: {err}", queue.tag()),
                }
            }
            Ok::<usize, EngineError>(recovered)
        };
        // A sweep that never ends would stop all recovery: bounded.
        let run = async move {
            tokio::time::timeout(SWEEP_LIMIT, run)
                .await
                .unwrap_or_else(|_| Err(EngineError::Unexpected("lease sweep timed out".into())))
        };
        ctx.spawn(run.into_actor(self).map(|result, act, ctx| {
            act.running = false;
            match result {
                Ok(0) => {}
                Ok(n) => log::info!("recovered {n} expired lease(s)"),
                Err(err) => {
                    log::error!("lease reaper stopping after a redis error: {err}");
                    act.metrics.worker_restarts.inc();
                    ctx.stop();
                }
            }
        }));
    }
}

impl Actor for Reaper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        log::debug!("lease reaper started");
        self.running = false;
        ctx.run_interval(RECOVER_EVERY, |act, ctx| act.sweep(ctx));
    }
}

impl Supervised for Reaper {}

/// Starts the reaper under a supervisor.
pub fn start(engine: Engine, metrics: JobMetrics) -> Addr<Reaper> {
    Supervisor::start(move |_| Reaper::new(engine.clone(), metrics.clone()))
}
