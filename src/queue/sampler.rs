//! The gauge sampler: a small supervised actor that sets the waiting-jobs,
//! oldest-waiting-age, active-lease and lane (blocked, paused, oldest head)
//! gauges every two seconds.
//!
//! It reads only the queues in the slot groups' live sets (queues with
//! unfinished jobs, kept by the engine scripts), so its cost grows with the
//! queues in use, never with the queues ever created. It writes nothing to
//! Redis. A failed sample is logged and skipped.

use std::time::Duration;

use actix::prelude::*;

use super::engine::{Engine, EngineError};
use crate::metrics::JobMetrics;

/// How often the queue gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

pub struct Sampler {
    engine: Engine,
    metrics: JobMetrics,
    /// A sample is under way: the next tick is skipped, so slow samples
    /// never pile up.
    running: bool,
}

impl Sampler {
    pub fn new(engine: Engine, metrics: JobMetrics) -> Self {
        Self {
            engine,
            metrics,
            running: false,
        }
    }
}

impl Actor for Sampler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SAMPLE_EVERY, |act, ctx| {
            if act.running {
                return;
            }
            act.running = true;
            let (engine, metrics) = (act.engine.clone(), act.metrics.clone());
            let run = async move {
                if let Err(err) = sample(&engine, &metrics).await {
                    log::warn!("could not sample queue gauges: {err}");
                }
            };
            ctx.spawn(run.into_actor(act).map(|(), act, _| act.running = false));
        });
    }
}

impl Supervised for Sampler {}

/// Waiting jobs, oldest waiting age and active leases over the live queues.
async fn sample(engine: &Engine, metrics: &JobMetrics) -> Result<(), EngineError> {
    let (mut waiting, mut active, mut oldest_ms) = (0u64, 0u64, 0u64);
    let (mut blocked, mut paused, mut oldest_head_ms) = (0u64, 0u64, 0u64);
    for group in 0..engine.groups() {
        for queue in engine.live_queues(group).await? {
            let stats = engine.stats(&queue).await?;
            waiting += stats.waiting();
            active += stats.active;
            // Each blocked job is the head of its lane.
            blocked += stats.blocked;
            paused += stats.paused_lanes;
            if let Some(created) = stats.oldest_pending_created_ms {
                oldest_ms = oldest_ms.max(stats.now_ms.saturating_sub(created));
            }
            if let Some(created) = stats.oldest_head_created_ms {
                oldest_head_ms = oldest_head_ms.max(stats.now_ms.saturating_sub(created));
            }
        }
    }
    metrics.waiting.set(waiting as i64);
    metrics.active_leases.set(active as i64);
    metrics.oldest_waiting_age.set(oldest_ms as f64 / 1000.0);
    metrics.blocked_lanes.set(blocked as i64);
    metrics.paused_lanes.set(paused as i64);
    metrics
        .oldest_lane_head_age
        .set(oldest_head_ms as f64 / 1000.0);
    Ok(())
}

/// Starts the sampler under a supervisor.
pub fn start(engine: Engine, metrics: JobMetrics) -> Addr<Sampler> {
    Supervisor::start(move |_| Sampler::new(engine.clone(), metrics.clone()))
}
