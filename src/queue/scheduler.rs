//! The scheduler: a small supervised actor that publishes the due ticks of
//! cron schedules, in every process at once, each tick exactly once.
//!
//! It reads the earliest entries of the tick index (`P:{sched}:due`, one
//! command), and for each due one loads the schedule from MongoDB and
//! publishes its job through the normal publish path with an idempotency key
//! derived from the schedule and the tick ([`Schedule::tick_key`]): however
//! many processes handle the same tick, the queue holds one job for it. Then
//! it moves the schedule to its next tick with a compare-and-set script, so
//! a process that comes late never moves it back. It sleeps until the
//! earliest tick, at most [`POLL_AT_MOST`] (new schedules of other processes
//! are seen within that): its work grows with the schedules that are due,
//! never with the queues ever created.
//!
//! Catch-up: a tick more than [`ON_TIME_MS`] old was missed (no process
//! ran). With `catch_up = "one"` one job is published for the missed ticks
//! (the first one's); with `"none"` they are skipped. Either way the
//! schedule moves to its first tick after `now - ON_TIME_MS`; a tick there
//! that is due already is on time, and published in the same step.
//!
//! The tick index is in Redis, the definitions in MongoDB: after each
//! (re)start, until a sweep succeeds, the sweep first puts schedules missing
//! from the index back (`Schedules::reindex_missing`), so a Redis that lost
//! its data (which breaks the connection, restarting this actor) does not
//! silence them.
//!
//! It never writes queue keys (the producer does) and never publishes to a
//! queue that does not exist. A failure to read the index stops it, and its
//! supervisor restarts it; one schedule's failure is logged and retried at
//! the next sweep.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use futures_util::StreamExt;
use prometheus::{IntCounterVec, Opts, Registry};

use super::Queues;
use super::registry::RegistryError;
use super::schedules::{Calendar, CatchUp, Schedule, ScheduleError, Schedules};
use super::service::{Draft, Publication, ServiceError};

/// Longest sleep between two looks at the index.
pub const POLL_AT_MOST: Duration = Duration::from_secs(1);
/// How late a tick may be handled and still count as on time.
pub const ON_TIME_MS: i64 = 3_000;
/// Most ticks one schedule moves past in one step (those due at once).
const MAX_STEPS: usize = 16;
/// Index entries read per look.
const BATCH: usize = 100;
/// Due ticks handled at once.
const CONCURRENT_TICKS: usize = 16;
/// The longest a sweep may take before it counts as failed.
const SWEEP_LIMIT: Duration = Duration::from_secs(30);

/// Why one tick could not be handled.
#[derive(Debug, thiserror::Error)]
enum TickError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Publish(#[from] ServiceError),
}

/// `orderly_schedule_ticks_total{outcome}`: ticks handled, counted once
/// over all processes (by the one that moved the schedule on): `published`
/// on time, `caught_up` (one job for missed ticks) or `skipped` (missed,
/// `catch_up = "none"`).
#[derive(Clone)]
pub struct TickMetrics(IntCounterVec);

impl TickMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let ticks = IntCounterVec::new(
            Opts::new(
                format!("{}_schedule_ticks_total", crate::metrics::NAMESPACE),
                "Schedule ticks handled, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(ticks.clone()))?;
        // Every outcome shows from the start (at 0), not after its first tick.
        for outcome in ["published", "caught_up", "skipped"] {
            ticks.with_label_values(&[outcome]);
        }
        Ok(Self(ticks))
    }
}

pub struct Scheduler {
    schedules: Schedules,
    queues: Arc<Queues>,
    ticks: TickMetrics,
    /// Set by a restart: the first sweep then waits, so a Redis outage
    /// does not become a tight restart loop.
    restarted: bool,
    /// Until a sweep succeeds after a (re)start, each sweep first puts
    /// schedules missing from the tick index back (`reindex_missing`): a
    /// Redis that lost its data breaks the connection, which restarts this
    /// actor.
    reconciled: bool,
}

impl Scheduler {
    pub fn new(schedules: Schedules, queues: Arc<Queues>, ticks: TickMetrics) -> Self {
        Self {
            schedules,
            queues,
            ticks,
            restarted: false,
            reconciled: false,
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let (schedules, queues) = (self.schedules.clone(), self.queues.clone());
        let ticks = self.ticks.clone();
        let reconcile = !self.reconciled;
        let run = async move {
            if reconcile {
                schedules.reindex_missing().await?;
            }
            let now = Utc::now().timestamp_millis();
            let entries = schedules.earliest(BATCH).await?;
            let full = entries.len() == BATCH;
            let wait = match entries.iter().find(|(_, tick)| *tick > now) {
                Some((_, tick)) => POLL_AT_MOST.min(Duration::from_millis((tick - now) as u64)),
                // A full page of due ticks: there may be more at once.
                None if full => Duration::ZERO,
                None => POLL_AT_MOST,
            };
            let mut due: Vec<(String, i64)> = entries
                .into_iter()
                .filter(|(_, tick)| *tick <= now)
                .collect();
            // Processes take due ticks in different orders, so with many due
            // at once they mostly handle different ones first.
            fastrand::shuffle(&mut due);
            let handled = due.into_iter().map(|(id, tick)| {
                let (schedules, queues, ticks) = (&schedules, &queues, &ticks);
                async move {
                    match handle_tick(schedules, queues, ticks, &id, tick, now).await {
                        Ok(()) => true,
                        Err(err) => {
                            log::warn!("schedule {id}: tick {tick} not handled yet: {err}");
                            false
                        }
                    }
                }
            });
            let handled: Vec<bool> = futures_util::stream::iter(handled)
                .buffer_unordered(CONCURRENT_TICKS)
                .collect()
                .await;
            if !handled.is_empty() && !handled.contains(&true) {
                // Every due tick failed (MongoDB down?): retry, but not at once.
                return Ok(POLL_AT_MOST);
            }
            let spent = Utc::now().timestamp_millis().saturating_sub(now).max(0) as u64;
            Ok(wait.saturating_sub(Duration::from_millis(spent)))
        };
        let run = async move {
            tokio::time::timeout(SWEEP_LIMIT, run)
                .await
                .unwrap_or_else(|_| {
                    Err(ScheduleError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "schedule sweep timed out",
                    ))))
                })
        };
        ctx.spawn(run.into_actor(self).map(|result, act, ctx| match result {
            Ok(wait) => {
                act.reconciled = true;
                ctx.run_later(wait, |act, ctx| act.sweep(ctx));
            }
            Err(err) => {
                log::error!("scheduler stopping after an error: {err}");
                act.queues.metrics.worker_restarts.inc();
                ctx.stop();
            }
        }));
    }
}

/// Publishes (or skips) schedule `id`'s tick `tick` and moves it on, then
/// each further tick already due at `now` (a tick missed while no process
/// ran moves the schedule to its first tick after `now - ON_TIME_MS`, which
/// may be due already: it is on time now, and handled now, not at the next
/// sweep, when it would count as missed too). Each tick this call moves the
/// schedule past is counted in `ticks` as it moves (not when another process
/// had moved it, nor when the schedule left the index), also when a later
/// step fails.
async fn handle_tick(
    schedules: &Schedules,
    queues: &Queues,
    ticks: &TickMetrics,
    id: &str,
    tick: i64,
    now: i64,
) -> Result<(), TickError> {
    let drop_it = || schedules.advance(id, tick, None, None);
    let Some(schedule) = schedules.by_id(id).await? else {
        drop_it().await?;
        return Ok(());
    };
    let queue = schedule.queue_ref();
    let calendar = Calendar::parse(&schedule.cron, &schedule.timezone);
    let (Some(queue), Ok(calendar)) = (queue, calendar) else {
        log::warn!("schedule {id} is unreadable; dropped from the tick index");
        drop_it().await?;
        return Ok(());
    };
    if schedule.paused || queues.registry.get(&queue).await?.is_none() {
        drop_it().await?;
        return Ok(());
    }
    let (mut tick, mut steps) = (tick, 0);
    loop {
        let on_time = now - tick <= ON_TIME_MS;
        let publish = on_time || schedule.catch_up == CatchUp::One;
        let next = calendar.next_after(if on_time { tick } else { now - ON_TIME_MS });
        let job_id = if publish {
            Some(publish_tick(queues, &queue, &schedule, tick).await?)
        } else {
            log::info!("schedule {id}: missed tick {tick} skipped (catch_up none)");
            None
        };
        let published = job_id.as_deref().map(|job| (tick, job));
        if !schedules.advance(id, tick, next, published).await? {
            return Ok(());
        }
        let outcome = match (on_time, publish) {
            (true, _) => "published",
            (false, true) => "caught_up",
            (false, false) => "skipped",
        };
        ticks.0.with_label_values(&[outcome]).inc();
        steps += 1;
        // (`next_after` answers later than asked, so each step moves on,
        // and `now` bounds the steps; the cap is a second guard.)
        match next {
            Some(next) if next > tick && next <= now && steps < MAX_STEPS => tick = next,
            _ => return Ok(()),
        }
    }
}

/// Publishes the job of `tick`; its id (the original's on a repeat).
async fn publish_tick(
    queues: &Queues,
    queue: &super::model::QueueRef,
    schedule: &Schedule,
    tick: i64,
) -> Result<String, ServiceError> {
    let draft = Draft {
        key: schedule.key.clone(),
        payload: schedule.payload.clone(),
        delay_ms: 0,
        priority: 0,
        idempotency_key: Some(schedule.tick_key(tick)),
    };
    Ok(match queues.publish(queue, vec![draft]).await?.pop() {
        Some(Publication::Enqueued(job)) => {
            log::info!(
                "schedule {} published tick {tick} job_id={}",
                schedule.id,
                job.id
            );
            job.id
        }
        Some(Publication::Repeat { original_id, .. }) => original_id,
        None => String::new(),
    })
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.restarted {
            ctx.run_later(POLL_AT_MOST, |act, ctx| act.sweep(ctx));
        } else {
            // At once: ticks missed while no process ran are handled at start.
            self.sweep(ctx);
        }
    }
}

impl Supervised for Scheduler {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.restarted = true;
        self.reconciled = false;
    }
}

/// Starts the scheduler under a supervisor.
pub fn start(schedules: Schedules, queues: Arc<Queues>, ticks: TickMetrics) -> Addr<Scheduler> {
    Supervisor::start(move |_| Scheduler::new(schedules.clone(), queues.clone(), ticks.clone()))
}
