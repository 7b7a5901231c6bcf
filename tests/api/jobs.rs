//! The job API: read with long-poll, list with filters and pagination, stats,
//! and recovery of a crashed holder's expired lease.

use std::time::{Duration, Instant};

use orderly::queue::engine::Engine;
use orderly::queue::model::{QueueName, QueueRef};
use serde_json::json;

use crate::helpers::{
    TestRedis, body, error_body, eventually, pull_conf, spawn_app, spawn_app_with,
};
use crate::receiver::{Receiver, Reply};

#[actix_web::test]
async fn a_published_job_reads_back_as_queued_with_its_payload_verbatim() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let payload =
        json!({"nested": {"list": [1, 2.5, "x", null, true]}, "big": 12345678901234567u64});
    let job = app
        .publish_ok(&user.token, "q", &json!({"payload": payload, "key": "k"}))
        .await;
    assert_eq!(job["state"], "queued");
    assert_eq!(job["seq"], 1);
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["max_attempts"], app.settings.queues.max_attempts);
    assert_eq!(job["payload"], payload);
    let read = app.job(&user.token, job["id"].as_str().unwrap()).await;
    assert_eq!(read, job);
    // The implicitly created queue is a pull queue with default settings.
    let queue = app.queue(&user.token, "q").await;
    assert_eq!(queue["delivery"]["mode"], "pull");
    assert_eq!(queue["stats"]["waiting"], 1);
}

#[actix_web::test]
async fn get_with_wait_ms_returns_as_soon_as_the_job_is_terminal() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::start(|_| Reply::Hang(Duration::from_millis(300)));
    app.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let job = app
        .publish_ok(&user.token, "q", &json!({"payload": 1}))
        .await;
    let started = Instant::now();
    let path = format!("/v1/jobs/{}?wait_ms=10000", job["id"].as_str().unwrap());
    let done = body(app.get_with_token(&path, &user.token).await).await;
    assert_eq!(done["state"], "completed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A job that stays queued returns after about wait_ms.
    let waiting = app
        .publish_ok(&user.token, "idle", &json!({"payload": 1}))
        .await;
    let started = Instant::now();
    let path = format!("/v1/jobs/{}?wait_ms=300", waiting["id"].as_str().unwrap());
    let still = body(app.get_with_token(&path, &user.token).await).await;
    assert_eq!(still["state"], "queued");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let too_long = format!("/v1/jobs/{}?wait_ms=30001", waiting["id"].as_str().unwrap());
    error_body(
        app.get_with_token(&too_long, &user.token).await,
        422,
        "validation_failed",
    )
    .await;
}

#[actix_web::test]
async fn listing_filters_by_state_and_key_and_pages_in_seq_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    for n in 0..25 {
        let key = if n % 2 == 0 { "even" } else { "odd" };
        app.publish_ok(&user.token, "q", &json!({"payload": n, "key": key}))
            .await;
    }
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = body(
            app.get_with_token(
                &format!("/v1/queues/q/jobs?limit=10&after={after}"),
                &user.token,
            )
            .await,
        )
        .await;
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 10);
        seqs.extend(jobs.iter().map(|j| j["seq"].as_u64().unwrap()));
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seqs, (1..=25).collect::<Vec<u64>>());
    let odd = body(
        app.get_with_token("/v1/queues/q/jobs?key=odd", &user.token)
            .await,
    )
    .await;
    let odd: Vec<u64> = odd["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["payload"].as_u64().unwrap())
        .collect();
    assert_eq!(odd, (0..25).filter(|n| n % 2 == 1).collect::<Vec<u64>>());
    let queued = app.all_jobs(&user.token, "q", Some("queued")).await;
    assert_eq!(queued.len(), 25);
    assert!(
        app.all_jobs(&user.token, "q", Some("completed"))
            .await
            .is_empty()
    );
    let bad = app
        .get_with_token("/v1/queues/q/jobs?state=nope", &user.token)
        .await;
    error_body(bad, 422, "validation_failed").await;
    let bad = app
        .get_with_token("/v1/queues/q/jobs?limit=0", &user.token)
        .await;
    error_body(bad, 422, "validation_failed").await;
}

#[actix_web::test]
async fn an_expired_lease_of_a_crashed_holder_goes_back_to_the_head_of_its_lane() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let first = app
        .publish_ok(&user.token, "q", &json!({"payload": "first", "key": "k"}))
        .await;
    app.publish_ok(&user.token, "q", &json!({"payload": "second", "key": "k"}))
        .await;
    // Another process claims the head with a short lease and dies holding it.
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let queue = QueueRef::new(&user.id, QueueName::parse("q").unwrap());
    let claimed = engine.claim_queue(&queue, 1, 1_000).await.unwrap();
    assert_eq!(claimed.jobs.len(), 1);
    assert_eq!(claimed.jobs[0].job.id, first["id"].as_str().unwrap());
    // The queue turns into a push queue; the worker must not skip the leased head.
    let receiver = Receiver::ok();
    let settings = json!({"delivery": {"mode": "push", "url": receiver.url}});
    assert_eq!(
        app.put_queue(&user.token, "q", &settings).await.status(),
        200
    );
    app.wait_for_completed(&user.token, "q", 2, Duration::from_secs(30))
        .await;
    let order: Vec<(String, u32)> = receiver
        .seen()
        .iter()
        .map(|s| (String::from_utf8(s.body.clone()).unwrap(), s.attempt))
        .collect();
    assert_eq!(
        order,
        vec![(r#""first""#.to_owned(), 2), (r#""second""#.to_owned(), 1)]
    );
    let job = app.job(&user.token, first["id"].as_str().unwrap()).await;
    assert_eq!(job["attempts"], 2);
    // The crashed holder's late ack is refused and changes nothing.
    let late = engine
        .ack(
            &queue,
            &claimed.jobs[0].job.id,
            &claimed.jobs[0].lease,
            "\"late\"",
        )
        .await
        .unwrap();
    assert!(matches!(
        late,
        orderly::queue::engine::Transition::LeaseLost(_)
    ));
    eventually(Duration::from_secs(5), "result kept", || async {
        let job = app.job(&user.token, first["id"].as_str().unwrap()).await;
        (job["result"]["got"] == first["id"]).then_some(())
    })
    .await;
}

/// Every queue setting is optional: a `PUT` without a body (or with `null`)
/// takes every default, and a partial `backoff` the defaults of the rest.
#[actix_web::test]
async fn a_queue_put_without_a_body_or_with_a_partial_backoff_takes_the_defaults() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let bare = app
        .client
        .put(app.url("/v1/queues/bare"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 201);
    let bare = body(bare).await;
    assert_eq!(bare["max_attempts"], app.settings.queues.max_attempts);
    assert_eq!(bare["lease_ms"], app.settings.queues.lease_ms);
    assert_eq!(bare["delivery"]["mode"], "pull");
    let null = app
        .client
        .put(app.url("/v1/queues/bare"))
        .bearer_auth(&user.token)
        .header("Content-Type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    assert_eq!(null.status(), 200);

    for (backoff, expected) in [
        (
            json!({"initial_ms": 5000}),
            json!({"initial_ms": 5000, "max_ms": 300000}),
        ),
        (
            json!({"max_ms": 2000}),
            json!({"initial_ms": 1000, "max_ms": 2000}),
        ),
    ] {
        let partial = app
            .put_queue(&user.token, "partial", &json!({"backoff": backoff}))
            .await;
        assert!(partial.status().is_success(), "{backoff}");
        assert_eq!(body(partial).await["backoff"], expected, "{backoff}");
    }
    // A body that is there must still be a JSON object of known fields.
    let response = app
        .put_queue(&user.token, "partial", &json!({"backoff": {"initial": 1}}))
        .await;
    error_body(response, 422, "validation_failed").await;
}

#[actix_web::test]
async fn queue_definitions_can_be_listed_updated_and_deleted_with_their_jobs() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let created = app
        .put_queue(&user.token, "b-queue", &json!({"max_attempts": 3}))
        .await;
    assert_eq!(created.status(), 201);
    let created = body(created).await;
    assert_eq!(created["max_attempts"], 3);
    assert_eq!(created["on_exhausted"], "dead_letter");
    assert!(
        created.get("signing_secret").is_none(),
        "pull queues have no secret"
    );
    let updated = app
        .put_queue(&user.token, "b-queue", &json!({"max_attempts": 7}))
        .await;
    assert_eq!(updated.status(), 200);
    app.publish_ok(&user.token, "a-queue", &json!({"payload": 1}))
        .await;
    let listed = body(app.get_with_token("/v1/queues", &user.token).await).await;
    let names: Vec<&str> = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a-queue", "b-queue"]);
    for (settings, field) in [
        (json!({"max_attempts": 0}), "max_attempts"),
        (json!({"delivery": {"mode": "push"}}), "delivery.url"),
        (
            json!({"delivery": {"mode": "push", "url": "ftp://x.example/"}}),
            "delivery.url",
        ),
        (
            json!({"delivery": {"mode": "carrier-pigeon"}}),
            "delivery.mode",
        ),
        (json!({"lease_ms": 5}), "lease_ms"),
        (json!({"on_exhausted": "explode"}), "on_exhausted"),
    ] {
        let response = app.put_queue(&user.token, "c", &settings).await;
        let error = error_body(response, 422, "validation_failed").await;
        assert!(error["fields"].get(field).is_some(), "{settings}: {error}");
    }
    let bad_name = app.put_queue(&user.token, "Bad%20Name", &json!({})).await;
    error_body(bad_name, 422, "validation_failed").await;

    let delete = app
        .call(
            reqwest::Method::DELETE,
            "/v1/queues/a-queue",
            &user.token,
            None,
        )
        .await;
    assert_eq!(delete.status(), 204);
    error_body(
        app.get_with_token("/v1/queues/a-queue", &user.token).await,
        404,
        "not_found",
    )
    .await;
    let again = app
        .call(
            reqwest::Method::DELETE,
            "/v1/queues/a-queue",
            &user.token,
            None,
        )
        .await;
    error_body(again, 404, "not_found").await;
    // A new queue of the same name starts empty.
    let fresh = app
        .publish_ok(&user.token, "a-queue", &json!({"payload": 2}))
        .await;
    assert_eq!(fresh["seq"], 1);
}

#[actix_web::test]
async fn one_publish_run_numbers_each_queues_new_jobs_contiguously_and_skips_duplicates() {
    use orderly::queue::engine::{NewJob, Published};
    use orderly::queue::model::JobId;
    let app = spawn_app().await;
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let q = QueueRef::new("owner", QueueName::parse("q").unwrap());
    let other = QueueRef::new("owner", QueueName::parse("other").unwrap());
    let job = |queue: &QueueRef, key: &str, idem: Option<&str>| NewJob {
        queue: queue.clone(),
        id: JobId::generate(&queue.name).id,
        key: key.to_owned(),
        payload: "1".to_owned(),
        delay_ms: 0,
        max_attempts: 3,
        idempotency_key: idem.map(str::to_owned),
        priority: 0,
    };
    let run = vec![
        job(&q, "a", Some("x")),
        job(&other, "a", None),
        job(&q, "b", None),
        job(&q, "a", Some("x")),
        job(&q, "a", None),
        job(&other, "a", None),
    ];
    for queue in [&q, &other] {
        engine.configure(queue, &pull_conf()).await.unwrap();
    }
    let published = engine.publish(&run, 60).await;
    let seqs: Vec<Option<u64>> = published
        .iter()
        .map(|p| match p {
            Published::New { seq, .. } => Some(*seq),
            other @ (Published::Unconfigured | Published::Failed { .. }) => {
                panic!("publish failed: {other:?}")
            }
            Published::Duplicate { original_id } => {
                assert_eq!(original_id, &run[0].id);
                None
            }
        })
        .collect();
    assert_eq!(
        seqs,
        vec![Some(1), Some(1), Some(2), None, Some(3), Some(2)]
    );
    // Lanes hold their jobs in seq order: q's lane a is run[0] then run[4].
    let mut order = Vec::new();
    for _ in 0..2 {
        let claimed = engine.claim_queue(&q, 10, 60_000).await.unwrap().jobs;
        let a = claimed.iter().find(|c| c.job.key == "a").unwrap();
        order.push(a.job.id.clone());
        engine.ack(&q, &a.job.id, &a.lease, "null").await.unwrap();
    }
    assert_eq!(order, vec![run[0].id.clone(), run[4].id.clone()]);
    let stats = engine.stats(&other).await.unwrap();
    assert_eq!(stats.pending, 2);
}

#[actix_web::test]
async fn with_wait_replicas_each_publish_waits_for_replication_before_202() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| {
        s.redis.url = redis.url.clone();
        s.redis.wait_replicas = 1;
        s.redis.wait_timeout_ms = 20;
    })
    .await;
    let user = app.signed_up_user().await;
    let before = redis.command_calls().await;
    for n in 0..3 {
        // No replica answers here: each publish waits its 20 ms, then is
        // accepted all the same (the job is in Redis), with a warning.
        app.publish_ok(&user.token, "q", &json!({ "payload": n }))
            .await;
    }
    let after = redis.command_calls().await;
    let waits = after.get("wait").copied().unwrap_or(0) - before.get("wait").copied().unwrap_or(0);
    assert_eq!(waits, 3, "one WAIT per publish: {after:?}");
    assert_eq!(app.queue(&user.token, "q").await["stats"]["waiting"], 3);
}

#[actix_web::test]
async fn get_with_wait_ms_waits_on_a_wake_not_by_polling_redis() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    let job = app
        .publish_ok(&user.token, "q", &json!({"payload": "waits"}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();

    let before = redis.command_calls().await;
    let started = Instant::now();
    let read = body(
        app.get_with_token(&format!("/v1/jobs/{id}?wait_ms=2000"), &user.token)
            .await,
    )
    .await;
    let waited = started.elapsed();
    let after = redis.command_calls().await;
    assert_eq!(read["state"], "queued");
    assert!(waited >= Duration::from_millis(2_000), "{waited:?}");
    let scripts = ["fcall", "evalsha", "eval"]
        .iter()
        .map(|name| {
            after.get(*name).copied().unwrap_or(0) - before.get(*name).copied().unwrap_or(0)
        })
        .sum::<u64>();
    // About one re-check a second plus the background loops; polling every
    // 25 ms would be 80 reads.
    assert!(
        scripts <= 14,
        "{scripts} script calls during a 2 s wait: {after:?}"
    );

    // A waiting read returns as soon as its job finishes (woken, not at the
    // next 1 s re-check): three times within 250 ms of the ack.
    for round in 0..3 {
        let queue = format!("round-{round}");
        let job = app
            .publish_ok(&user.token, &queue, &json!({"payload": round}))
            .await;
        let path = format!("/v1/jobs/{}?wait_ms=10000", job["id"].as_str().unwrap());
        let reader = {
            let (client, url, token) = (app.client.clone(), app.url(&path), user.token.clone());
            tokio::spawn(async move {
                let read: serde_json::Value = client
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                (read, Instant::now())
            })
        };
        // The read is waiting once the queue is watched; then ack.
        let claimed = eventually(Duration::from_secs(5), "job claimed", || async {
            let reply = body(
                app.call(
                    reqwest::Method::POST,
                    &format!("/v1/queues/{queue}/claim"),
                    &user.token,
                    Some(&json!({"max_jobs": 1})),
                )
                .await,
            )
            .await;
            reply["jobs"].as_array().and_then(|j| j.first().cloned())
        })
        .await;
        // The scenario: the job stays unfinished for a while, so the read
        // is waiting when it finishes (the outcome does not depend on it: a
        // read that had not started waiting would see `completed` at once).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let acked_at = Instant::now();
        let ack = app
            .call(
                reqwest::Method::POST,
                &format!("/v1/jobs/{}/ack", claimed["id"].as_str().unwrap()),
                &user.token,
                Some(&json!({"lease": claimed["lease"]})),
            )
            .await;
        assert_eq!(ack.status(), 200);
        let (read, returned_at) = reader.await.unwrap();
        assert_eq!(read["state"], "completed");
        let delay = returned_at.duration_since(acked_at);
        assert!(
            delay < Duration::from_millis(250),
            "round {round}: read returned {delay:?} after the ack"
        );
    }
}

/// `publish` packs its records by hand (`pack_fresh` in lib.lua); every
/// other script reads them with cmsgpack. Each record it writes must be
/// exactly what cmsgpack would have packed (so reading it gives back the
/// same values, and it costs the same memory), across every width class of
/// msgpack integers and strings: seqs around 2^7, 2^8, 2^16, 2^32 and near
/// 2^53, payloads and lane keys of 0 to 70,000 bytes, delayed or not, jobs
/// chained to the next of their lane in the same run or not.
#[actix_web::test]
async fn records_are_packed_as_cmsgpack_packs_them() {
    use orderly::queue::engine::{NewJob, Published};
    use orderly::queue::model::JobId;
    // One Redis in both runs of the suite: the test reads raw records from
    // the server its engine writes to.
    let app = spawn_app_with(|s| s.redis.cluster_nodes.clear()).await;
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let queue = QueueRef::new("owner", QueueName::parse("q").unwrap());
    engine.configure(&queue, &pull_conf()).await.unwrap();
    let keys = engine.queue_keys(&queue);
    let client = redis::Client::open(app.settings.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let text = |n: usize| format!("\"{}\"", "x".repeat(n.saturating_sub(2)));
    let lanes = ["", "k", &"l".repeat(31), &"m".repeat(32), &"n".repeat(300)];
    let payloads = [1, 31, 32, 255, 256, 65_536, 70_000];
    for start in [0u64, 120, 250, 65_530, 4_294_967_290, 9_007_199_254_740_000] {
        let _: () = redis::cmd("HSET")
            .arg(&keys[0])
            .arg("seq")
            .arg(start)
            .query_async(&mut conn)
            .await
            .unwrap();
        let run: Vec<NewJob> = (0..14usize)
            .map(|i| NewJob {
                queue: queue.clone(),
                id: JobId::generate(&queue.name).id,
                key: lanes[i % lanes.len()].to_owned(),
                payload: text(payloads[i % payloads.len()]),
                delay_ms: if i % 3 == 0 { 5_000 } else { 0 },
                max_attempts: [1, 127, 128, 300, 70_000][i % 5],
                idempotency_key: None,
                priority: 0,
            })
            .collect();
        let published = engine.publish(&run, 60).await;
        for (i, (job, outcome)) in run.iter().zip(&published).enumerate() {
            let Published::New { seq, .. } = outcome else {
                panic!("publish failed: {outcome:?}");
            };
            assert_eq!(*seq, start + 1 + i as u64);
            let raw: Vec<u8> = redis::cmd("HGET")
                .arg(&keys[1])
                .arg(&job.id)
                .query_async(&mut conn)
                .await
                .unwrap();
            let repacked: Vec<u8> = redis::cmd("EVAL")
                .arg("return cmsgpack.pack(cmsgpack.unpack(ARGV[1]))")
                .arg(0)
                .arg(&raw)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(
                raw == repacked,
                "record {i} of the run from seq {start} differs from cmsgpack's packing"
            );
            // And it reads back as the job published.
            let fields: Vec<redis::Value> = redis::cmd("EVAL")
                .arg(
                    "local r = { cmsgpack.unpack(ARGV[1]) } \
                     local f = function(v) return v and string.format('%.0f', v) or 'false' end \
                     return { #r, r[1], f(r[2]), r[3], r[4], r[5], r[6], \
                              f(r[9]), f(r[10]), r[15] or '', r[17] }",
                )
                .arg(0)
                .arg(&raw)
                .query_async(&mut conn)
                .await
                .unwrap();
            let s = |v: &redis::Value| -> String { redis::from_redis_value(v.clone()).unwrap() };
            let n = |v: &redis::Value| -> i64 { redis::from_redis_value(v.clone()).unwrap() };
            assert_eq!(n(&fields[0]), 17);
            assert_eq!(s(&fields[1]), job.key);
            let seq_text = s(&fields[2]);
            assert_eq!(
                seq_text.parse::<f64>().unwrap(),
                (start + 1 + i as u64) as f64,
                "seq of record {i} from {start}"
            );
            let delayed = job.delay_ms > 0;
            assert_eq!(s(&fields[3]), if delayed { "delayed" } else { "queued" });
            assert_eq!((n(&fields[4]), n(&fields[6])), (0, 0));
            assert_eq!(n(&fields[5]), i64::from(job.max_attempts));
            let created: f64 = s(&fields[7]).parse().unwrap();
            assert_eq!(s(&fields[8]) != "false", delayed);
            if delayed {
                let avail: f64 = s(&fields[8]).parse().unwrap();
                assert_eq!(avail, created + 5_000.0);
            }
            let next = run[i + 1..]
                .iter()
                .find(|later| later.key == job.key)
                .map(|later| later.id.clone())
                .unwrap_or_default();
            assert_eq!(s(&fields[9]), next, "next of record {i} in its lane");
            assert_eq!(s(&fields[10]), job.payload);
        }
    }
}

/// The leases and the lane index of a busy queue (one member per lease or
/// lane, changed for every job) are kept in Redis's skiplist encoding from
/// 32 members on (`keep_skiplist` in lib.lua), without the member that
/// converts them staying behind; smaller sets stay compact.
#[actix_web::test]
async fn busy_lease_and_lane_sets_are_kept_as_skiplists() {
    use orderly::queue::engine::{Mode, NewJob};
    use orderly::queue::model::JobId;
    // One Redis in both runs of the suite: the test reads raw keys.
    let app = spawn_app_with(|s| s.redis.cluster_nodes.clear()).await;
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let client = redis::Client::open(app.settings.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (name, lanes, encoding) in [("busy", 40usize, "skiplist"), ("small", 8, "listpack")] {
        let queue = QueueRef::new("owner", QueueName::parse(name).unwrap());
        engine.configure(&queue, &pull_conf()).await.unwrap();
        let jobs: Vec<NewJob> = (0..lanes * 2)
            .map(|i| NewJob {
                queue: queue.clone(),
                id: JobId::generate(&queue.name).id,
                key: format!("lane-{}", i % lanes),
                payload: format!("{{\"i\":{i}}}"),
                delay_ms: 0,
                max_attempts: 3,
                idempotency_key: None,
                priority: 0,
            })
            .collect();
        engine.publish(&jobs, 60).await;
        let claimed = engine
            .claim(&queue, lanes, 60_000, Mode::Pull, None)
            .await
            .unwrap();
        assert_eq!(claimed.jobs.len(), lanes, "{name}: one job of each lane");
        let keys = engine.queue_keys(&queue);
        for (set, key) in [("leases", &keys[5]), ("lane index", &keys[17])] {
            let found: String = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(found, encoding, "{name}: encoding of the {set}");
            let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(members.len(), lanes, "{name}: members of the {set}");
            assert!(
                members.iter().all(|m| m.len() <= 64),
                "{name}: the converting member stayed in the {set}"
            );
        }
    }
}
