//! Background work grows with activity, not with the number of queues ever
//! used (PRODUCT.md §5, §7.1): on a Redis of the test's own, a process with
//! 10,000 queues that each had a job costs the same Redis commands per
//! second, once they are idle, as one with 10.

use std::time::{Duration, Instant};

use orderly::queue::engine::{Engine, NewJob, Published, Transition};
use orderly::queue::model::{JobId, QueueName, QueueRef};

use crate::helpers::{TestRedis, pull_conf, spawn_app_with};

/// Creates `n` queues (named `prefix-<i>`), each with one job that is
/// claimed and acked, so each queue has history but no work.
async fn used_queues(engine: &Engine, prefix: &str, n: usize) {
    let queues: Vec<QueueRef> = (0..n)
        .map(|i| QueueRef::new("idle", QueueName::parse(&format!("{prefix}-{i}")).unwrap()))
        .collect();
    for chunk in queues.chunks(500) {
        let jobs: Vec<NewJob> = chunk
            .iter()
            .map(|queue| NewJob {
                queue: queue.clone(),
                id: JobId::generate(&queue.name).id,
                key: String::new(),
                payload: "1".into(),
                delay_ms: 0,
                max_attempts: 1,
                idempotency_key: None,
                priority: 0,
            })
            .collect();
        let configured = chunk
            .iter()
            .map(|queue| async move { engine.configure(queue, &pull_conf()).await.unwrap() });
        futures_util::future::join_all(configured).await;
        let published = engine.publish(&jobs, 60).await;
        assert!(published.iter().all(|p| matches!(p, Published::New { .. })));
        let done = chunk.iter().map(|queue| async move {
            let claimed = engine.claim_queue(queue, 1, 60_000).await.unwrap();
            let job = &claimed.jobs[0];
            let acked = engine
                .ack(queue, &job.job.id, &job.lease, "null")
                .await
                .unwrap();
            assert!(matches!(acked, Transition::Done(_)));
        });
        futures_util::future::join_all(done).await;
    }
}

/// The steady background cost: Redis commands per second over the quietest
/// of three consecutive `window`s (work started before the first one, like a
/// gauge sample of queues that were still live then, shows in the others).
async fn idle_commands_per_second(
    redis: &TestRedis,
    window: Duration,
) -> (f64, Vec<(String, u64)>) {
    let mut quietest = commands_per_second(redis, window).await;
    for _ in 0..2 {
        let next = commands_per_second(redis, window).await;
        if next.0 < quietest.0 {
            quietest = next;
        }
    }
    quietest
}

/// Redis commands per second (scripts' inner commands included) over
/// `window`, in total and by command.
async fn commands_per_second(redis: &TestRedis, window: Duration) -> (f64, Vec<(String, u64)>) {
    let before = redis.command_calls().await;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = redis.command_calls().await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut by_command: Vec<(String, u64)> = after
        .iter()
        .filter(|(name, _)| *name != "info")
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    by_command.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    let total: u64 = by_command.iter().map(|(_, n)| n).sum();
    (total as f64 / elapsed, by_command)
}

#[actix_web::test]
async fn ten_thousand_idle_queues_cost_the_same_redis_commands_per_second_as_ten() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let engine = Engine::connect(&app.settings.redis).unwrap();
    // The window length is what is measured, not a wait for a condition.
    let window = Duration::from_secs(2);

    used_queues(&engine, "few", 10).await;
    let (with_ten, _) = idle_commands_per_second(&redis, window).await;

    used_queues(&engine, "many", 9_990).await;
    let live = engine.live_queues(0).await.unwrap();
    let (with_ten_thousand, by_command) = idle_commands_per_second(&redis, window).await;

    eprintln!(
        "idle Redis commands/s: 10 queues {with_ten:.1}, 10,000 queues {with_ten_thousand:.1}"
    );
    assert!(with_ten > 0.0, "the background loops ran");
    assert!(
        with_ten_thousand <= with_ten * 1.5 + 3.0,
        "10,000 idle queues cost {with_ten_thousand:.1} commands/s against {with_ten:.1} for 10: {by_command:?}; {} queues live after the setup",
        live.len()
    );
}
