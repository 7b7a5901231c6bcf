//! Push delivery: ordering per lane, retries, exhaustion, crash recovery,
//! timeouts, SSRF, tenancy, signatures and job metrics — against a real
//! receiver started inside each test.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use orderly::queue::engine::{ChainAck, Engine, EngineConf, Mode, NewJob, Published, Transition};
use orderly::queue::model::{JobId, JobState, QueueName, QueueRef};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{
    TestApp, body, error_body, eventually, own_engine, spawn_app, spawn_app_with,
};
use crate::receiver::{Receiver, Reply, Seen, seqs_by_lane};

const SETTLE: Duration = Duration::from_secs(60);

fn assert_strictly_increasing(lanes: &HashMap<String, Vec<u64>>) {
    for (lane, seqs) in lanes {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "lane {lane:?} out of order or duplicated: {seqs:?}"
        );
    }
}

/// Publishes `per_lane` jobs on each lane, lane by lane interleaved.
async fn publish_lanes(
    app: &TestApp,
    token: &str,
    queue: &str,
    lanes: &[&str],
    per_lane: usize,
) -> Vec<Value> {
    let mut jobs = Vec::new();
    for n in 0..per_lane {
        for lane in lanes {
            let job = json!({"payload": {"lane": lane, "n": n}, "key": lane});
            jobs.push(app.publish_ok(token, queue, &job).await);
        }
    }
    jobs
}

#[actix_web::test]
async fn lanes_are_delivered_in_seq_order_exactly_once_under_concurrent_publishers() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::ok();
    app.push_queue(&user.token, "orders", &receiver.url, json!({}))
        .await;
    let lanes = ["a", "b", "c", "d"];
    let publishers = (0..8).map(|p| {
        let (app, token) = (&app, user.token.clone());
        async move {
            let mut ids = Vec::new();
            for n in 0..250 {
                for lane in lanes {
                    let job = json!({"payload": {"p": p, "n": n}, "key": lane});
                    ids.push(
                        app.publish_ok(&token, "orders", &job).await["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    );
                }
            }
            ids
        }
    });
    let published: Vec<String> = futures_util::future::join_all(publishers)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(published.len(), 8 * 4 * 250);
    app.wait_for_completed(&user.token, "orders", published.len() as u64, SETTLE)
        .await;

    let seen = receiver.seen();
    let delivered: Vec<&str> = seen.iter().map(|s| s.job_id.as_str()).collect();
    let unique: HashSet<&str> = delivered.iter().copied().collect();
    assert_eq!(
        delivered.len(),
        published.len(),
        "some job was delivered twice or never"
    );
    assert_eq!(
        unique,
        published.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    assert_strictly_increasing(&seqs_by_lane(&seen));
    assert_eq!(
        receiver.max_open_per_lane(),
        1,
        "a lane had two deliveries in flight"
    );

    let completed = app.all_jobs(&user.token, "orders", Some("completed")).await;
    assert_eq!(completed.len(), published.len());
    for job in &completed {
        assert_eq!(
            job["result"]["got"], job["id"],
            "result is not the receiver's body"
        );
        assert_eq!(job["attempts"], 1);
    }
}

#[actix_web::test]
async fn a_failing_job_holds_its_lane_while_other_lanes_flow() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    // The second job of lane "a" fails twice with 503.
    let receiver = Receiver::start(|s: &Seen| {
        let fails = s.key == "a" && s.body == br#"{"n":1}"# && s.attempt <= 2;
        Reply::Status(if fails { 503 } else { 200 })
    });
    let backoff = json!({"backoff": {"initial_ms": 200, "max_ms": 400}});
    app.push_queue(&user.token, "q", &receiver.url, backoff)
        .await;
    let mut failing = String::new();
    for n in 0..3 {
        let job = app
            .publish_ok(&user.token, "q", &json!({"payload": {"n": n}, "key": "a"}))
            .await;
        if n == 1 {
            failing = job["id"].as_str().unwrap().to_owned();
        }
    }
    for n in 0..40 {
        app.publish_ok(&user.token, "q", &json!({"payload": {"n": n}, "key": "b"}))
            .await;
    }
    app.wait_for_completed(&user.token, "q", 43, SETTLE).await;

    let seen = receiver.seen();
    let attempts: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.job_id == failing)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(attempts.len(), 3, "the failing job should be tried 3 times");
    let (first, last) = (attempts[0], attempts[2]);
    // Nothing later in lane "a" started before the retried job succeeded.
    let failing_seq = seen[first].seq;
    for s in &seen[..last] {
        assert!(
            !(s.key == "a" && s.seq > failing_seq),
            "lane a ran ahead: {s:?}"
        );
    }
    // Lane "b" kept flowing while lane "a" waited.
    assert!(
        seen[first..last].iter().any(|s| s.key == "b"),
        "lane b did not flow during the retries"
    );
    assert_strictly_increasing(&seqs_by_lane(
        &seen
            .iter()
            .filter(|s| s.attempt == 1 || s.job_id != failing)
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let job = app.job(&user.token, &failing).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["last_error"], "receiver answered 503");

    assert_eq!(app.counter("orderly_jobs_published_total").await, 43.0);
    assert_eq!(app.counter("orderly_jobs_completed_total").await, 43.0);
    assert_eq!(app.counter("orderly_jobs_retried_total").await, 2.0);
    assert_eq!(app.counter("orderly_jobs_dead_total").await, 0.0);
}

#[actix_web::test]
async fn a_4xx_dead_letters_the_job_after_one_attempt_and_the_lane_continues() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver =
        Receiver::start(|s: &Seen| Reply::Status(if s.body == br#""bad""# { 400 } else { 200 }));
    app.push_queue(&user.token, "q", &receiver.url, json!({"max_attempts": 5}))
        .await;
    let first = app
        .publish_ok(&user.token, "q", &json!({"payload": "bad", "key": "k"}))
        .await;
    let second = app
        .publish_ok(&user.token, "q", &json!({"payload": "good", "key": "k"}))
        .await;
    app.wait_for_completed(&user.token, "q", 1, SETTLE).await;

    let dead = app.job(&user.token, first["id"].as_str().unwrap()).await;
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["last_error"], "receiver answered 400");
    assert_eq!(
        app.job(&user.token, second["id"].as_str().unwrap()).await["state"],
        "completed"
    );
    assert_eq!(app.queue(&user.token, "q").await["stats"]["dead"], 1);
    assert_eq!(app.counter("orderly_jobs_dead_total").await, 1.0);
    assert_eq!(app.counter("orderly_jobs_completed_total").await, 1.0);
}

#[actix_web::test]
async fn with_on_exhausted_block_the_lane_stops_at_the_exhausted_job() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver =
        Receiver::start(|s: &Seen| Reply::Status(if s.body == br#""bad""# { 400 } else { 200 }));
    app.push_queue(
        &user.token,
        "q",
        &receiver.url,
        json!({"on_exhausted": "block"}),
    )
    .await;
    let blocked = app
        .publish_ok(&user.token, "q", &json!({"payload": "bad", "key": "k"}))
        .await;
    let behind: Vec<Value> = vec![
        app.publish_ok(&user.token, "q", &json!({"payload": 1, "key": "k"}))
            .await,
        app.publish_ok(&user.token, "q", &json!({"payload": 2, "key": "k"}))
            .await,
    ];
    // Another lane published after them completes: the worker moved on.
    let other = app
        .publish_ok(
            &user.token,
            "q",
            &json!({"payload": "other", "key": "other"}),
        )
        .await;
    let other_id = other["id"].as_str().unwrap();
    eventually(SETTLE, "other lane completed", || async {
        (app.job(&user.token, other_id).await["state"] == "completed").then_some(())
    })
    .await;
    let blocked_id = blocked["id"].as_str().unwrap();
    eventually(SETTLE, "job blocked", || async {
        (app.job(&user.token, blocked_id).await["state"] == "blocked").then_some(())
    })
    .await;
    for job in &behind {
        let job = app.job(&user.token, job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "queued");
        assert_eq!(job["attempts"], 0);
    }
    // Lanes are independent: the two deliveries may come in either order.
    let mut delivered: Vec<String> = receiver
        .seen()
        .iter()
        .map(|s| String::from_utf8(s.body.clone()).unwrap())
        .collect();
    delivered.sort();
    assert_eq!(delivered, vec!["\"bad\"", "\"other\""]);
    let stats = app.queue(&user.token, "q").await["stats"].clone();
    assert_eq!(stats["blocked"], 1);
    assert_eq!(stats["waiting"], 2);
}

#[actix_web::test]
async fn the_worker_restarts_after_a_crash_and_loses_no_job() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::start(|_| Reply::Hang(Duration::from_millis(5)));
    app.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let jobs = publish_lanes(&app, &user.token, "q", &["a", "b", "c", "d"], 50).await;
    eventually(SETTLE, "some deliveries", || async {
        (receiver.seen().len() >= 20).then_some(())
    })
    .await;
    app.worker
        .as_ref()
        .unwrap()
        .send(orderly::queue::worker::Crash)
        .await
        .unwrap();
    app.wait_for_completed(&user.token, "q", jobs.len() as u64, SETTLE)
        .await;

    assert_eq!(app.counter("orderly_worker_restarts_total").await, 1.0);
    let seen = receiver.seen();
    let delivered: HashSet<&str> = seen.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(delivered.len(), jobs.len(), "a job was never delivered");
    // Redeliveries (of jobs in flight at the crash) happen before anything later in their lane.
    for (lane, seqs) in seqs_by_lane(&seen) {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "lane {lane} out of order: {seqs:?}"
        );
    }
    let redelivered = seen.len() - delivered.len();
    assert!(
        redelivered <= app.settings.worker.concurrency,
        "{redelivered} redeliveries"
    );
}

#[actix_web::test]
async fn a_delivery_that_times_out_is_retried_at_the_head_of_its_lane() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::start(|s: &Seen| {
        if s.body == br#""slow""# && s.attempt == 1 {
            Reply::Hang(Duration::from_secs(3))
        } else {
            Reply::Status(200)
        }
    });
    let settings = json!({"delivery": {"mode": "push", "url": receiver.url, "timeout_ms": 300}});
    app.push_queue(&user.token, "q", &receiver.url, settings)
        .await;
    let slow = app
        .publish_ok(&user.token, "q", &json!({"payload": "slow", "key": "k"}))
        .await;
    app.publish_ok(&user.token, "q", &json!({"payload": "next", "key": "k"}))
        .await;
    app.wait_for_completed(&user.token, "q", 2, SETTLE).await;

    let order: Vec<(Value, u32)> = receiver
        .seen()
        .iter()
        .map(|s| (serde_json::from_slice(&s.body).unwrap(), s.attempt))
        .collect();
    assert_eq!(
        order,
        vec![(json!("slow"), 1), (json!("slow"), 2), (json!("next"), 1)]
    );
    let job = app.job(&user.token, slow["id"].as_str().unwrap()).await;
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["last_error"], "delivery timed out");
}

#[actix_web::test]
async fn loopback_push_urls_are_refused_unless_private_targets_are_allowed() {
    let strict = spawn_app_with(|s| s.delivery.allow_private_targets = false).await;
    let user = strict.signed_up_user().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/",
        "http://[::1]/",
        "http://169.254.169.254/latest",
    ] {
        let settings = json!({"delivery": {"mode": "push", "url": url}});
        let response = strict.put_queue(&user.token, "q", &settings).await;
        let error = error_body(response, 422, "validation_failed").await;
        assert!(
            error["fields"]["delivery.url"].is_string(),
            "{url}: {error}"
        );
    }
    let relaxed = spawn_app().await;
    let user = relaxed.signed_up_user().await;
    let settings = json!({"delivery": {"mode": "push", "url": "http://127.0.0.1:9/hook"}});
    assert_eq!(
        relaxed
            .put_queue(&user.token, "q", &settings)
            .await
            .status(),
        201
    );
}

#[actix_web::test]
async fn another_users_job_is_not_found_and_their_queue_name_is_a_different_queue() {
    let app = spawn_app().await;
    let ann = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let job = app
        .publish_ok(&ann.token, "shared", &json!({"payload": 1}))
        .await;
    let id = job["id"].as_str().unwrap();
    error_body(
        app.get_with_token(&format!("/v1/jobs/{id}"), &bob.token)
            .await,
        404,
        "not_found",
    )
    .await;
    let cancel = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/jobs/{id}"),
            &bob.token,
            None,
        )
        .await;
    error_body(cancel, 404, "not_found").await;
    assert_eq!(app.job(&ann.token, id).await["state"], "queued");

    let bobs = app
        .publish_ok(&bob.token, "shared", &json!({"payload": 2}))
        .await;
    assert_eq!(bobs["seq"], 1, "bob's queue has its own sequence");
    assert_ne!(bobs["id"], job["id"]);
    assert_eq!(app.queue(&ann.token, "shared").await["stats"]["waiting"], 1);
    assert_eq!(app.queue(&bob.token, "shared").await["stats"]["waiting"], 1);
    let bob_list = app.all_jobs(&bob.token, "shared", None).await;
    assert_eq!(bob_list.len(), 1);
    assert_eq!(bob_list[0]["id"], bobs["id"]);
}

fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header.split_once(",v1=") else {
        return false;
    };
    let t = t.trim_start_matches("t=");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::decode(v1).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
}

/// Concurrent PUTs that create a push queue create it once: one `201` with
/// the signing secret the queue keeps, `200` without one for the others
/// (each creator used to get `201` and its own secret, one of them real).
#[actix_web::test]
async fn concurrent_puts_create_a_push_queue_once_with_one_secret() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let settings = json!({"delivery": {"mode": "push", "url": "http://127.0.0.1:9/hook"}});
    let puts = (0..12).map(|_| app.put_queue(&user.token, "hooks", &settings));
    let mut created = Vec::new();
    for response in futures_util::future::join_all(puts).await {
        let status = response.status().as_u16();
        let view = body(response).await;
        match status {
            201 => created.push(view["signing_secret"].as_str().unwrap().to_owned()),
            200 => assert!(view.get("signing_secret").is_none(), "{view}"),
            other => panic!("PUT answered {other}: {view}"),
        }
    }
    assert_eq!(created.len(), 1, "one creation, one secret: {created:?}");
    let stored = app
        .db
        .collection::<mongodb::bson::Document>("queues")
        .find_one(mongodb::bson::doc! {"name": "hooks"})
        .await
        .unwrap()
        .expect("the queue is stored");
    assert_eq!(stored.get_str("signing_secret").unwrap(), created[0]);
}

#[actix_web::test]
async fn the_signature_header_verifies_with_the_queues_signing_secret() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::ok();
    let queue = app
        .push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let secret = queue["signing_secret"]
        .as_str()
        .expect("secret shown at creation")
        .to_owned();
    assert!(
        queue["signing_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let payload = json!({"amount": 42, "note": "ünïcode"});
    let job = app
        .publish_ok(&user.token, "q", &json!({"payload": payload, "key": "k"}))
        .await;
    app.wait_for_completed(&user.token, "q", 1, SETTLE).await;

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.job_id, job["id"].as_str().unwrap());
    assert_eq!(
        (s.queue.as_str(), s.key.as_str(), s.seq, s.attempt),
        ("q", "k", 1, 1)
    );
    assert_eq!(serde_json::from_slice::<Value>(&s.body).unwrap(), payload);
    assert!(
        verify(&secret, &s.signature, &s.body),
        "signature does not verify"
    );
    let mut tampered = s.body.clone();
    tampered[2] ^= 1;
    assert!(
        !verify(&secret, &s.signature, &tampered),
        "tampered body verified"
    );
    assert!(!verify("whsec_wrong", &s.signature, &s.body));
    // The secret is shown once: an update does not repeat it.
    let again = app
        .put_queue(
            &user.token,
            "q",
            &json!({"delivery": {"mode": "push", "url": receiver.url}}),
        )
        .await;
    assert_eq!(again.status(), 200);
    assert!(body(again).await.get("signing_secret").is_none());
}

#[actix_web::test]
async fn a_paused_queue_accepts_jobs_but_starts_none_until_resumed() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::ok();
    app.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let pause = app.post("/v1/queues/q/pause", &user.token, None).await;
    assert_eq!(body(pause).await["paused"], true);
    app.publish_ok(&user.token, "q", &json!({"payload": 1, "key": "k"}))
        .await;
    // A second, unpaused queue published after it is delivered first.
    app.push_queue(&user.token, "other", &receiver.url, json!({}))
        .await;
    app.publish_ok(&user.token, "other", &json!({"payload": 2}))
        .await;
    app.wait_for_completed(&user.token, "other", 1, SETTLE)
        .await;
    assert_eq!(receiver.seen().len(), 1);
    assert_eq!(app.queue(&user.token, "q").await["stats"]["waiting"], 1);

    let resume = app.post("/v1/queues/q/resume", &user.token, None).await;
    assert_eq!(body(resume).await["paused"], false);
    app.wait_for_completed(&user.token, "q", 1, SETTLE).await;
    assert_eq!(receiver.seen().len(), 2);
}

/// Publishes one job per key, in order, straight through the engine.
async fn publish_keys(engine: &Engine, queue: &QueueRef, keys: &[&str]) -> Vec<String> {
    publish_keys_with(engine, queue, keys, 3).await
}

/// [`publish_keys`] with `max_attempts` per job.
pub(crate) async fn publish_keys_with(
    engine: &Engine,
    queue: &QueueRef,
    keys: &[&str],
    max_attempts: u32,
) -> Vec<String> {
    let jobs: Vec<NewJob> = keys
        .iter()
        .map(|key| NewJob {
            queue: queue.clone(),
            id: JobId::generate(&queue.name).id,
            key: (*key).to_owned(),
            payload: "1".to_owned(),
            delay_ms: 0,
            max_attempts,
            idempotency_key: None,
            priority: 0,
        })
        .collect();
    let published = engine.publish(&jobs, 60).await;
    assert!(
        published.iter().all(|p| matches!(p, Published::New { .. })),
        "{published:?}"
    );
    jobs.into_iter().map(|j| j.id).collect()
}

#[actix_web::test]
async fn an_ack_leases_the_lanes_next_job_only_when_no_other_push_lane_waits() {
    let app = spawn_app().await;
    let engine = own_engine(&app);
    let queue = QueueRef::new("owner", QueueName::parse("q").unwrap());
    let conf = EngineConf {
        push: true,
        paused: false,
        on_exhausted: "dead_letter",
        retention_s: 60,
        rate_limit: None,
        max_active: None,
        version: 1,
    };
    engine.configure(&queue, &conf).await.unwrap();
    let ids = publish_keys(&engine, &queue, &["a", "a", "b"]).await;

    // Lane b waits while a's first job runs: a's next job goes back to the
    // oldest-ready order instead of being kept by the ack.
    let first = engine
        .claim(&queue, 1, 60_000, Mode::Push, None)
        .await
        .unwrap()
        .jobs;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].job.id, ids[0]);
    let acked = engine
        .ack_and_lease_next(&queue, &ids[0], &first[0].lease, "null", 60_000, "chain")
        .await
        .unwrap();
    assert!(acked.completed);
    assert!(acked.next.is_none());
    assert_eq!(acked.next_due_in_ms, Some(0));
    let claimed: HashSet<String> = engine
        .claim(&queue, 10, 60_000, Mode::Push, None)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|c| c.job.id)
        .collect();
    assert_eq!(claimed, HashSet::from([ids[1].clone(), ids[2].clone()]));

    // A lane alone: its ack leases the next job, which is then the lane's one
    // lease, fenced like any other.
    let more = publish_keys(&engine, &queue, &["c", "c", "c"]).await;
    let head = engine
        .claim(&queue, 1, 60_000, Mode::Push, None)
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(head.job.id, more[0]);
    let acked = engine
        .ack_and_lease_next(&queue, &more[0], &head.lease, "null", 60_000, "chain")
        .await
        .unwrap();
    let next = acked
        .next
        .expect("the lane's next job is leased by the ack");
    assert_eq!(next.job.id, more[1]);
    assert_eq!(next.job.attempts, 1);
    assert!(
        engine
            .claim(&queue, 10, 60_000, Mode::Push, None)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    // A repeat of the ack (its reply lost) answers the job the first run
    // leased, under the same lease; with another chain token, nothing new.
    let repeat = engine
        .ack_and_lease_next(&queue, &more[0], &head.lease, "null", 60_000, "chain")
        .await
        .unwrap();
    assert!(repeat.completed);
    let again = repeat.next.expect("the repeat answers the chained lease");
    assert_eq!((&again.job.id, &again.lease), (&next.job.id, &next.lease));
    let other = engine
        .ack_and_lease_next(&queue, &more[0], &head.lease, "null", 60_000, "other")
        .await
        .unwrap();
    assert!(other.completed && other.next.is_none());
    let acked = engine
        .ack_and_lease_next(&queue, &more[1], &next.lease, "null", 60_000, "chain")
        .await
        .unwrap();
    assert_eq!(acked.next.map(|c| c.job.id), Some(more[2].clone()));
    let done = engine.get(&queue, &more[1]).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    let stats = engine.stats(&queue).await.unwrap();
    assert_eq!((stats.completed, stats.active), (3, 3));
}

#[actix_web::test]
async fn a_delayed_push_job_starts_when_it_is_due_not_at_the_next_poll() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::ok();
    app.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    // Warm-up: a just-started process may not have subscribed to its wake
    // channels yet (on a cluster that takes a moment); this is about wakes,
    // not about start-up.
    app.publish_ok(&user.token, "q", &json!({"payload": "warm-up", "key": "w"}))
        .await;
    eventually(Duration::from_secs(5), "warm-up delivered", || async {
        (!receiver.seen().is_empty()).then_some(())
    })
    .await;
    // Three rounds: a start that merely coincided with the 1 s fallback poll
    // cannot pass all three.
    for round in 1..=3u64 {
        let published_at = Instant::now();
        app.publish_ok(
            &user.token,
            "q",
            &json!({"payload": round, "key": format!("k{round}"), "delay_ms": 400}),
        )
        .await;
        let started = eventually(Duration::from_secs(5), "delayed job delivered", || async {
            (receiver.seen().len() as u64 > round).then(|| published_at.elapsed())
        })
        .await;
        assert!(
            started >= Duration::from_millis(400) && started < Duration::from_millis(700),
            "round {round}: delivered {started:?} after a 400 ms delay"
        );
    }
}

/// The worker's group commit acks many deliveries in one `chain` run: each
/// item gets its own answer in order — completed with its lane's next job
/// leased, a stale lease refused without touching anything, a repeat of an
/// earlier item answering the job its first run leased — and every lane
/// keeps its order.
#[actix_web::test]
async fn one_chain_run_acks_many_lanes_and_answers_each_item_on_its_own() {
    let app = spawn_app().await;
    let engine = own_engine(&app);
    let queue = QueueRef::new("owner", QueueName::parse("many").unwrap());
    let conf = EngineConf {
        push: true,
        paused: false,
        on_exhausted: "dead_letter",
        retention_s: 60,
        rate_limit: None,
        max_active: None,
        version: 1,
    };
    engine.configure(&queue, &conf).await.unwrap();
    let ids = publish_keys(&engine, &queue, &["a", "b", "c", "a", "b", "c"]).await;
    let heads = engine
        .claim(&queue, 3, 60_000, Mode::Push, None)
        .await
        .unwrap()
        .jobs;
    assert_eq!(heads.len(), 3);
    let ack = |c: &orderly::queue::engine::Claimed, token: &str| ChainAck {
        id: c.job.id.clone(),
        lease: c.lease.clone(),
        result: "true".into(),
        chain_token: token.into(),
    };
    // Lane a's head acked, lane b's head under a forged lease, lane c's head.
    let mut stale = ack(&heads[1], "tb");
    stale.lease.token = "not-the-token".into();
    let run = vec![ack(&heads[0], "ta"), stale, ack(&heads[2], "tc")];
    let answers = engine
        .ack_and_lease_next_many(&queue, &run, 60_000)
        .await
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert!(answers[0].completed && !answers[1].completed && answers[2].completed);
    let next_a = answers[0].next.as_ref().expect("lane a's next job");
    let next_c = answers[2].next.as_ref().expect("lane c's next job");
    assert!(answers[1].next.is_none());
    assert_eq!(next_a.job.key, heads[0].job.key);
    assert_eq!(next_c.job.key, heads[2].job.key);
    assert!(next_a.job.seq > heads[0].job.seq && next_c.job.seq > heads[2].job.seq);
    // Lane b's head is untouched: still leased to its holder.
    let b = engine.get(&queue, &heads[1].job.id).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Active);

    // A run repeating lane a's item (its reply lost) beside lane b's real ack.
    let again = vec![ack(&heads[0], "ta"), ack(&heads[1], "tb")];
    let answers = engine
        .ack_and_lease_next_many(&queue, &again, 60_000)
        .await
        .unwrap();
    assert!(answers[0].completed && answers[1].completed);
    let repeated = answers[0].next.as_ref().expect("the first run's lease");
    assert_eq!(
        (&repeated.job.id, &repeated.lease),
        (&next_a.job.id, &next_a.lease)
    );
    let next_b = answers[1].next.as_ref().expect("lane b's next job");
    assert!(next_b.job.seq > heads[1].job.seq);
    let stats = engine.stats(&queue).await.unwrap();
    assert_eq!((stats.completed, stats.active), (3, 3));
    // Each next job is its lane's second job, in publish order.
    let second =
        |key: &str| ids[3 + ["a", "b", "c"].iter().position(|k| *k == key).unwrap()].clone();
    assert_eq!(next_a.job.id, second(&next_a.job.key));
    assert_eq!(next_b.job.id, second(&next_b.job.key));
    assert_eq!(next_c.job.id, second(&next_c.job.key));
}

/// An expired push lease is Orderly's own loss — the worker extends a lease
/// while its delivery runs and reports every outcome, so the lease outlives
/// the delivery only when the process died (maybe before sending the job: a
/// lane's next job is leased by the previous one's ack). Its job goes back to
/// the head of its lane with the attempt counted and is delivered again, also
/// on its last attempt; an expired pull lease on the last attempt exhausts the
/// job (its consumer had it), as before.
#[actix_web::test]
async fn a_push_job_whose_lease_expired_unsent_is_delivered_not_dead_lettered() {
    let app = spawn_app().await;
    let engine = own_engine(&app);
    for push in [true, false] {
        let name = if push { "push" } else { "pull" };
        let queue = QueueRef::new("owner", QueueName::parse(name).unwrap());
        let conf = EngineConf {
            push,
            paused: false,
            on_exhausted: "dead_letter",
            retention_s: 60,
            rate_limit: None,
            max_active: None,
            version: 1,
        };
        engine.configure(&queue, &conf).await.unwrap();
        let mode = if push { Mode::Push } else { Mode::Pull };
        let ids = publish_keys_with(&engine, &queue, &["a", "a"], 1).await;
        let first = engine
            .claim(&queue, 1, 60_000, mode, None)
            .await
            .unwrap()
            .jobs
            .remove(0);
        // The holder leases the lane's second job with a short lease — push:
        // the first job's ack leases it; pull: a claim after the ack — and
        // dies before it reports anything.
        if push {
            let acked = engine
                .ack_and_lease_next(&queue, &ids[0], &first.lease, "null", 300, "chain")
                .await
                .unwrap();
            assert_eq!(acked.next.expect("chained").job.id, ids[1]);
        } else {
            let acked = engine
                .ack(&queue, &ids[0], &first.lease, "null")
                .await
                .unwrap();
            assert!(matches!(acked, Transition::Done(_)), "{acked:?}");
            let second = engine.claim(&queue, 1, 300, mode, None).await.unwrap();
            assert_eq!(second.jobs[0].job.id, ids[1]);
        }
        eventually(Duration::from_secs(5), "the short lease expires", || {
            let (engine, queue) = (&engine, &queue);
            async move { (engine.recover(queue, 10).await.unwrap().len() == 1).then_some(()) }
        })
        .await;
        let job = engine.get(&queue, &ids[1]).await.unwrap().unwrap();
        assert_eq!(job.attempts, 1, "{name}: the lost lease counts");
        if !push {
            assert_eq!(job.state, JobState::Dead, "pull: its last attempt expired");
            continue;
        }
        assert_eq!(job.state, JobState::Queued, "push: back at its lane's head");
        let again = engine
            .claim(&queue, 1, 60_000, mode, None)
            .await
            .unwrap()
            .jobs
            .remove(0);
        assert_eq!(again.job.id, ids[1], "push: delivered again");
        assert_eq!(again.job.attempts, 2);
    }
}
