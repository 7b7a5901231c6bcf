//! The ingress limit per tenant (§7.4): over `limits.publish_per_second`
//! (+ burst) publish and batch answer `429 rate_limited` with `Retry-After`,
//! a batch counts its jobs and is refused whole, and one tenant's flood
//! never slows another tenant's publishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, body, error_body, eventually, spawn_app, spawn_app_with};

/// The `Retry-After` of a `429 rate_limited`, checked against the contract.
async fn retry_after(response: reqwest::Response) -> u64 {
    let seconds: u64 = response
        .headers()
        .get("retry-after")
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(seconds >= 1);
    error_body(response, 429, "rate_limited").await;
    seconds
}

async fn batch(app: &TestApp, token: &str, queue: &str, jobs: usize) -> reqwest::Response {
    let jobs: Vec<_> = (0..jobs).map(|n| json!({"payload": {"n": n}})).collect();
    app.call(
        Method::POST,
        &format!("/v1/queues/{queue}/jobs/batch"),
        token,
        Some(&json!({ "jobs": jobs })),
    )
    .await
}

/// Latencies of `n` publishes one after another, in ms, sorted.
async fn paced_latencies(app: &TestApp, token: &str, queue: &str, n: usize) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let response = app.publish(token, queue, &json!({"payload": i})).await;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(response.status(), 202, "the quiet tenant was refused");
        // About 20 publishes a second: well under the quiet tenant's limit.
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[actix_web::test]
async fn a_tenant_over_its_limit_gets_429_while_another_keeps_its_latency() {
    const RATE: u64 = 100;
    let app = Arc::new(
        spawn_app_with(|s| {
            s.limits.publish_per_second = RATE as u32;
            s.limits.publish_burst = 0;
        })
        .await,
    );
    let flooder = app.signed_up_user().await;
    let quiet = app.signed_up_user().await;
    // Queues exist before anything is measured.
    app.publish_ok(&flooder.token, "flood", &json!({"payload": 0}))
        .await;
    app.publish_ok(&quiet.token, "calm", &json!({"payload": 0}))
        .await;
    let baseline = paced_latencies(&app, &quiet.token, "calm", 40).await;

    // The flood: 2 connections publishing as fast as they are answered (no
    // more: the point is the limit, not loading a 2-core machine that other
    // tests share).
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let flood_started = Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..2 {
        let (app, token) = (app.clone(), flooder.token.clone());
        let (stop, accepted, limited) = (stop.clone(), accepted.clone(), limited.clone());
        flooders.push(actix_web::rt::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = app.publish(&token, "flood", &json!({"payload": 1})).await;
                match response.status().as_u16() {
                    202 => accepted.fetch_add(1, Ordering::Relaxed),
                    429 => {
                        retry_after(response).await;
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("flood publish answered {other}"),
                };
            }
        }));
    }
    let during = paced_latencies(&app, &quiet.token, "calm", 40).await;
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let elapsed = flood_started.elapsed().as_secs_f64();
    let (accepted, limited) = (
        accepted.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
    );
    println!(
        "flood for {elapsed:.2} s: {accepted} accepted, {limited} refused with 429; \
         quiet tenant p50/p90 {:.2}/{:.2} ms before, {:.2}/{:.2} ms during",
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.9),
        percentile(&during, 0.5),
        percentile(&during, 0.9),
    );
    // The bucket starts full (one second's worth), then refills at RATE.
    let allowed = RATE as f64 * (elapsed + 1.0);
    assert!(
        (accepted as f64) <= allowed + 5.0,
        "{accepted} accepted in {elapsed:.2} s: over {RATE}/s + burst"
    );
    assert!(
        (accepted as f64) >= RATE as f64 * elapsed * 0.5,
        "the flooder got far less than its rate: {accepted} in {elapsed:.2} s"
    );
    assert!(limited > 0, "the flood was never refused");
    assert_eq!(
        app.counter("orderly_jobs_rate_limited_total").await,
        limited as f64
    );
    // Generous bounds (a 2-core machine serving the flood too): the quiet
    // tenant is never refused and its typical latency stays near normal.
    let (before, now) = (percentile(&baseline, 0.5), percentile(&during, 0.5));
    assert!(
        now <= before * 5.0 + 20.0,
        "quiet tenant's median latency went from {before:.2} ms to {now:.2} ms"
    );
    let queue = app.queue(&flooder.token, "flood").await;
    assert_eq!(queue["stats"]["waiting"], accepted + 1);
}

#[actix_web::test]
async fn a_batch_counts_its_jobs_and_is_refused_whole() {
    let app = spawn_app_with(|s| {
        s.limits.publish_per_second = 10;
        s.limits.publish_burst = 100;
    })
    .await;
    let user = app.signed_up_user().await;
    assert_eq!(batch(&app, &user.token, "q", 80).await.status(), 202);
    // 20 tokens left and 10 a second: 50 jobs need about 3 s more.
    let wait = retry_after(batch(&app, &user.token, "q", 50).await).await;
    assert!((2..=4).contains(&wait), "Retry-After {wait}");
    let single = app.publish(&user.token, "q", &json!({"payload": 1})).await;
    assert_eq!(single.status(), 202, "a single job still fits");
    let waiting = app.queue(&user.token, "q").await["stats"]["waiting"].clone();
    assert_eq!(waiting, 81, "the refused batch enqueued nothing");
    // More jobs than the bucket holds can never fit: 422, not a wait.
    let error = error_body(
        batch(&app, &user.token, "q", 101).await,
        422,
        "validation_failed",
    )
    .await;
    assert!(error["fields"]["jobs"].is_string(), "{error}");
    // After Retry-After the batch goes through.
    eventually(Duration::from_secs(10), "the batch fits again", || async {
        let response = batch(&app, &user.token, "q", 50).await;
        (response.status() == 202).then_some(())
    })
    .await;
    let waiting = app.queue(&user.token, "q").await["stats"]["waiting"].clone();
    assert_eq!(waiting, 131);
}

#[actix_web::test]
async fn without_a_limit_publishing_keeps_no_bucket_in_redis() {
    let unlimited = spawn_app().await;
    let limited = spawn_app_with(|s| s.limits.publish_per_second = 1000).await;
    for app in [&unlimited, &limited] {
        let user = app.signed_up_user().await;
        app.publish_ok(&user.token, "q", &json!({"payload": 1}))
            .await;
        let response = batch(app, &user.token, "q", 10).await;
        assert_eq!(response.status(), 202);
        assert_eq!(body(response).await["jobs"].as_array().unwrap().len(), 10);
        let mut redis = orderly::storage::redis_connection(&app.settings.redis).unwrap();
        let bucket = format!("{}:ingress:{{{}}}", app.settings.redis.key_prefix, user.id);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&bucket)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(
            exists,
            app.settings.limits.publish_per_second > 0,
            "bucket {bucket}"
        );
    }
}
