//! Faults and size (§7.2): replies lost between Orderly and Redis, Redis
//! connections killed during push delivery, redrive of many dead jobs in one
//! lane, a delete racing publish and claim of another process, settings that
//! must never go back, and trimming of a queue that has gone quiet.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orderly::queue::engine::{Engine, EngineConf, Failure, Transition};
use orderly::queue::model::{QueueName, QueueRef};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestRedis, TestUser, body, error_body, eventually, pull_conf, redis_url, spawn_app,
    spawn_app_with,
};
use crate::process::OrderlyProcess;
use crate::proxy::LossyProxy;
use crate::receiver::{Receiver, Reply, assert_lanes_in_order, first_deliveries};

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

async fn pull_queue(app: &TestApp, token: &str, name: &str, extra: Value) {
    let mut settings = json!({"delivery": {"mode": "pull"}});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        settings[k] = v;
    }
    let response = app.put_queue(token, name, &settings).await;
    assert!(response.status().is_success(), "queue not created");
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.call(reqwest::Method::POST, path, token, Some(&body))
        .await
}

/// Acks a claimed job (its `id` and `lease` as the claim answered them).
async fn ack(app: &TestApp, token: &str, job: &Value) -> reqwest::Response {
    let path = format!("/v1/jobs/{}/ack", job["id"].as_str().unwrap());
    post(app, token, &path, json!({"lease": job["lease"]})).await
}

async fn post_with_key(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn jobs_of(app: &TestApp, user: &TestUser, queue: &str) -> Vec<Value> {
    app.all_jobs(&user.token, queue, None).await
}

/// An app whose Redis connection goes through a [`LossyProxy`].
async fn behind_lossy_proxy() -> (LossyProxy, TestApp) {
    let proxy = LossyProxy::start(&redis_url()).await;
    let app = spawn_app_with(|s| {
        s.redis.url = proxy.url.clone();
        s.redis.cluster_nodes.clear();
    })
    .await;
    (proxy, app)
}

#[actix_web::test]
async fn a_lost_publish_reply_is_outcome_unknown_and_a_retry_with_its_key_yields_one_job() {
    let (proxy, app) = behind_lossy_proxy().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "lossy", json!({})).await;

    // One job: the reply is lost after Redis enqueued it.
    let key = unique("lost-publish");
    proxy.lose_reply_to(&key);
    let path = "/v1/queues/lossy/jobs";
    let job = json!({"payload": {"n": 1}, "key": "a"});
    let lost = post_with_key(&app, &user.token, path, &key, &job).await;
    error_body(lost, 503, "outcome_unknown").await;
    assert_eq!(proxy.lost(), 1, "the reply was not lost");
    let retried = eventually(Duration::from_secs(10), "publish answers again", || async {
        let r = post_with_key(&app, &user.token, path, &key, &job).await;
        (r.status() != 503).then_some(r)
    })
    .await;
    assert_eq!(retried.status(), 200, "the first run had enqueued the job");
    let original = body(retried).await;
    assert_eq!(original["seq"], 1);

    // A batch with one key for the whole batch and one job with its own key.
    let batch_key = unique("lost-batch");
    let batch = json!({"jobs": [
        {"payload": 1, "key": "a"},
        {"payload": 2, "key": "b", "idempotency_key": unique("own")},
        {"payload": 3, "key": "a"},
    ]});
    proxy.lose_reply_to(&batch_key);
    let path = "/v1/queues/lossy/jobs/batch";
    let lost = post_with_key(&app, &user.token, path, &batch_key, &batch).await;
    error_body(lost, 503, "outcome_unknown").await;
    assert_eq!(proxy.lost(), 2);
    let retried = eventually(Duration::from_secs(10), "batch answers again", || async {
        let r = post_with_key(&app, &user.token, path, &batch_key, &batch).await;
        (r.status() != 503).then_some(r)
    })
    .await;
    assert_eq!(retried.status(), 200, "a full repeat enqueues nothing");
    let repeat = body(retried).await;
    let seqs: Vec<u64> = repeat["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4], "the original jobs, in batch order");

    let stored = jobs_of(&app, &user, "lossy").await;
    assert_eq!(stored.len(), 4, "one job per idempotency key: {stored:?}");
}

#[actix_web::test]
async fn a_claim_repeated_with_its_claim_id_and_an_ack_repeated_after_lost_replies_succeed() {
    let (proxy, app) = behind_lossy_proxy().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "lossy", json!({"lease_ms": 60_000})).await;
    for n in 0..2 {
        app.publish_ok(&user.token, "lossy", &json!({"payload": n, "key": "k"}))
            .await;
    }

    // The claim runs in Redis (the lane's head is leased) but its reply is
    // lost: the repeat with the same claim_id answers that very lease, so the
    // lane is not stranded until the lease expires.
    let claim_id = unique("claim");
    proxy.lose_reply_to(&claim_id);
    let claim = json!({"claim_id": claim_id, "max_jobs": 1});
    let lost = post(&app, &user.token, "/v1/queues/lossy/claim", claim.clone()).await;
    assert_eq!(lost.status(), 503, "a lost claim reply is an error");
    assert_eq!(proxy.lost(), 1);
    let repeated = eventually(Duration::from_secs(10), "claim answers again", || async {
        let r = post(&app, &user.token, "/v1/queues/lossy/claim", claim.clone()).await;
        (r.status() == 200).then_some(r)
    })
    .await;
    let jobs = body(repeated).await["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "the repeat answers the lease taken");
    let job = &jobs[0];
    assert_eq!(job["seq"], 1);
    assert_eq!(job["attempts"], 1, "the repeat took no second attempt");
    let again = post(&app, &user.token, "/v1/queues/lossy/claim", claim.clone()).await;
    let again = body(again).await;
    assert_eq!(again["jobs"][0]["lease"], job["lease"], "same lease again");

    // The ack runs, its reply is lost; the repeat answers 200 completed.
    let id = job["id"].as_str().unwrap();
    proxy.lose_reply_to(id);
    let ack = json!({"lease": job["lease"], "result": {"ok": true}});
    let lost = post(
        &app,
        &user.token,
        &format!("/v1/jobs/{id}/ack"),
        ack.clone(),
    )
    .await;
    assert_eq!(lost.status(), 503);
    assert_eq!(proxy.lost(), 2);
    let repeated = eventually(Duration::from_secs(10), "ack answers again", || async {
        let r = post(
            &app,
            &user.token,
            &format!("/v1/jobs/{id}/ack"),
            ack.clone(),
        )
        .await;
        (r.status() != 503).then_some(r)
    })
    .await;
    assert_eq!(repeated.status(), 200, "a repeated ack is idempotent");
    let done = body(repeated).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["attempts"], 1);

    // The lane goes on with its next job.
    let next = post(&app, &user.token, "/v1/queues/lossy/claim", json!({})).await;
    assert_eq!(body(next).await["jobs"][0]["seq"], 2);
}

#[actix_web::test]
async fn a_claim_whose_wait_meets_a_lost_reply_still_answers_the_outcomes_it_applied() {
    let (proxy, app) = behind_lossy_proxy().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "lossy", json!({"lease_ms": 60_000})).await;
    app.publish_ok(&user.token, "lossy", &json!({"payload": 1, "key": "a"}))
        .await;
    let first = post(&app, &user.token, "/v1/queues/lossy/claim", json!({})).await;
    let job = body(first).await["jobs"][0].clone();
    let id = job["id"].as_str().unwrap().to_owned();

    // The claim acks the job in its first run, finds nothing to lease and
    // waits; the claim its wait makes then loses its reply.
    let claim_id = unique("claim");
    let claim = json!({"claim_id": claim_id, "max_jobs": 1, "wait_ms": 5_000,
        "acks": [{"id": id, "lease": job["lease"]}]});
    let waiting = post(&app, &user.token, "/v1/queues/lossy/claim", claim);
    let meanwhile = async {
        eventually(Duration::from_secs(10), "the ack is applied", || async {
            let path = format!("/v1/jobs/{id}");
            let job = body(app.get_with_token(&path, &user.token).await).await;
            (job["state"] == "completed").then_some(())
        })
        .await;
        proxy.lose_reply_to(&claim_id);
        app.publish_ok(&user.token, "lossy", &json!({"payload": 2, "key": "b"}))
            .await;
    };
    let (answer, ()) = tokio::join!(waiting, meanwhile);
    assert_eq!(proxy.lost(), 1, "the wait's claim lost its reply");
    assert_eq!(
        answer.status(),
        200,
        "the outcomes are answered, not hidden"
    );
    let answer = body(answer).await;
    assert_eq!(
        answer["results"],
        json!([{"id": id, "status": "completed"}])
    );
    assert_eq!(answer["jobs"], json!([]));

    // The lost claim did lease the new job: its repeat answers that lease.
    let repeat = json!({"claim_id": claim_id, "max_jobs": 1});
    let repeated = eventually(Duration::from_secs(10), "claim answers again", || async {
        let r = post(&app, &user.token, "/v1/queues/lossy/claim", repeat.clone()).await;
        (r.status() == 200).then_some(r)
    })
    .await;
    let jobs = body(repeated).await["jobs"].clone();
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(jobs[0]["seq"], 2);
    assert_eq!(jobs[0]["attempts"], 1, "the repeat took no second attempt");
}

#[actix_web::test]
async fn redis_connections_killed_during_push_delivery_never_overlap_a_lane_nor_lose_a_job() {
    let redis = TestRedis::start().await;
    let receiver = Receiver::start(|_| Reply::Hang(Duration::from_millis(120)));
    let app = spawn_app_with(|s| {
        s.redis.url = redis.url.clone();
        s.worker.lease_ms = 1_500;
    })
    .await;
    let user = app.signed_up_user().await;
    app.push_queue(&user.token, "slow", &receiver.url, json!({}))
        .await;
    let lanes = ["a", "b", "c", "d"];
    let jobs: Vec<Value> = (0..40)
        .map(|n| json!({"payload": n, "key": lanes[n % lanes.len()]}))
        .collect();
    let published = post(
        &app,
        &user.token,
        "/v1/queues/slow/jobs/batch",
        json!({ "jobs": jobs }),
    )
    .await;
    assert_eq!(published.status(), 202);

    // Kill every client connection of Redis (Orderly's command and pub/sub
    // connections) every 100 ms while the jobs are delivered.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (stop, kills, url) = (stop.clone(), kills.clone(), redis.url.clone());
        actix_web::rt::spawn(async move {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            while !stop.load(Ordering::SeqCst) {
                for kind in ["normal", "pubsub"] {
                    let killed: Result<i64, _> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg(kind)
                        .arg("SKIPME")
                        .arg("yes")
                        .query_async(&mut conn)
                        .await;
                    kills.fetch_add(killed.unwrap_or(0) as usize, Ordering::SeqCst);
                }
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    eventually(Duration::from_secs(90), "every job delivered", || async {
        let firsts: usize = first_deliveries(&receiver.seen())
            .values()
            .map(Vec::len)
            .sum();
        (firsts == 40).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    killer.await.unwrap();
    app.wait_for_completed(&user.token, "slow", 40, Duration::from_secs(30))
        .await;

    let seen = receiver.seen();
    let killed = kills.load(Ordering::SeqCst);
    assert!(killed >= 10, "only {killed} connections were killed");
    assert_eq!(
        receiver.max_open_per_lane(),
        1,
        "two deliveries of one lane were in flight at once"
    );
    assert_lanes_in_order(&seen);
    // Every push carries its lease number; a job delivered again carries a
    // higher one.
    let mut last_lease: HashMap<&str, u64> = HashMap::new();
    for s in &seen {
        assert!(s.lease >= 1, "no Orderly-Lease header");
        if let Some(before) = last_lease.insert(&s.job_id, s.lease) {
            assert!(s.lease > before, "lease numbers went back for {}", s.job_id);
        }
    }
    let distinct: HashSet<&str> = seen.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(distinct.len(), 40);
    eprintln!(
        "{killed} connections killed; {} deliveries for 40 jobs",
        seen.len()
    );
}

/// One request's record from [`post_until`]: when it was sent, when it was
/// answered, its status and its JSON body (`null` if none).
type Sent = (Instant, Instant, u16, Value);

/// Posts `body(n)` (n = 0, 1, …) to `path` of `app` as `token`, one request at
/// a time, until `stop` is set; answers every request's record.
fn post_until(
    stop: &Arc<AtomicBool>,
    app: &TestApp,
    path: &str,
    token: &str,
    body: impl Fn(u64) -> Value + 'static,
) -> actix_web::rt::task::JoinHandle<Vec<Sent>> {
    let (stop, client, url, token) = (
        stop.clone(),
        app.client.clone(),
        app.url(path),
        token.to_owned(),
    );
    actix_web::rt::spawn(async move {
        let mut sent = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            let r = client
                .post(&url)
                .bearer_auth(&token)
                .json(&body(n))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let reply: Value = r.json().await.unwrap_or(Value::Null);
            sent.push((at, Instant::now(), status, reply));
            n += 1;
        }
        sent
    })
}

/// The dead jobs of one lane: `n` jobs published to lane `a` of a pull queue
/// with one attempt, each failed for good through the engine.
async fn dead_lane(app: &TestApp, user: &TestUser, engine: &Engine, queue: &QueueRef, n: usize) {
    pull_queue(app, &user.token, "big", json!({"max_attempts": 1})).await;
    for chunk in 0..n / 1000 {
        let jobs: Vec<Value> = (0..1000)
            .map(|i| json!({"payload": chunk * 1000 + i, "key": "a"}))
            .collect();
        let response = post(
            app,
            &user.token,
            "/v1/queues/big/jobs/batch",
            json!({ "jobs": jobs }),
        )
        .await;
        assert_eq!(response.status(), 202);
    }
    for _ in 0..n {
        let claimed = engine.claim_queue(queue, 1, 60_000).await.unwrap();
        let job = &claimed.jobs[0];
        let failed = engine
            .fail(queue, &job.job.id, &job.lease, "no", Failure::Permanent)
            .await
            .unwrap();
        assert!(matches!(failed, Transition::Done(_)));
    }
}

#[actix_web::test]
async fn ten_thousand_dead_jobs_of_one_lane_are_redriven_in_order_in_short_scripts() {
    const DEAD: usize = 10_000;
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let queue = QueueRef::new(&user.id, QueueName::parse("big").unwrap());
    dead_lane(&app, &user, &engine, &queue, DEAD).await;
    // Newer jobs wait behind them in the lane, and one in another lane.
    for key in ["a", "a", "a", "b"] {
        app.publish_ok(&user.token, "big", &json!({"payload": "new", "key": key}))
            .await;
    }

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();

    // Another tenant publishes one job at a time meanwhile.
    let done = Arc::new(AtomicBool::new(false));
    let publishing = post_until(
        &done,
        &app,
        "/v1/queues/elsewhere/jobs",
        &other.token,
        |_| json!({"payload": 1}),
    );
    let started = Instant::now();
    let redriven = post(&app, &user.token, "/v1/queues/big/dead/redrive", json!({})).await;
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let sent = publishing.await.unwrap();
    assert!(sent.iter().all(|(_, _, status, _)| *status == 202));
    let latencies: Vec<Duration> = sent
        .iter()
        .map(|(at, answered, _, _)| *answered - *at)
        .collect();
    assert_eq!(body(redriven).await["redriven"], DEAD as u64);

    // SLOWLOG entries: [id, time, duration µs, [command, args…], …].
    let slow: Vec<(u64, u64, u64, Vec<String>)> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(20)
        .query_async::<Vec<redis::Value>>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|entry| redis::from_redis_value(entry).ok())
        .collect();
    let over: Vec<(u64, &str)> = slow
        .iter()
        .map(|(_, _, us, args)| (*us, args.first().map_or("?", String::as_str)))
        .collect();
    assert!(
        over.is_empty(),
        "commands over 10 ms (µs, command): {over:?}"
    );
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "redrive of {DEAD} took {took:?}; {} publishes of another tenant meanwhile, slowest {worst:?}",
        latencies.len()
    );
    assert!(
        worst < Duration::from_millis(500),
        "another tenant's publish waited {worst:?}"
    );

    // Lane a: the redriven jobs in seq order, then the newer ones.
    let mut order = Vec::new();
    loop {
        let claimed = engine.claim_queue(&queue, 1, 60_000).await.unwrap();
        let Some(job) = claimed.jobs.into_iter().next() else {
            break;
        };
        if job.job.key == "a" {
            order.push(job.job.seq);
        }
        let acked = engine
            .ack(&queue, &job.job.id, &job.lease, "null")
            .await
            .unwrap();
        assert!(matches!(acked, Transition::Done(_)));
    }
    let expected: Vec<u64> = (1..=DEAD as u64 + 3).collect();
    assert_eq!(order.len(), expected.len());
    assert!(order == expected, "lane a out of order after the redrive");
}

#[actix_web::test]
async fn a_delete_racing_publish_and_claim_of_another_process_leaves_no_hidden_job() {
    let a = spawn_app().await;
    // B: the real binary as another process, sharing Redis and MongoDB.
    let process = OrderlyProcess::start(&a.settings).await;
    let b = process.client(&a.settings).await;
    let user = a.signed_up_user().await;
    pull_queue(&a, &user.token, "dq", json!({})).await;
    // B knows the queue (its definition is cached there).
    b.publish_ok(&user.token, "dq", &json!({"payload": "old", "key": "k"}))
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = post_until(
        &stop,
        &b,
        "/v1/queues/dq/jobs",
        &user.token,
        |n| json!({"payload": n, "key": format!("k{}", n % 3)}),
    );
    let claimer = post_until(
        &stop,
        &b,
        "/v1/queues/dq/claim",
        &user.token,
        |_| json!({"max_jobs": 10}),
    );
    eventually(Duration::from_secs(10), "publishes flow", || async {
        (jobs_of(&a, &user, "dq").await.len() > 20).then_some(())
    })
    .await;
    let delete_sent = Instant::now();
    let deleted = a
        .call(reqwest::Method::DELETE, "/v1/queues/dq", &user.token, None)
        .await;
    let delete_answered = Instant::now();
    assert_eq!(deleted.status(), 204);
    // Keep publishing and claiming through B for a while after the delete.
    let after = Instant::now();
    eventually(
        Duration::from_secs(10),
        "publishes after the delete",
        || async { (after.elapsed() > Duration::from_millis(500)).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let sent = publisher.await.unwrap();
    let claimed: Vec<(Instant, String)> = claimer
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, _, status, _)| *status == 200)
        .flat_map(|(at, _, _, reply)| {
            let jobs = reply["jobs"].as_array().cloned().unwrap_or_default();
            jobs.into_iter()
                .map(move |job| (at, job["id"].as_str().unwrap().to_owned()))
        })
        .collect();

    let old: HashSet<String> = sent
        .iter()
        .filter(|(_, answered, status, _)| *status == 202 && *answered < delete_sent)
        .map(|(_, _, _, job)| job["id"].as_str().unwrap().to_owned())
        .collect();
    let new: Vec<&Value> = sent
        .iter()
        .filter(|(at, _, status, _)| *status == 202 && *at > delete_answered)
        .map(|(_, _, _, job)| job)
        .collect();
    assert!(
        !old.is_empty() && !new.is_empty(),
        "the race did not happen"
    );
    // No claim sent after the delete answered got a job of the old queue.
    for (at, id) in &claimed {
        if *at > delete_answered {
            assert!(
                !old.contains(id),
                "job {id} of the deleted queue was delivered"
            );
        }
    }
    // Every job accepted after the delete is visible, in a queue that
    // exists, started afresh (seq from 1, no gap).
    let queue = a.get_with_token("/v1/queues/dq", &user.token).await;
    assert_eq!(queue.status(), 200, "publishing created the queue again");
    let stored = jobs_of(&a, &user, "dq").await;
    let stored_ids: HashSet<&str> = stored.iter().map(|j| j["id"].as_str().unwrap()).collect();
    for job in &new {
        assert!(
            stored_ids.contains(job["id"].as_str().unwrap()),
            "an accepted job is hidden: {job}"
        );
    }
    assert!(
        stored
            .iter()
            .all(|j| !old.contains(j["id"].as_str().unwrap()))
    );
    let mut seqs: Vec<u64> = stored.iter().map(|j| j["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[actix_web::test]
async fn an_older_settings_copy_never_overwrites_a_newer_one() {
    let app = spawn_app().await;
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let queue = QueueRef::new("owner", QueueName::parse("settings").unwrap());
    let conf = |paused: bool, version: u64| EngineConf {
        paused,
        version,
        ..pull_conf()
    };
    // Process A pauses (version 20); process B's refresh, which read the
    // definition before the pause (version 10), arrives later.
    assert!(engine.configure(&queue, &conf(true, 20)).await.unwrap());
    assert!(!engine.configure(&queue, &conf(false, 10)).await.unwrap());
    let job = orderly::queue::engine::NewJob {
        queue: queue.clone(),
        id: orderly::queue::model::JobId::generate(&queue.name).id,
        key: "k".into(),
        payload: "1".into(),
        delay_ms: 0,
        max_attempts: 3,
        priority: 0,
        idempotency_key: None,
    };
    engine.publish(std::slice::from_ref(&job), 60).await;
    let claimed = engine.claim_queue(&queue, 1, 60_000).await.unwrap();
    assert!(claimed.jobs.is_empty(), "the older copy resumed the queue");
    // A resume (version 30) applies.
    assert!(engine.configure(&queue, &conf(false, 30)).await.unwrap());
    let claimed = engine.claim_queue(&queue, 1, 60_000).await.unwrap();
    assert_eq!(claimed.jobs.len(), 1);

    // Through the API: pause and resume from one process while another
    // reads the queue (refreshing its cached copy); the last word stays.
    let b = spawn_app_with(|s| *s = app.settings.clone()).await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "flip", json!({})).await;
    app.publish_ok(&user.token, "flip", &json!({"payload": 1}))
        .await;
    for round in 0..10 {
        let action = if round % 2 == 0 { "pause" } else { "resume" };
        let r = post(
            &app,
            &user.token,
            &format!("/v1/queues/flip/{action}"),
            json!({}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let seen = b.get_with_token("/v1/queues/flip", &user.token).await;
        assert_eq!(seen.status(), 200);
    }
    let claimed = post(&b, &user.token, "/v1/queues/flip/claim", json!({})).await;
    assert_eq!(
        body(claimed).await["jobs"].as_array().map(Vec::len),
        Some(1),
        "the queue is resumed everywhere"
    );
}

#[actix_web::test]
async fn finished_jobs_of_a_quiet_queue_are_trimmed_after_their_retention() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "quiet", json!({"retention_s": 1})).await;
    for n in 0..5 {
        app.publish_ok(
            &user.token,
            "quiet",
            &json!({"payload": n, "key": format!("k{n}")}),
        )
        .await;
    }
    let claimed = post(
        &app,
        &user.token,
        "/v1/queues/quiet/claim",
        json!({"max_jobs": 5}),
    )
    .await;
    let jobs = body(claimed).await["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 5);
    for job in &jobs {
        assert_eq!(ack(&app, &user.token, job).await.status(), 200);
    }
    // Nothing else happens in the queue; the records go anyway.
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let queue = QueueRef::new(&user.id, QueueName::parse("quiet").unwrap());
    let records = format!("{}j", engine.queue_base(&queue));
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(
        redis::cmd("HLEN")
            .arg(&records)
            .query_async::<u64>(&mut conn)
            .await
            .unwrap(),
        5
    );
    eventually(Duration::from_secs(15), "records trimmed", || async {
        let left: u64 = redis::cmd("HLEN")
            .arg(&records)
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    let gone = a_job_is_gone(&app, &user, jobs[0]["id"].as_str().unwrap()).await;
    assert!(gone);
}

async fn a_job_is_gone(app: &TestApp, user: &TestUser, id: &str) -> bool {
    let r = app
        .get_with_token(&format!("/v1/jobs/{id}"), &user.token)
        .await;
    r.status() == 404
}

#[actix_web::test]
async fn a_delivery_whose_lease_is_lost_is_aborted_and_frees_its_slot() {
    // One delivery slot; the receiver holds the first job for 20 s.
    let receiver = Receiver::start(|seen| {
        if seen.queue == "held" {
            Reply::Hang(Duration::from_secs(20))
        } else {
            Reply::Status(200)
        }
    });
    let app = spawn_app_with(|s| {
        s.worker.concurrency = 1;
        s.worker.lease_ms = 900;
    })
    .await;
    let user = app.signed_up_user().await;
    let long = json!({"delivery": {"mode": "push", "url": receiver.url, "timeout_ms": 30_000}});
    let r = app.put_queue(&user.token, "held", &long).await;
    assert_eq!(r.status(), 201);
    app.push_queue(&user.token, "next", &receiver.url, json!({}))
        .await;
    app.publish_ok(&user.token, "held", &json!({"payload": 1}))
        .await;
    eventually(
        Duration::from_secs(10),
        "the held job is delivered",
        || async { (!receiver.seen().is_empty()).then_some(()) },
    )
    .await;
    app.publish_ok(&user.token, "next", &json!({"payload": 2}))
        .await;

    // The held job's lease goes (its queue is deleted): the delivery is
    // aborted at its next heartbeat and the slot takes the other queue's job
    // long before the receiver would have answered.
    let deleted = app
        .call(
            reqwest::Method::DELETE,
            "/v1/queues/held",
            &user.token,
            None,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let since = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the next job is delivered",
        || async {
            receiver
                .seen()
                .iter()
                .any(|s| s.queue == "next")
                .then_some(())
        },
    )
    .await;
    assert!(
        since.elapsed() < Duration::from_secs(5),
        "the slot stayed busy for {:?}",
        since.elapsed()
    );
    assert_eq!(
        receiver.seen().iter().filter(|s| s.queue == "held").count(),
        1,
        "a job of the deleted queue was delivered again"
    );
}

#[actix_web::test]
async fn expired_leases_are_still_recovered_after_the_lease_reaper_met_a_redis_outage() {
    let mut redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "lost", json!({"lease_ms": 1_000})).await;
    app.publish_ok(&user.token, "lost", &json!({"payload": 1}))
        .await;
    let claimed = post(&app, &user.token, "/v1/queues/lost/claim", json!({})).await;
    let first = body(claimed).await["jobs"][0].clone();
    assert_eq!(first["attempts"], 1);

    // Redis goes away long enough for the reaper's sweeps to fail (the
    // reaper stops; its supervisor must start it again).
    let restarts = app.counter("orderly_worker_restarts_total").await;
    redis.stop();
    eventually(
        Duration::from_secs(10),
        "the reaper meets the outage",
        || async { (app.counter("orderly_worker_restarts_total").await > restarts).then_some(()) },
    )
    .await;
    redis.resume().await;

    // The consumer never acked: its expired lease must be recovered.
    let again = eventually(
        Duration::from_secs(15),
        "the lease is recovered",
        || async {
            let r = post(&app, &user.token, "/v1/queues/lost/claim", json!({})).await;
            if r.status() != 200 {
                return None;
            }
            let jobs = body(r).await["jobs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            jobs.into_iter().next()
        },
    )
    .await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["attempts"], 2);
}

/// The engine's scripts are a Redis function library, loaded where a call
/// finds it missing: a Redis that lost it (restarted without persistence,
/// flushed, a fresh master) gets it again on the next call, and publish,
/// claim and ack carry on with every job and its order intact.
#[actix_web::test]
async fn a_redis_that_lost_the_function_library_gets_it_again_on_the_next_call() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "fl", json!({})).await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let libraries = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LIST");
        let mut conn = conn.clone();
        async move {
            cmd.query_async::<Vec<redis::Value>>(&mut conn)
                .await
                .unwrap()
                .len()
        }
    };
    app.publish_ok(&user.token, "fl", &json!({"payload": 1, "key": "k"}))
        .await;
    assert_eq!(
        libraries(&mut conn).await,
        1,
        "the library is loaded on first use"
    );

    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(libraries(&mut conn).await, 0);
    app.publish_ok(&user.token, "fl", &json!({"payload": 2, "key": "k"}))
        .await;
    assert_eq!(libraries(&mut conn).await, 1, "loaded again by the publish");

    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let claim = post(
            &app,
            &user.token,
            "/v1/queues/fl/claim",
            json!({"wait_ms": 0}),
        )
        .await;
        assert_eq!(claim.status(), 200);
        let job = body(claim).await["jobs"][0].clone();
        seen.push(job["payload"].clone());
        let acked = ack(&app, &user.token, &job).await;
        assert_eq!(acked.status(), 200);
    }
    assert_eq!(seen, vec![json!(1), json!(2)], "both jobs, in order");
}

/// Rewrites a queue's data into the layout of the Orderly before this one:
/// 16-field records with the payload apart in `Q:b`, the unfinished jobs
/// indexed in `Q:p` rather than counted in `Q:m`'s `pending`.
const TO_PREVIOUS_LAYOUT: &str = r#"
local jobs = redis.call('HGETALL', KEYS[2])
for i = 1, #jobs, 2 do
  local r = { cmsgpack.unpack(jobs[i + 1]) }
  redis.call('HSET', KEYS[3], jobs[i], r[17])
  redis.call('HSET', KEYS[2], jobs[i], cmsgpack.pack(unpack(r, 1, 16)))
  if r[3] ~= 'completed' and r[3] ~= 'cancelled' then
    redis.call('ZADD', KEYS[4], r[2], jobs[i])
  end
end
redis.call('HDEL', KEYS[1], 'pending')
return #jobs / 2
"#;

#[actix_web::test]
async fn jobs_written_by_the_previous_version_are_served_in_order_after_an_upgrade() {
    let old = spawn_app().await;
    let user = old.signed_up_user().await;
    pull_queue(&old, &user.token, "upgrade", json!({"retention_s": 1})).await;
    let mut published = Vec::new();
    for n in 0..6 {
        let key = format!("k{}", n % 2);
        let job = old
            .publish_ok(
                &user.token,
                "upgrade",
                &json!({"payload": {"n": n}, "key": key}),
            )
            .await;
        published.push(job["id"].as_str().unwrap().to_string());
    }
    // One job finished before the upgrade.
    let claim = post(
        &old,
        &user.token,
        "/v1/queues/upgrade/claim",
        json!({"max_jobs": 1, "wait_ms": 0}),
    )
    .await;
    let first = body(claim).await["jobs"][0].clone();
    assert_eq!(first["payload"], json!({"n": 0}));
    let acked = ack(&old, &user.token, &first).await;
    assert_eq!(acked.status(), 200);

    let engine = Engine::connect(&old.settings.redis).unwrap();
    let queue = QueueRef::new(&user.id, QueueName::parse("upgrade").unwrap());
    let k = engine.queue_keys(&queue);
    let (meta, bodies, pending, live) = (&k[0], &k[2], &k[7], &k[15]);
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let rewritten: u64 = redis::cmd("EVAL")
        .arg(TO_PREVIOUS_LAYOUT)
        .arg(4)
        .arg(meta)
        .arg(&k[1])
        .arg(bodies)
        .arg(pending)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(rewritten, 6);

    // The lease reaper of the new version may meet the queue before any
    // process loads it: its trim of the finished job (retention 1 s) takes
    // the old payload too, and the old index becomes the count.
    let hlen = |key: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("HLEN")
                .arg(key)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    eventually(Duration::from_secs(10), "finished job trimmed", || async {
        engine.recover(&queue, 100).await.unwrap();
        (hlen(k[1].clone()).await == 5).then_some(())
    })
    .await;
    assert_eq!(
        hlen(bodies.clone()).await,
        5,
        "its old payload went with it"
    );
    let count: Option<i64> = redis::cmd("HGET")
        .arg(meta)
        .arg("pending")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    assert_eq!(count, Some(5), "the old index counted");

    // The new version starts on that data.
    let settings = old.settings.clone();
    drop(old);
    let app = spawn_app_with(|s| *s = settings).await;
    let unstarted = app.job(&user.token, &published[5]).await;
    assert_eq!(
        unstarted["payload"],
        json!({"n": 5}),
        "payload read from the old place"
    );
    let mut seen: Vec<(String, Value)> = Vec::new();
    for _ in 0..10 {
        let claim = post(
            &app,
            &user.token,
            "/v1/queues/upgrade/claim",
            json!({"max_jobs": 10, "wait_ms": 0}),
        )
        .await;
        assert_eq!(claim.status(), 200);
        let jobs = body(claim).await["jobs"].as_array().unwrap().clone();
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            assert_eq!(ack(&app, &user.token, &job).await.status(), 200);
            let id = job["id"].as_str().unwrap().to_string();
            seen.push((id, job["payload"].clone()));
        }
    }
    let mut expected: Vec<(String, Value)> = (1..6)
        .map(|n| (published[n].clone(), json!({ "n": n })))
        .collect();
    let mut got = seen.clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected, "each remaining job once, with its payload");
    for lane in 0..2 {
        let order: Vec<i64> = seen
            .iter()
            .map(|(_, p)| p["n"].as_i64().unwrap())
            .filter(|n| n % 2 == lane)
            .collect();
        assert!(order.is_sorted(), "lane {lane} out of order: {order:?}");
    }

    // Counted, not indexed: nothing unfinished, the old index gone, the
    // queue out of the live set, the old payloads trimmed with their jobs.
    let mut c = conn.clone();
    let count: Option<i64> = redis::cmd("HGET")
        .arg(meta)
        .arg("pending")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(count, Some(0));
    let index: u64 = redis::cmd("EXISTS")
        .arg(pending)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(index, 0);
    let in_live: Option<f64> = redis::cmd("ZSCORE")
        .arg(live)
        .arg(queue.tag())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(in_live, None);
    eventually(Duration::from_secs(15), "old payloads trimmed", || async {
        let left: u64 = redis::cmd("HLEN")
            .arg(bodies)
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_redis_out_of_memory_refuses_publishes_but_still_answers_reads() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "full", json!({})).await;
    let job = app
        .publish_ok(&user.token, "full", &json!({"payload": {"a": 1}}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let config = |name: &'static str, value: &'static str| {
        let mut conn = conn.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    config("maxmemory-policy", "noeviction").await;
    config("maxmemory", "1").await;

    let refused = app
        .publish(&user.token, "full", &json!({"payload": {"a": 2}}))
        .await;
    assert_eq!(refused.status(), 503, "a full Redis takes no job");
    let read = app
        .get_with_token(&format!("/v1/jobs/{id}"), &user.token)
        .await;
    assert_eq!(read.status(), 200, "a job is still readable");
    assert_eq!(body(read).await["payload"], json!({"a": 1}));
    let queue = app.get_with_token("/v1/queues/full", &user.token).await;
    assert_eq!(queue.status(), 200, "queue stats are still readable");
    let stats = body(queue).await;
    assert_eq!(stats["stats"]["waiting"], json!(1), "{stats}");

    config("maxmemory", "0").await;
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    app.publish_ok(&user.token, "full", &json!({"payload": {"a": 3}}))
        .await;
}
