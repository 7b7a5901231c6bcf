//! Flow control (PRODUCT.md §7.4): a queue's `rate_limit` shared by every
//! process, `max_active_lanes`, and a push receiver's `Retry-After`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orderly::queue::engine::{DueIndex, EngineConf, Mode};
use orderly::queue::model::{QueueName, QueueRef};
use serde_json::{Value, json};

use crate::crash::publish_spread;
use crate::helpers::{
    TestApp, TestRedis, body, error_body, eventually, own_engine, spawn_app, spawn_app_with,
    test_settings,
};
use crate::process::OrderlyProcess;
use crate::pull::{claim, pull_queue};
use crate::push::publish_keys_with;
use crate::receiver::{Receiver, Reply, assert_lanes_in_order, seqs_by_lane};

/// Waits until a long-poll on `queue` is woken by a publish (the process's
/// wake subscription is live: on a cluster it is made after start), then
/// takes that job back out.
async fn wakes_arrive(app: &TestApp, token: &str, queue: &str) {
    eventually(Duration::from_secs(10), "wake-ups arrive", || async {
        let (claimed, published_at) = futures_util::join!(
            async {
                let jobs = claim(app, token, queue, 2_000, 1).await;
                (jobs, Instant::now())
            },
            async {
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                app.publish_ok(token, queue, &json!({"payload": "warm-up"}))
                    .await;
                Instant::now()
            }
        );
        let (jobs, claimed_at) = claimed;
        crate::pull::ack(app, token, &jobs[0]).await;
        (claimed_at.saturating_duration_since(published_at) < Duration::from_millis(300))
            .then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_rate_limit_shared_by_two_processes_starts_at_most_rate_times_seconds_plus_burst() {
    let settings = test_settings();
    let receiver = Receiver::ok();
    let first = OrderlyProcess::start(&settings).await;
    let second = OrderlyProcess::start(&settings).await;
    let api = first.client(&settings).await;
    let user = api.signed_up_user().await;
    let limit = json!({"rate_limit": {"per_second": 20, "burst": 5}});
    let queue = api.push_queue(&user.token, "q", &receiver.url, limit).await;
    assert_eq!(queue["rate_limit"], json!({"per_second": 20, "burst": 5}));
    publish_spread(&api, &user.token, "q", 400, 200).await;

    let window = Duration::from_secs(3);
    eventually(
        Duration::from_secs(20),
        "deliveries past the window",
        || async {
            let seen = receiver.seen();
            let start = seen.first()?.at;
            seen.iter().any(|s| s.at > start + window).then_some(())
        },
    )
    .await;
    let seen = receiver.seen();
    let start = seen[0].at;
    let in_window = seen.iter().filter(|s| s.at <= start + window).count();
    eprintln!("rate 20/s, burst 5: {in_window} heads started in the first 3 s");
    assert!(in_window <= 20 * 3 + 5, "{in_window} started in 3 s");
    assert!(in_window >= 20 * 2, "only {in_window} started in 3 s");
    drop(second);
}

#[actix_web::test]
async fn a_pull_queue_over_its_rate_answers_claims_when_the_next_token_is_due() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let settings = json!({"rate_limit": {"per_second": 2, "burst": 1}});
    pull_queue(&app, &user.token, "q", settings).await;
    publish_spread(&app, &user.token, "q", 4, 4).await;
    assert_eq!(claim(&app, &user.token, "q", 0, 4).await.len(), 1);
    // The bucket is empty: a long-poll gets the next head at the refill
    // (500 ms at 2/s), not at once and not at the end of its wait.
    let started = Instant::now();
    let next = claim(&app, &user.token, "q", 5_000, 4).await;
    let waited = started.elapsed();
    assert_eq!(next.len(), 1);
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1_500),
        "waited {waited:?}"
    );
}

#[actix_web::test]
async fn max_active_lanes_never_has_more_leases_out_than_allowed() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::start(|_| Reply::Hang(Duration::from_millis(30)));
    let limit = json!({"max_active_lanes": 2});
    app.push_queue(&user.token, "q", &receiver.url, limit).await;
    publish_spread(&app, &user.token, "q", 60, 12).await;
    app.wait_for_completed(&user.token, "q", 60, Duration::from_secs(30))
        .await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 60);
    assert_lanes_in_order(&seen);
    assert_eq!(receiver.max_open(), 2, "deliveries open at once");
}

#[actix_web::test]
async fn a_pull_claim_gets_no_more_heads_than_max_active_lanes_and_more_after_an_ack() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({"max_active_lanes": 2})).await;
    wakes_arrive(&app, &user.token, "q").await;
    publish_spread(&app, &user.token, "q", 6, 6).await;
    let held = claim(&app, &user.token, "q", 0, 6).await;
    assert_eq!(held.len(), 2);
    assert!(claim(&app, &user.token, "q", 0, 6).await.is_empty());
    // A waiting consumer is woken by the ack that frees a slot.
    let waiting = claim(&app, &user.token, "q", 5_000, 6);
    let ack = async {
        crate::pull::ack(&app, &user.token, &held[0]).await;
        Instant::now()
    };
    let (more, acked_at) = futures_util::join!(waiting, ack);
    assert_eq!(more.len(), 1);
    let late = acked_at.elapsed();
    assert!(
        late < Duration::from_millis(900),
        "woken {late:?} after the ack"
    );
}

#[actix_web::test]
async fn a_push_queue_held_at_max_active_lanes_is_due_again_when_an_expired_lease_frees_a_slot() {
    let app = spawn_app().await;
    let engine = own_engine(&app);
    let queue = QueueRef::new("owner", QueueName::parse("q").unwrap());
    let conf = EngineConf {
        push: true,
        paused: false,
        on_exhausted: "block",
        retention_s: 60,
        rate_limit: None,
        max_active: Some(1),
        version: 1,
    };
    engine.configure(&queue, &conf).await.unwrap();
    publish_keys_with(&engine, &queue, &["a", "b"], 1).await;
    let due = || async { engine.due_everywhere(DueIndex::Push).await.unwrap().queues };

    let held = engine
        .claim(&queue, 10, 300, Mode::Push, None)
        .await
        .unwrap();
    assert_eq!(held.jobs.len(), 1);
    let throttled = engine
        .claim(&queue, 10, 300, Mode::Push, None)
        .await
        .unwrap();
    assert!(throttled.jobs.is_empty());
    assert_eq!(
        throttled.next_due_in_ms, None,
        "full: wait for a lease to end"
    );
    assert!(!due().await.contains(&queue), "a full queue is not polled");

    // The lease expires (a push lease: its job goes back to its lane's head,
    // ready again — it never exhausts), and the freed slot puts the queue
    // back in the due index; the other lane, ready longer, starts first.
    eventually(Duration::from_secs(5), "the lease recovered", || async {
        (engine.recover(&queue, 10).await.unwrap().len() == 1).then_some(())
    })
    .await;
    assert!(due().await.contains(&queue));
    let next = engine
        .claim(&queue, 10, 300, Mode::Push, None)
        .await
        .unwrap();
    assert_eq!(next.jobs.len(), 1);
    assert_ne!(next.jobs[0].job.key, held.jobs[0].job.key);
}

#[actix_web::test]
async fn flow_settings_are_validated_per_field() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    for (settings, field) in [
        (
            json!({"rate_limit": {"per_second": 0}}),
            "rate_limit.per_second",
        ),
        (
            json!({"rate_limit": {"per_second": 5, "burst": 0}}),
            "rate_limit.burst",
        ),
        (json!({"max_active_lanes": 0}), "max_active_lanes"),
    ] {
        let response = app.put_queue(&user.token, "q", &settings).await;
        let error = error_body(response, 422, "validation_failed").await;
        assert!(error["fields"][field].is_string(), "{error}");
    }
    let response = app
        .put_queue(&user.token, "q", &json!({"rate_limit": {"per_second": 7}}))
        .await;
    assert_eq!(response.status(), 201);
    let queue = body(response).await;
    assert_eq!(queue["rate_limit"], json!({"per_second": 7, "burst": 7}));
    assert_eq!(queue["max_active_lanes"], Value::Null);
}

#[actix_web::test]
async fn a_429_with_retry_after_delays_its_lane_that_long_and_keeps_its_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let refused = Arc::new(Mutex::new(false));
    let once = refused.clone();
    let receiver = Receiver::start(move |seen| {
        let mut refused = once.lock().unwrap();
        if seen.key == "a" && !*refused {
            *refused = true;
            return Reply::RetryAfter(429, "2".into());
        }
        Reply::Status(200)
    });
    // backoff.max_ms caps Retry-After: leave room for 2 s.
    let settings = json!({"backoff": {"initial_ms": 20, "max_ms": 10_000}});
    app.push_queue(&user.token, "q", &receiver.url, settings)
        .await;
    for key in ["a", "a", "b"] {
        app.publish_ok(&user.token, "q", &json!({"payload": {}, "key": key}))
            .await;
    }
    app.wait_for_completed(&user.token, "q", 3, Duration::from_secs(15))
        .await;
    let seen = receiver.seen();
    let a: Vec<_> = seen.iter().filter(|s| s.key == "a").collect();
    assert_eq!(a.len(), 3, "a's head twice, then its second job");
    assert_eq!(a[0].seq, a[1].seq);
    assert_eq!(a[1].attempt, 2, "the refused delivery counts as an attempt");
    let delay = a[1].at - a[0].at;
    assert!(
        delay >= Duration::from_millis(1_900) && delay < Duration::from_millis(3_500),
        "lane a waited {delay:?}"
    );
    assert!(a[2].seq > a[1].seq);
    // Lane b was not held up by a's wait.
    let b = seen.iter().find(|s| s.key == "b").unwrap();
    assert!(b.at < a[1].at);
    assert_eq!(seqs_by_lane(&seen)["b"].len(), 1);
    assert_lanes_in_order(&seen);
}

#[actix_web::test]
async fn a_throttled_push_queue_is_claimed_when_tokens_are_due_not_in_a_loop() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::ok();
    let limit = json!({"rate_limit": {"per_second": 5, "burst": 1}});
    app.push_queue(&user.token, "q", &receiver.url, limit).await;
    publish_spread(&app, &user.token, "q", 100, 100).await;
    eventually(Duration::from_secs(10), "the first delivery", || async {
        (!receiver.seen().is_empty()).then_some(())
    })
    .await;
    let before = redis.command_calls().await;
    let started = Instant::now();
    eventually(Duration::from_secs(10), "ten more deliveries", || async {
        (receiver.seen().len() >= 11).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    let after = redis.command_calls().await;
    let scripts = ["fcall", "evalsha", "eval"]
        .iter()
        .map(|c| after.get(*c).unwrap_or(&0) - before.get(*c).unwrap_or(&0))
        .sum::<u64>();
    eprintln!("10 throttled deliveries in {elapsed:?}: {scripts} script calls");
    // 5/s: ten starts take about 2 s.
    assert!(elapsed >= Duration::from_millis(1_700), "{elapsed:?}");
    // Per start a claim, an ack and a claim that finds the bucket empty,
    // plus the once-a-second polls, reaper and sampler: tens, not thousands.
    assert!(scripts <= 150, "{scripts} script calls for 10 deliveries");
}
