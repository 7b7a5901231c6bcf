//! The real binary under SIGKILL, SIGTERM and a second process: nothing lost,
//! lane order kept, no lane delivered twice at once, no lease left behind.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, test_settings};
use crate::process::OrderlyProcess;
use crate::receiver::{Receiver, Reply, Seen, assert_lanes_in_order};

const SETTLE: Duration = Duration::from_secs(120);

/// Publishes `total` jobs round-robin over `lanes` lanes (`lane-<n>`), in
/// batches.
pub(crate) async fn publish_spread(
    app: &TestApp,
    token: &str,
    queue: &str,
    total: usize,
    lanes: usize,
) -> usize {
    let jobs: Vec<Value> = (0..total)
        .map(|n| json!({"payload": {"n": n}, "key": format!("lane-{}", n % lanes)}))
        .collect();
    for chunk in jobs.chunks(1000) {
        let response = app
            .call(
                reqwest::Method::POST,
                &format!("/v1/queues/{queue}/jobs/batch"),
                token,
                Some(&json!({"jobs": chunk})),
            )
            .await;
        assert_eq!(response.status(), 202);
    }
    total
}

/// Leases held in the queue `q` of `owner`, read through the engine.
async fn leases_held(settings: &orderly::configuration::Settings, owner: &str) -> u64 {
    let engine = orderly::queue::engine::Engine::connect(&settings.redis).unwrap();
    let queue = orderly::queue::model::QueueRef::new(
        owner,
        orderly::queue::model::QueueName::parse("q").unwrap(),
    );
    engine.stats(&queue).await.unwrap().active
}

#[actix_web::test]
async fn kill_9_mid_run_loses_nothing_and_redelivers_only_what_was_in_flight() {
    let mut settings = test_settings();
    settings.worker.lease_ms = 1_000;
    let receiver = Receiver::start(|_| Reply::Hang(Duration::from_millis(2)));
    let mut first = OrderlyProcess::start(&settings).await;
    let api = first.client(&settings).await;
    let user = api.signed_up_user().await;
    api.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let total = publish_spread(&api, &user.token, "q", 5_000, 16).await;
    eventually(SETTLE, "deliveries under way", || async {
        (receiver.seen().len() >= 1_000).then_some(())
    })
    .await;
    first.kill9();
    let at_kill = receiver.seen().len();
    assert!(at_kill < total, "everything was delivered before the kill");

    let second = OrderlyProcess::start(&settings).await;
    let api = second.client(&settings).await;
    api.wait_for_completed(&user.token, "q", total as u64, SETTLE)
        .await;

    let seen = receiver.seen();
    let unique: HashSet<&str> = seen.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(unique.len(), total, "a job was never delivered");
    assert_lanes_in_order(&seen);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for s in &seen {
        *count.entry(s.job_id.as_str()).or_default() += 1;
    }
    let redelivered: Vec<&str> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        redelivered.len() <= settings.worker.concurrency,
        "{} redeliveries",
        redelivered.len()
    );
    let delivered_before_kill: HashSet<&str> =
        seen[..at_kill].iter().map(|s| s.job_id.as_str()).collect();
    for id in &redelivered {
        assert!(
            delivered_before_kill.contains(id),
            "job {id} was redelivered but was not in flight at the kill"
        );
    }
}

#[actix_web::test]
async fn two_processes_share_the_work_without_breaking_lane_order() {
    processes_share_the_work(2).await;
}

#[actix_web::test]
async fn three_processes_share_the_work_without_breaking_lane_order() {
    processes_share_the_work(3).await;
}

/// A settings change made through one process applies in another at once
/// (it announces the change; the other drops its cached definition), not
/// when that process's 5 s cache is refreshed: claims through the other
/// process get the new default lease right away.
#[actix_web::test]
async fn a_settings_change_through_one_process_applies_in_another_at_once() {
    let settings = test_settings();
    let (first, second) = (
        OrderlyProcess::start(&settings).await,
        OrderlyProcess::start(&settings).await,
    );
    let (a, b) = (
        first.client(&settings).await,
        second.client(&settings).await,
    );
    let user = a.signed_up_user().await;
    let pull = |lease_ms: u64| json!({"delivery": {"mode": "pull"}, "lease_ms": lease_ms});
    assert_eq!(
        a.put_queue(&user.token, "q", &pull(30_000)).await.status(),
        201
    );
    let lease_left_ms = |job: &Value| {
        let expires =
            chrono::DateTime::parse_from_rfc3339(job["lease_expires_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
        expires - chrono::Utc::now().timestamp_millis()
    };
    // B reads (and caches) the definition: 30 s leases.
    a.publish_ok(&user.token, "q", &json!({"payload": 0, "key": "k0"}))
        .await;
    let first = crate::pull::claim(&b, &user.token, "q", 2_000, 1).await;
    assert!(lease_left_ms(&first[0]) > 20_000, "{first:?}");

    assert_eq!(
        a.put_queue(&user.token, "q", &pull(2_000)).await.status(),
        200
    );
    let changed_at = Instant::now();
    let mut n = 0;
    eventually(
        Duration::from_secs(3),
        "B leases with the new lease_ms",
        || {
            n += 1;
            let (a, b, token) = (&a, &b, &user.token);
            async move {
                a.publish_ok(token, "q", &json!({"payload": n, "key": format!("k{n}")}))
                    .await;
                let jobs = crate::pull::claim(b, token, "q", 2_000, 1).await;
                (lease_left_ms(&jobs[0]) <= 2_000).then_some(())
            }
        },
    )
    .await;
    assert!(
        changed_at.elapsed() < Duration::from_secs(3),
        "B took {:?} to see the change",
        changed_at.elapsed()
    );
}

/// `n` Orderly processes on one Redis (or cluster) deliver 2,000 jobs of 8
/// lanes: each exactly once, lanes in seq order, never two deliveries of a
/// lane in flight at the receiver.
async fn processes_share_the_work(n: usize) {
    let settings = test_settings();
    let receiver = Receiver::start(|_| Reply::Hang(Duration::from_millis(1)));
    let mut processes = Vec::new();
    for _ in 0..n {
        processes.push(OrderlyProcess::start(&settings).await);
    }
    let api = processes[0].client(&settings).await;
    let user = api.signed_up_user().await;
    api.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let total = publish_spread(&api, &user.token, "q", 2_000, 8).await;
    let api_last = processes[n - 1].client(&settings).await;
    api_last
        .wait_for_completed(&user.token, "q", total as u64, SETTLE)
        .await;

    let seen = receiver.seen();
    assert_eq!(seen.len(), total, "a job was lost or delivered twice");
    assert_lanes_in_order(&seen);
    assert_eq!(
        receiver.max_open_per_lane(),
        1,
        "a lane had two deliveries in flight at once"
    );
}

#[actix_web::test]
async fn sigterm_lets_in_flight_deliveries_finish_and_exits_zero() {
    let mut settings = test_settings();
    settings.server.shutdown_grace_s = 10;
    let receiver = Receiver::start(|_| Reply::Hang(Duration::from_millis(300)));
    let mut process = OrderlyProcess::start(&settings).await;
    let api = process.client(&settings).await;
    let user = api.signed_up_user().await;
    api.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let total = publish_spread(&api, &user.token, "q", 200, 20).await;
    eventually(SETTLE, "deliveries in flight", || async {
        (!receiver.seen().is_empty()).then_some(())
    })
    .await;

    let status = process.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        leases_held(&settings, &user.id).await,
        0,
        "a lease was left behind"
    );
    let at_exit = receiver.seen().len();

    let next = OrderlyProcess::start(&settings).await;
    let api = next.client(&settings).await;
    api.wait_for_completed(&user.token, "q", total as u64, SETTLE)
        .await;
    let seen = receiver.seen();
    assert!(at_exit < total);
    assert_eq!(
        seen.len(),
        total,
        "in-flight deliveries should finish, not repeat"
    );
    assert_lanes_in_order(&seen);
}

#[actix_web::test]
async fn sigterm_past_the_grace_period_releases_leases_to_the_lane_heads() {
    let mut settings = test_settings();
    settings.server.shutdown_grace_s = 1;
    let receiver = Receiver::start(|s: &Seen| {
        Reply::Hang(Duration::from_millis(if s.attempt == 1 {
            4_000
        } else {
            1
        }))
    });
    let mut process = OrderlyProcess::start(&settings).await;
    let api = process.client(&settings).await;
    let user = api.signed_up_user().await;
    api.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let total = publish_spread(&api, &user.token, "q", 40, 4).await;
    eventually(SETTLE, "4 deliveries in flight", || async {
        (receiver.seen().len() >= 4).then_some(())
    })
    .await;

    let status = process.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        leases_held(&settings, &user.id).await,
        0,
        "a lease was left behind"
    );

    let next = OrderlyProcess::start(&settings).await;
    let api = next.client(&settings).await;
    api.wait_for_completed(&user.token, "q", total as u64, SETTLE)
        .await;
    let seen = receiver.seen();
    assert_lanes_in_order(&seen);
    let unique: HashSet<&str> = seen.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(unique.len(), total);
    // The released heads were delivered again, first in their lanes.
    assert_eq!(seen.iter().filter(|s| s.attempt == 2).count(), 4);
}
