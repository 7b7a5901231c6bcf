//! Pull consumers, dead letters, idempotency, batches, cancel and delay.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestRedis, body, error_body, spawn_app, spawn_app_with};

pub(crate) async fn pull_queue(app: &TestApp, token: &str, name: &str, settings: Value) {
    let response = app.put_queue(token, name, &settings).await;
    assert_eq!(response.status(), 201);
}

/// Claims with the given wait; returns the claimed jobs.
pub(crate) async fn claim(
    app: &TestApp,
    token: &str,
    queue: &str,
    wait_ms: u64,
    max_jobs: usize,
) -> Vec<Value> {
    let request = json!({"wait_ms": wait_ms, "max_jobs": max_jobs});
    let response = app
        .post(&format!("/v1/queues/{queue}/claim"), token, Some(&request))
        .await;
    assert_eq!(response.status(), 200, "claim failed");
    body(response).await["jobs"].as_array().unwrap().clone()
}

pub(crate) async fn job_call(
    app: &TestApp,
    token: &str,
    id: &str,
    action: &str,
    request: Value,
) -> reqwest::Response {
    app.post(&format!("/v1/jobs/{id}/{action}"), token, Some(&request))
        .await
}

/// Claims the next job of `queue` and nacks it for an immediate retry;
/// returns the job as the nack left it.
async fn fail_next(app: &TestApp, token: &str, queue: &str) -> Value {
    let job = claim(app, token, queue, 1_000, 1).await.remove(0);
    fail(app, token, &job).await
}

/// Acks a claimed job with its own lease; returns the job as it is after.
pub(crate) async fn ack(app: &TestApp, token: &str, job: &Value) -> Value {
    let request = json!({"lease": lease(job)});
    let response = job_call(app, token, id(job), "ack", request).await;
    assert_eq!(response.status(), 200, "ack of {}", id(job));
    body(response).await
}

/// Nacks a claimed job for an immediate retry; returns the job as it is after.
pub(crate) async fn fail(app: &TestApp, token: &str, job: &Value) -> Value {
    let request = json!({"lease": lease(job), "retry_in_ms": 0});
    body(job_call(app, token, id(job), "nack", request).await).await
}

/// Sends every dead job of `queue` back; how many went.
async fn redrive(app: &TestApp, token: &str, queue: &str) -> u64 {
    let path = format!("/v1/queues/{queue}/dead/redrive");
    let response = app.call(reqwest::Method::POST, &path, token, None).await;
    assert_eq!(response.status(), 200, "redrive");
    body(response).await["redriven"].as_u64().unwrap()
}

pub(crate) fn id(job: &Value) -> &str {
    job["id"].as_str().unwrap()
}

pub(crate) fn lease(job: &Value) -> &str {
    job["lease"].as_str().expect("claimed jobs carry a lease")
}

#[actix_web::test]
async fn competing_consumers_never_share_a_lane_and_ack_it_in_seq_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    for n in 0..30 {
        app.publish_ok(&user.token, "q", &json!({"payload": n, "key": "lane"}))
            .await;
    }
    // Claims are recorded when they return: the server can only hand out
    // seq N+1 after seq N's ack committed, so this is the lane's real order.
    let claimed: RefCell<Vec<u64>> = RefCell::new(Vec::new());
    let acked = std::cell::Cell::new(0);
    let consumer = |name: &'static str| {
        let (app, token, claimed, acked) = (&app, &user.token, &claimed, &acked);
        async move {
            while acked.get() < 30 {
                let jobs = claim(app, token, "q", 300, 5).await;
                assert!(
                    jobs.len() <= 1,
                    "{name} got {} jobs of one lane",
                    jobs.len()
                );
                for job in jobs {
                    claimed.borrow_mut().push(job["seq"].as_u64().unwrap());
                    actix_web::rt::task::yield_now().await;
                    let request = json!({"lease": lease(&job), "result": name});
                    let ack = job_call(app, token, id(&job), "ack", request).await;
                    assert_eq!(ack.status(), 200);
                    acked.set(acked.get() + 1);
                }
            }
        }
    };
    futures_util::join!(consumer("one"), consumer("two"));
    assert_eq!(claimed.into_inner(), (1..=30).collect::<Vec<u64>>());
    // Server-side: no job of the lane started before the previous one finished.
    let mut jobs = app.all_jobs(&user.token, "q", Some("completed")).await;
    jobs.sort_by_key(|j| j["seq"].as_u64().unwrap());
    assert_eq!(jobs.len(), 30);
    for pair in jobs.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        assert!(
            next["started_at"].as_str().unwrap() >= prev["finished_at"].as_str().unwrap(),
            "seq {} started before seq {} finished",
            next["seq"],
            prev["seq"]
        );
    }
}

#[actix_web::test]
async fn an_unacked_lease_expires_and_the_same_job_goes_to_the_next_consumer_first() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({"lease_ms": 1000})).await;
    let first = app
        .publish_ok(&user.token, "q", &json!({"payload": "a", "key": "k"}))
        .await;
    app.publish_ok(&user.token, "q", &json!({"payload": "b", "key": "k"}))
        .await;

    let stalled = claim(&app, &user.token, "q", 0, 1).await;
    assert_eq!(stalled.len(), 1);
    assert_eq!(id(&stalled[0]), id(&first));
    assert_eq!(stalled[0]["attempts"], 1);
    assert_eq!(stalled[0]["state"], "active");
    assert!(stalled[0]["lease_expires_at"].is_string());

    let again = claim(&app, &user.token, "q", 10_000, 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        id(&again[0]),
        id(&first),
        "a later job overtook the expired one"
    );
    assert_eq!(again[0]["attempts"], 2);

    let late = job_call(
        &app,
        &user.token,
        id(&first),
        "ack",
        json!({"lease": lease(&stalled[0]), "result": "late"}),
    )
    .await;
    error_body(late, 409, "lease_lost").await;
    let ack = job_call(
        &app,
        &user.token,
        id(&first),
        "ack",
        json!({"lease": lease(&again[0]), "result": {"by": 2}}),
    )
    .await;
    assert_eq!(ack.status(), 200);
    let done = app.job(&user.token, id(&first)).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["result"], json!({"by": 2}));
    // A second ack with the winning lease is a repeat (its reply may have
    // been lost): 200 with the outcome it produced, and nothing changes.
    let twice = job_call(
        &app,
        &user.token,
        id(&first),
        "ack",
        json!({"lease": lease(&again[0]), "result": "again"}),
    )
    .await;
    let twice = body(twice).await;
    assert_eq!(twice["state"], "completed");
    assert_eq!(twice["result"], json!({"by": 2}));
    // So is a nack with it: the lease already produced its outcome.
    let nack = job_call(
        &app,
        &user.token,
        id(&first),
        "nack",
        json!({"lease": lease(&again[0]), "error": "late"}),
    )
    .await;
    assert_eq!(body(nack).await["state"], "completed");
    assert_eq!(
        app.job(&user.token, id(&first)).await["result"],
        json!({"by": 2})
    );
    assert_eq!(claim(&app, &user.token, "q", 0, 1).await[0]["payload"], "b");
}

#[actix_web::test]
async fn extend_keeps_a_lease_alive_past_its_original_expiry() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({"lease_ms": 1000})).await;
    app.publish_ok(&user.token, "q", &json!({"payload": 1}))
        .await;
    let held = claim(&app, &user.token, "q", 0, 1).await.remove(0);
    let extended = job_call(
        &app,
        &user.token,
        id(&held),
        "extend",
        json!({"lease": lease(&held), "lease_ms": 8000}),
    )
    .await;
    assert_eq!(extended.status(), 200);
    let extended = body(extended).await;
    assert!(
        extended["lease_expires_at"].as_str().unwrap() > held["lease_expires_at"].as_str().unwrap()
    );
    // Well past the original expiry (and a recovery pass), nobody else gets it.
    assert!(claim(&app, &user.token, "q", 2_500, 1).await.is_empty());
    assert_eq!(ack(&app, &user.token, &held).await["state"], "completed");
}

#[actix_web::test]
async fn nack_with_retry_in_ms_delays_the_lane_head_by_at_least_that() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    app.publish_ok(&user.token, "q", &json!({"payload": "head", "key": "k"}))
        .await;
    app.publish_ok(&user.token, "q", &json!({"payload": "next", "key": "k"}))
        .await;
    let held = claim(&app, &user.token, "q", 0, 1).await.remove(0);
    let nacked_at = Instant::now();
    let nack = job_call(
        &app,
        &user.token,
        id(&held),
        "nack",
        json!({"lease": lease(&held), "error": "busy", "retry_in_ms": 800}),
    )
    .await;
    assert_eq!(nack.status(), 200);
    let nacked = body(nack).await;
    assert_eq!(nacked["state"], "retrying");
    assert_eq!(nacked["last_error"], "busy");
    let retried = claim(&app, &user.token, "q", 5_000, 1).await.remove(0);
    assert!(
        nacked_at.elapsed() >= Duration::from_millis(800),
        "{:?}",
        nacked_at.elapsed()
    );
    assert_eq!(retried["payload"], "head");
    assert_eq!(retried["attempts"], 2);
}

#[actix_web::test]
async fn a_claim_without_a_body_claims_one_job_and_a_body_must_still_be_json() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    for (n, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        app.publish_ok(&user.token, "q", &json!({"payload": n, "key": key}))
            .await;
    }
    // A claim with this Content-Type and body (either may be absent).
    let send = |content_type: Option<&'static str>, text: Option<&'static str>| {
        let mut request = app
            .client
            .post(app.url("/v1/queues/q/claim"))
            .bearer_auth(&user.token);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(text) = text {
            request = request.body(text);
        }
        async move { request.send().await.unwrap() }
    };
    const JSON: Option<&str> = Some("application/json");
    // No body (with or without a JSON Content-Type), or JSON `null` (the
    // documented body is optional, so nullable): as `{}`, one job each.
    for (seq, (content_type, text)) in [(None, None), (JSON, None), (JSON, Some("null"))]
        .into_iter()
        .enumerate()
    {
        let answer = send(content_type, text).await;
        assert_eq!(answer.status(), 200, "{content_type:?} {text:?}");
        let jobs = body(answer).await["jobs"].as_array().unwrap().clone();
        assert_eq!(jobs.len(), 1, "{content_type:?} {text:?}");
        assert_eq!(jobs[0]["seq"], seq + 1, "{content_type:?} {text:?}");
    }
    // A body that is there must be JSON, and valid.
    for (content_type, text, status, code) in [
        (
            Some("text/plain"),
            "max_jobs=5",
            415,
            "unsupported_media_type",
        ),
        (JSON, "{", 400, "invalid_json"),
        (JSON, r#"{"max_job": 5}"#, 422, "validation_failed"),
    ] {
        error_body(send(content_type, Some(text)).await, status, code).await;
    }
    // Nothing of that claimed anything.
    let last = claim(&app, &user.token, "q", 0, 5).await;
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["seq"], 4);
}

#[actix_web::test]
async fn a_nack_repeated_after_its_job_was_claimed_again_answers_its_outcome() {
    // PRODUCT.md §7.2: the nack's reply was lost, the job was retried at once
    // and claimed again; the consumer's repeat still answers 200 retrying.
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    app.publish_ok(&user.token, "q", &json!({"payload": "head", "key": "k"}))
        .await;
    let first = claim(&app, &user.token, "q", 0, 1).await.remove(0);
    let nack = json!({"lease": lease(&first), "error": "busy", "retry_in_ms": 0});
    let nacked = job_call(&app, &user.token, id(&first), "nack", nack.clone()).await;
    assert_eq!(nacked.status(), 200);
    let nacked = body(nacked).await;
    assert_eq!(
        (&nacked["state"], &nacked["outcome"]),
        (&json!("retrying"), &json!("retrying"))
    );
    let counted = app.metrics_text().await;
    let second = claim(&app, &user.token, "q", 5_000, 1).await.remove(0);
    assert_eq!(id(&second), id(&first));
    assert_eq!(second["attempts"], 2);

    let repeated = job_call(&app, &user.token, id(&first), "nack", nack.clone()).await;
    assert_eq!(repeated.status(), 200, "a repeated nack is idempotent");
    let repeated = body(repeated).await;
    assert_eq!(repeated["attempts"], 2, "the repeat changed nothing");
    assert_eq!(repeated["state"], "active", "the job is leased again");
    assert_eq!(
        repeated["outcome"], "retrying",
        "the repeat answers its lease's outcome"
    );
    let jobs_counted = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                ["completed", "retried", "dead"]
                    .iter()
                    .any(|c| l.starts_with(&format!("orderly_jobs_{c}_total ")))
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        jobs_counted(&app.metrics_text().await),
        jobs_counted(&counted),
        "a repeat is not counted again"
    );
    let batch = app
        .call(
            reqwest::Method::POST,
            "/v1/queues/q/ack",
            &user.token,
            Some(&json!({"nacks": [{"id": id(&first), "lease": lease(&first)}]})),
        )
        .await;
    assert_eq!(batch.status(), 200);
    assert_eq!(body(batch).await["results"][0]["status"], "retrying");
    assert_eq!(
        jobs_counted(&app.metrics_text().await),
        jobs_counted(&counted),
        "a repeat in a batch is not counted again either"
    );

    // Only that lease's own token answers ("<number>.<token>"); the live
    // lease is untouched.
    let mut forged = lease(&first).to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let wrong = job_call(
        &app,
        &user.token,
        id(&first),
        "nack",
        json!({"lease": forged, "retry_in_ms": 0}),
    )
    .await;
    error_body(wrong, 409, "lease_lost").await;
    let done = ack(&app, &user.token, &second).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["outcome"], "completed");
    assert_eq!(done["attempts"], 2);
}

#[actix_web::test]
async fn nack_without_retry_in_ms_backs_off_exponentially_up_to_the_cap() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let settings = json!({"max_attempts": 5, "backoff": {"initial_ms": 400, "max_ms": 1000}});
    pull_queue(&app, &user.token, "q", settings).await;
    app.publish_ok(&user.token, "q", &json!({"payload": "head", "key": "k"}))
        .await;
    let mut held = claim(&app, &user.token, "q", 0, 1).await.remove(0);
    // Equal jitter: the delay after attempt n lies in [step/2, step] with
    // step = min(400 × 2^(n-1), 1000); the upper side gets claim slack.
    for (attempt, (low, high)) in [(1, (200, 400)), (2, (400, 800)), (3, (500, 1000))] {
        assert_eq!(held["attempts"], attempt);
        let nacked_at = Instant::now();
        let nack = job_call(
            &app,
            &user.token,
            id(&held),
            "nack",
            json!({"lease": lease(&held)}),
        )
        .await;
        assert_eq!(nack.status(), 200);
        held = claim(&app, &user.token, "q", 5_000, 1).await.remove(0);
        let waited = nacked_at.elapsed();
        assert!(
            waited >= Duration::from_millis(low) && waited < Duration::from_millis(high + 400),
            "attempt {attempt}: retried after {waited:?}, expected {low}..{high} ms"
        );
    }
    assert_eq!(held["payload"], "head");
}

#[actix_web::test]
async fn an_idle_claim_waits_without_polling_redis_and_wakes_on_publish() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;

    let before = redis.command_calls().await;
    let started = Instant::now();
    assert!(claim(&app, &user.token, "q", 2_000, 1).await.is_empty());
    let waited = started.elapsed();
    let after = redis.command_calls().await;
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    // Every engine call is one FCALL (the group polls one EVALSHA);
    // everything else a client sends is plain.
    let scripts = delta("fcall") + delta("evalsha") + delta("eval");
    let total: u64 = after.keys().map(|name| delta(name)).sum();
    assert!(
        waited >= Duration::from_millis(2_000) && waited < Duration::from_millis(3_000),
        "{waited:?}"
    );
    // The consumer re-checks about once a second; the worker's fallback poll,
    // recovery and gauge sampling add a few more. Busy polling would be hundreds.
    assert!(
        scripts <= 12,
        "{scripts} script calls during a 2 s idle claim: {after:?}"
    );
    assert!(
        total <= 80,
        "{total} Redis commands during a 2 s idle claim: {after:?}"
    );

    let publish_after = Duration::from_millis(300);
    let (claimed, published_at) = futures_util::join!(
        async {
            let jobs = claim(&app, &user.token, "q", 10_000, 1).await;
            (jobs, Instant::now())
        },
        async {
            actix_web::rt::time::sleep(publish_after).await;
            app.publish_ok(&user.token, "q", &json!({"payload": "wake"}))
                .await;
            Instant::now()
        }
    );
    let (jobs, claimed_at) = claimed;
    assert_eq!(jobs.len(), 1);
    assert!(
        claimed_at.saturating_duration_since(published_at) < Duration::from_millis(100),
        "claim returned {:?} after the publish",
        claimed_at.saturating_duration_since(published_at)
    );
}

#[actix_web::test]
async fn redrive_puts_dead_jobs_back_at_the_heads_of_their_lanes_in_seq_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({"max_attempts": 1})).await;
    for (payload, key) in [("a1", "a"), ("b1", "b"), ("a2", "a")] {
        app.publish_ok(&user.token, "q", &json!({"payload": payload, "key": key}))
            .await;
    }
    for _ in 0..3 {
        assert_eq!(fail_next(&app, &user.token, "q").await["state"], "dead");
    }
    let dead = body(app.get_with_token("/v1/queues/q/dead", &user.token).await).await;
    let dead: Vec<&str> = dead["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["payload"].as_str().unwrap())
        .collect();
    assert_eq!(dead, vec!["a1", "b1", "a2"]);
    for (payload, key) in [("a3", "a"), ("b2", "b")] {
        app.publish_ok(&user.token, "q", &json!({"payload": payload, "key": key}))
            .await;
    }
    assert_eq!(redrive(&app, &user.token, "q").await, 3);
    let empty = body(app.get_with_token("/v1/queues/q/dead", &user.token).await).await;
    assert!(empty["jobs"].as_array().unwrap().is_empty());

    let mut order: Vec<(String, String, u64)> = Vec::new();
    while order.len() < 5 {
        for job in claim(&app, &user.token, "q", 1_000, 10).await {
            order.push((
                job["key"].as_str().unwrap().into(),
                job["payload"].as_str().unwrap().into(),
                job["attempts"].as_u64().unwrap(),
            ));
            ack(&app, &user.token, &job).await;
        }
    }
    let lane = |k: &str| {
        order
            .iter()
            .filter(|(key, _, _)| key == k)
            .map(|(_, p, _)| p.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(lane("a"), vec!["a1", "a2", "a3"]);
    assert_eq!(lane("b"), vec!["b1", "b2"]);
    assert!(
        order.iter().all(|(_, _, attempts)| *attempts == 1),
        "redriven jobs start with fresh attempts: {order:?}"
    );
}

/// A head only waiting for its retry (not leased, not blocked) does not keep
/// an older job sent back from dead behind it: the lane runs in seq order
/// again, the retried head after the sent-back job and still after its own
/// backoff.
#[actix_web::test]
async fn a_redriven_job_goes_ahead_of_a_newer_head_waiting_for_its_retry() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({"max_attempts": 2})).await;
    for payload in ["j1", "j2", "j3"] {
        app.publish_ok(&user.token, "q", &json!({"payload": payload, "key": "L"}))
            .await;
    }
    for _ in 0..2 {
        let j1 = claim(&app, &user.token, "q", 1_000, 1).await.remove(0);
        assert_eq!(j1["payload"], "j1");
        fail(&app, &user.token, &j1).await;
    }
    let j2 = claim(&app, &user.token, "q", 1_000, 1).await.remove(0);
    assert_eq!(j2["payload"], "j2");
    let retry_in = Duration::from_millis(1_500);
    let request = json!({"lease": lease(&j2), "retry_in_ms": retry_in.as_millis() as u64});
    let nacked_at = Instant::now();
    let nacked = body(job_call(&app, &user.token, id(&j2), "nack", request).await).await;
    assert_eq!(nacked["state"], "retrying");

    assert_eq!(redrive(&app, &user.token, "q").await, 1);
    let lane = body(
        app.get_with_token("/v1/queues/q/lanes/L", &user.token)
            .await,
    )
    .await;
    assert_eq!(lane["head"]["seq"], 1, "{lane}");

    let mut order = Vec::new();
    while order.len() < 3 {
        for job in claim(&app, &user.token, "q", 5_000, 1).await {
            let payload = job["payload"].as_str().unwrap().to_owned();
            if payload == "j2" {
                assert!(
                    nacked_at.elapsed() >= retry_in,
                    "j2 started {:?} after its nack asked for {retry_in:?}",
                    nacked_at.elapsed()
                );
            }
            order.push((payload, job["attempts"].as_u64().unwrap()));
            ack(&app, &user.token, &job).await;
        }
    }
    let expected = [("j1", 1), ("j2", 2), ("j3", 1)].map(|(p, a)| (p.to_owned(), a));
    assert_eq!(order, expected);
}

#[actix_web::test]
async fn a_blocked_head_is_resolved_by_retry_or_skip() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(
        &app,
        &user.token,
        "q",
        json!({"max_attempts": 1, "on_exhausted": "block"}),
    )
    .await;
    let x1 = app
        .publish_ok(&user.token, "q", &json!({"payload": "x1", "key": "k"}))
        .await;
    app.publish_ok(&user.token, "q", &json!({"payload": "x2", "key": "k"}))
        .await;
    let job = claim(&app, &user.token, "q", 0, 1).await.remove(0);
    assert_eq!(fail(&app, &user.token, &job).await["state"], "blocked");
    assert!(
        claim(&app, &user.token, "q", 300, 1).await.is_empty(),
        "the lane should be stopped"
    );
    let skip_queued = job_call(&app, &user.token, id(&x1), "skip", json!({})).await;
    assert_eq!(skip_queued.status(), 200, "a blocked job can be skipped");
    let skipped = body(skip_queued).await;
    assert_eq!(skipped["state"], "dead");
    let next = claim(&app, &user.token, "q", 1_000, 1).await.remove(0);
    assert_eq!(next["payload"], "x2");
    assert_eq!(fail(&app, &user.token, &next).await["state"], "blocked");
    let retry = job_call(&app, &user.token, id(&next), "retry", json!({})).await;
    assert_eq!(body(retry).await["state"], "queued");
    let again = claim(&app, &user.token, "q", 1_000, 1).await.remove(0);
    assert_eq!(id(&again), id(&next));
    assert_eq!(again["attempts"], 1);
    let not_stopped = job_call(&app, &user.token, id(&again), "skip", json!({})).await;
    error_body(not_stopped, 409, "not_stopped").await;
}

#[actix_web::test]
async fn the_same_idempotency_key_publishes_once_per_queue() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let publish = |queue: &'static str, payload: i64| {
        let (app, token) = (&app, &user.token);
        async move {
            app.client
                .post(app.url(&format!("/v1/queues/{queue}/jobs")))
                .bearer_auth(token)
                .header("Idempotency-Key", "order-42")
                .json(&json!({"payload": payload}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = publish("q", 1).await;
    assert_eq!(first.status(), 202);
    let first = body(first).await;
    let second = publish("q", 2).await;
    assert_eq!(second.status(), 200);
    let second = body(second).await;
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["payload"], 1, "the original job is returned");
    assert_eq!(app.queue(&user.token, "q").await["stats"]["waiting"], 1);
    let other = publish("other", 3).await;
    assert_eq!(other.status(), 202);
    assert_ne!(body(other).await["id"], first["id"]);
    assert_eq!(app.counter("orderly_jobs_published_total").await, 2.0);
}

#[actix_web::test]
async fn an_idempotency_key_outlives_its_job_in_its_window_but_not_its_queue() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({"retention_s": 1})).await;
    let publish = |key: Option<&'static str>| {
        let (app, token) = (&app, &user.token);
        async move {
            let mut request = app
                .client
                .post(app.url("/v1/queues/q/jobs"))
                .bearer_auth(token)
                .json(&json!({"payload": "x"}));
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            request.send().await.unwrap()
        }
    };
    let first = publish(Some("order-7")).await;
    assert_eq!(first.status(), 202);
    let first = body(first).await;
    let held = claim(&app, &user.token, "q", 0, 1).await.remove(0);
    ack(&app, &user.token, &held).await;
    // Its retention (1 s) ends; the lease reaper trims the record.
    let path = format!("/v1/jobs/{}", id(&first));
    crate::helpers::eventually(Duration::from_secs(20), "the job is trimmed", || async {
        let r = app
            .call(reqwest::Method::GET, &path, &user.token, None)
            .await;
        (r.status() == 404).then_some(())
    })
    .await;

    // Within the key's window the repeat enqueues nothing (PRODUCT.md §3).
    let repeat = publish(Some("order-7")).await;
    assert_eq!(repeat.status(), 200);
    let repeat = body(repeat).await;
    assert_eq!(repeat["id"], first["id"]);
    assert_eq!(repeat["state"], "expired");
    let next = body(publish(None).await).await;
    assert_eq!(next["seq"], 2, "the repeat took no seq");
    assert_eq!(app.counter("orderly_jobs_published_total").await, 2.0);

    // A queue created again under the name is another queue: the key is new.
    let deleted = app
        .call(reqwest::Method::DELETE, "/v1/queues/q", &user.token, None)
        .await;
    assert_eq!(deleted.status(), 204);
    pull_queue(&app, &user.token, "q", json!({"retention_s": 1})).await;
    let fresh = publish(Some("order-7")).await;
    assert_eq!(fresh.status(), 202);
    let fresh = body(fresh).await;
    assert_ne!(fresh["id"], first["id"]);
    assert_eq!(fresh["seq"], 1);
    let again = publish(Some("order-7")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(body(again).await["id"], fresh["id"]);
}

#[actix_web::test]
async fn a_batch_is_published_in_order_with_contiguous_seqs_or_not_at_all() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    app.publish_ok(&user.token, "q", &json!({"payload": "before"}))
        .await;
    let jobs: Vec<Value> = (0..1000)
        .map(|n| json!({"payload": n, "key": format!("k{}", n % 7)}))
        .collect();
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/queues/q/jobs/batch",
            &user.token,
            Some(&json!({"jobs": jobs})),
        )
        .await;
    assert_eq!(response.status(), 202);
    let published = body(response).await["jobs"].as_array().unwrap().clone();
    assert_eq!(published.len(), 1000);
    let seqs: Vec<u64> = published
        .iter()
        .map(|j| j["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (2..=1001).collect::<Vec<u64>>());
    let payloads: Vec<u64> = published
        .iter()
        .map(|j| j["payload"].as_u64().unwrap())
        .collect();
    assert_eq!(payloads, (0..1000).collect::<Vec<u64>>());
    let listed = app.all_jobs(&user.token, "q", None).await;
    assert_eq!(listed.len(), 1001);

    let mut bad = jobs.clone();
    bad[3]["key"] = json!("k".repeat(129));
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/queues/q/jobs/batch",
            &user.token,
            Some(&json!({"jobs": bad[..10]})),
        )
        .await;
    let error = error_body(response, 422, "validation_failed").await;
    assert!(error["fields"].get("jobs[3].key").is_some(), "{error}");
    let mut missing = jobs[..10].to_vec();
    missing[5] = json!({"key": "x"});
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/queues/q/jobs/batch",
            &user.token,
            Some(&json!({"jobs": missing})),
        )
        .await;
    let error = error_body(response, 422, "validation_failed").await;
    assert!(
        error["fields"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("jobs[5]")),
        "{error}"
    );
    let too_many: Vec<Value> = (0..1001).map(|n| json!({"payload": n})).collect();
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/queues/q/jobs/batch",
            &user.token,
            Some(&json!({"jobs": too_many})),
        )
        .await;
    error_body(response, 422, "validation_failed").await;
    let stats = app.queue(&user.token, "q").await["stats"].clone();
    assert_eq!(stats["waiting"], 1001, "a refused batch changed the queue");
}

#[actix_web::test]
async fn cancel_removes_a_waiting_job_for_good_but_not_an_active_one() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    let active = app
        .publish_ok(&user.token, "q", &json!({"payload": "active", "key": "a"}))
        .await;
    let doomed = app
        .publish_ok(&user.token, "q", &json!({"payload": "doomed", "key": "b"}))
        .await;
    let kept = app
        .publish_ok(&user.token, "q", &json!({"payload": "kept", "key": "b"}))
        .await;
    let claimed = claim(&app, &user.token, "q", 0, 1).await;
    assert_eq!(id(&claimed[0]), id(&active));

    let cancel = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/jobs/{}", id(&doomed)),
            &user.token,
            None,
        )
        .await;
    assert_eq!(cancel.status(), 200);
    assert_eq!(body(cancel).await["state"], "cancelled");
    let busy = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/jobs/{}", id(&active)),
            &user.token,
            None,
        )
        .await;
    error_body(busy, 409, "not_cancellable").await;
    let twice = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/jobs/{}", id(&doomed)),
            &user.token,
            None,
        )
        .await;
    error_body(twice, 409, "not_cancellable").await;

    let next = claim(&app, &user.token, "q", 1_000, 10).await;
    let payloads: Vec<&str> = next
        .iter()
        .map(|j| j["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, vec!["kept"], "the cancelled job was delivered");
    assert_eq!(id(&next[0]), id(&kept));
    assert_eq!(app.queue(&user.token, "q").await["stats"]["cancelled"], 1);
}

#[actix_web::test]
async fn a_delayed_job_holds_back_its_lane_until_it_is_due() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    let published_at = Instant::now();
    let delayed = app
        .publish_ok(
            &user.token,
            "q",
            &json!({"payload": "later", "key": "k", "delay_ms": 700}),
        )
        .await;
    assert_eq!(delayed["state"], "delayed");
    assert!(delayed["available_at"].is_string());
    app.publish_ok(&user.token, "q", &json!({"payload": "behind", "key": "k"}))
        .await;
    app.publish_ok(
        &user.token,
        "q",
        &json!({"payload": "free", "key": "other"}),
    )
    .await;
    assert_eq!(app.queue(&user.token, "q").await["stats"]["delayed"], 1);

    let first = claim(&app, &user.token, "q", 0, 10).await;
    let payloads: Vec<&str> = first
        .iter()
        .map(|j| j["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, vec!["free"], "only the other lane is startable");
    let due = claim(&app, &user.token, "q", 5_000, 10).await;
    assert!(published_at.elapsed() >= Duration::from_millis(700));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0]["payload"], "later");
    let cancel = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/jobs/{}", id(&due[0])),
            &user.token,
            None,
        )
        .await;
    error_body(cancel, 409, "not_cancellable").await;
}

#[actix_web::test]
async fn claim_and_lease_calls_validate_their_input() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    for request in [
        json!({"wait_ms": 30_001}),
        json!({"max_jobs": 0}),
        json!({"max_jobs": 101}),
    ] {
        let response = app
            .post("/v1/queues/q/claim", &user.token, Some(&request))
            .await;
        error_body(response, 422, "validation_failed").await;
    }
    let none = app
        .call(
            reqwest::Method::POST,
            "/v1/queues/nope/claim",
            &user.token,
            Some(&json!({})),
        )
        .await;
    error_body(none, 404, "not_found").await;
    app.push_queue(&user.token, "pushed", "http://127.0.0.1:9/", json!({}))
        .await;
    let push = app
        .call(
            reqwest::Method::POST,
            "/v1/queues/pushed/claim",
            &user.token,
            Some(&json!({})),
        )
        .await;
    error_body(push, 409, "not_a_pull_queue").await;
    let job = app
        .publish_ok(&user.token, "q", &json!({"payload": 1}))
        .await;
    let garbage = job_call(
        &app,
        &user.token,
        id(&job),
        "ack",
        json!({"lease": "garbage"}),
    )
    .await;
    error_body(garbage, 422, "validation_failed").await;
    let unclaimed = job_call(
        &app,
        &user.token,
        id(&job),
        "ack",
        json!({"lease": "1.0123456789abcdef"}),
    )
    .await;
    error_body(unclaimed, 409, "lease_lost").await;
    assert_eq!(app.job(&user.token, id(&job)).await["state"], "queued");
}

#[actix_web::test]
async fn the_example_consumer_processes_a_queue_in_lane_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "emails", json!({})).await;
    for n in 0..6 {
        let key = if n % 2 == 0 { "ann" } else { "bob" };
        app.publish_ok(
            &user.token,
            "emails",
            &json!({"payload": {"n": n}, "key": key}),
        )
        .await;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/consumer.py");
    let output = tokio::process::Command::new("python3")
        .args([
            script,
            "--queue",
            "emails",
            "--wait-ms",
            "500",
            "--exit-when-idle",
        ])
        .args(["--url", &app.address, "--token", &user.token])
        .output()
        .await
        .expect("python3 runs the example");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    for key in ["ann", "bob"] {
        let seqs: Vec<u64> = lines
            .iter()
            .filter(|l| l.contains(&format!("key='{key}'")))
            .map(|l| l.split_whitespace().next().unwrap()[4..].parse().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
    }
    let done = app.all_jobs(&user.token, "emails", Some("completed")).await;
    assert_eq!(done.len(), 6);
    assert!(
        done.iter()
            .all(|j| j["result"] == json!({"processed": true}))
    );
}

#[actix_web::test]
async fn dead_jobs_retried_one_by_one_behind_a_leased_head_keep_seq_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({"max_attempts": 1})).await;
    let d1 = app
        .publish_ok(&user.token, "q", &json!({"payload": "d1", "key": "k"}))
        .await;
    let d2 = app
        .publish_ok(&user.token, "q", &json!({"payload": "d2", "key": "k"}))
        .await;
    for _ in 0..2 {
        assert_eq!(fail_next(&app, &user.token, "q").await["state"], "dead");
    }
    app.publish_ok(&user.token, "q", &json!({"payload": "x", "key": "k"}))
        .await;
    let x = claim(&app, &user.token, "q", 1_000, 1).await.remove(0);
    assert_eq!(x["payload"], "x");
    for dead in [&d1, &d2] {
        let retry = job_call(&app, &user.token, id(dead), "retry", json!({})).await;
        assert_eq!(body(retry).await["state"], "queued");
    }
    ack(&app, &user.token, &x).await;
    let mut order = Vec::new();
    while order.len() < 2 {
        for job in claim(&app, &user.token, "q", 1_000, 1).await {
            order.push(job["payload"].as_str().unwrap().to_owned());
            ack(&app, &user.token, &job).await;
        }
    }
    assert_eq!(order, vec!["d1", "d2"]);
}

#[actix_web::test]
async fn queue_stats_show_the_last_minutes_throughput_and_drain_time() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "progress", json!({})).await;
    let stats = app.queue(&user.token, "progress").await["stats"].clone();
    assert_eq!(stats["published_last_minute"], 0, "{stats}");
    assert_eq!(stats["drain_eta_s"], 0, "{stats}");

    let batch = json!({"jobs": (0..5).map(|i| json!({"payload": i, "key": format!("k{i}")})).collect::<Vec<_>>()});
    let response = app
        .post("/v1/queues/progress/jobs/batch", &user.token, Some(&batch))
        .await;
    assert_eq!(response.status(), 202);
    app.publish_ok(&user.token, "progress", &json!({"payload": 5, "key": "k5"}))
        .await;
    let stats = app.queue(&user.token, "progress").await["stats"].clone();
    assert_eq!(stats["published_last_minute"], 6, "{stats}");
    assert_eq!(stats["completed_last_minute"], 0, "{stats}");
    assert_eq!(stats["waiting"], 6, "{stats}");
    assert!(stats["drain_eta_s"].is_null(), "not draining yet: {stats}");

    // Three completed, one failed (not counted), two still waiting.
    let claimed = claim(&app, &user.token, "progress", 0, 4).await;
    assert_eq!(claimed.len(), 4);
    for job in &claimed[..3] {
        ack(&app, &user.token, job).await;
    }
    fail(&app, &user.token, &claimed[3]).await;
    let stats = app.queue(&user.token, "progress").await["stats"].clone();
    assert_eq!(stats["completed_last_minute"], 3, "{stats}");
    assert_eq!(stats["published_last_minute"], 6, "{stats}");
    assert_eq!(stats["waiting"], 3, "{stats}");
    // 3 waiting at 3 per minute: about a minute to drain.
    assert_eq!(stats["drain_eta_s"], 60, "{stats}");
}

/// A pause is stamped strictly later than the settings it changes, so it
/// takes effect even when the settings it replaces were stamped by a clock
/// ahead of this process's (another process's), and resume likewise.
#[actix_web::test]
async fn pause_and_resume_take_effect_after_settings_stamped_by_a_clock_ahead() {
    use mongodb::bson::{DateTime, Document, doc};
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    // Another process, its clock a minute ahead, last wrote the settings.
    let queues = app.db.collection::<Document>("queues");
    let ahead = DateTime::from_millis(DateTime::now().timestamp_millis() + 60_000);
    let tag = format!("{}:q", user.id);
    let moved = queues
        .update_one(
            doc! { "_id": &tag },
            doc! { "$set": { "updated_at": ahead } },
        )
        .await
        .unwrap();
    assert_eq!(moved.matched_count, 1);
    let put = app.put_queue(&user.token, "q", &json!({})).await;
    assert_eq!(put.status(), 200);
    let stamped = |queue: Value| {
        chrono::DateTime::parse_from_rfc3339(queue["updated_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let put_at = stamped(body(put).await);
    assert!(put_at > ahead.timestamp_millis());

    let pause = app.post("/v1/queues/q/pause", &user.token, None).await;
    assert_eq!(pause.status(), 200);
    let paused = body(pause).await;
    assert_eq!(paused["paused"], true);
    assert!(stamped(paused.clone()) > put_at, "pause stamped {paused}");
    app.publish_ok(&user.token, "q", &json!({"payload": 1, "key": "a"}))
        .await;
    assert!(
        claim(&app, &user.token, "q", 0, 1).await.is_empty(),
        "a paused queue handed out a job"
    );

    let resume = app.post("/v1/queues/q/resume", &user.token, None).await;
    assert_eq!(resume.status(), 200);
    let resumed = body(resume).await;
    assert!(
        stamped(resumed.clone()) > stamped(paused),
        "resume stamped {resumed}"
    );
    assert_eq!(claim(&app, &user.token, "q", 1_000, 1).await.len(), 1);
}

/// A pull job whose last attempt's lease expires is dead-lettered by the
/// lease reaper, and that transition is counted like any other (the reaper
/// logs it with the job id too).
#[actix_web::test]
async fn a_last_attempt_that_expires_is_dead_lettered_and_counted() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(
        &app,
        &user.token,
        "q",
        json!({"lease_ms": 1000, "max_attempts": 1}),
    )
    .await;
    let published = app
        .publish_ok(&user.token, "q", &json!({"payload": 1, "key": "a"}))
        .await;
    let before = app.counter("orderly_jobs_dead_total").await;
    assert_eq!(claim(&app, &user.token, "q", 0, 1).await.len(), 1);
    let dead = crate::helpers::eventually(Duration::from_secs(10), "the lease expires", || async {
        let job = body(
            app.get_with_token(&format!("/v1/jobs/{}", id(&published)), &user.token)
                .await,
        )
        .await;
        (job["state"] == "dead").then_some(job)
    })
    .await;
    assert_eq!(dead["attempts"], 1);
    assert_eq!(app.counter("orderly_jobs_dead_total").await, before + 1.0);
}

/// Pull attempts are in the processing-time histogram like push deliveries:
/// one observation per ack or nack applied (single, batch, or riding on a
/// claim), none for a repeat.
#[actix_web::test]
async fn pull_attempts_are_observed_in_the_processing_time_histogram() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    for key in ["a", "b", "c"] {
        app.publish_ok(&user.token, "q", &json!({"payload": 1, "key": key}))
            .await;
    }
    let count = "orderly_job_processing_duration_seconds_count";
    let before = app.counter(count).await;
    let jobs = claim(&app, &user.token, "q", 0, 3).await;
    assert_eq!(jobs.len(), 3);
    ack(&app, &user.token, &jobs[0]).await;
    let again = job_call(
        &app,
        &user.token,
        id(&jobs[0]),
        "ack",
        json!({"lease": lease(&jobs[0])}),
    )
    .await;
    assert_eq!(again.status(), 200, "a repeat");
    let batch = app
        .call(
            reqwest::Method::POST,
            "/v1/queues/q/ack",
            &user.token,
            Some(&json!({
                "acks": [{"id": id(&jobs[1]), "lease": lease(&jobs[1])}],
                "nacks": [{"id": id(&jobs[2]), "lease": lease(&jobs[2])}],
            })),
        )
        .await;
    assert_eq!(batch.status(), 200);
    assert_eq!(app.counter(count).await, before + 3.0);
}

/// An ack riding on a long-poll claim is counted and timed when the claim's
/// first run applies it, not after the wait for more jobs: the attempt's
/// observed time is its own, not the wait's.
#[actix_web::test]
async fn an_ack_riding_on_a_waiting_claim_is_timed_when_it_is_applied() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    app.publish_ok(&user.token, "q", &json!({"payload": 1, "key": "a"}))
        .await;
    let job = claim(&app, &user.token, "q", 0, 1).await.remove(0);
    let sum = "orderly_job_processing_duration_seconds_sum";
    let (sum_before, count_before) = (
        app.counter(sum).await,
        app.counter("orderly_job_processing_duration_seconds_count")
            .await,
    );
    let request = json!({
        "wait_ms": 1500, "max_jobs": 1,
        "acks": [{"id": id(&job), "lease": lease(&job)}],
    });
    let started = Instant::now();
    let response = app
        .post("/v1/queues/q/claim", &user.token, Some(&request))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the claim waited"
    );
    assert_eq!(body(response).await["results"][0]["status"], "completed");
    assert_eq!(
        app.counter("orderly_job_processing_duration_seconds_count")
            .await,
        count_before + 1.0
    );
    let observed = app.counter(sum).await - sum_before;
    assert!(
        observed < 1.0,
        "the attempt was timed with the wait: {observed} s"
    );
}
