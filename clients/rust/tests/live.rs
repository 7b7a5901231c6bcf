//! The Rust client against a live Orderly named by `ORDERLY_URL`
//! (scripts/clients_test.sh starts one). Without it, each test prints why it
//! skipped and passes, so `cargo test` at the root works offline.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orderly_client::{
    Ack, Claim, Client, Consumer, HandlerError, JobState, Nack, OutcomeStatus, Publish,
};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A client for a freshly registered user, or `None` (with a message) when
/// no live Orderly is configured.
async fn user(test: &str) -> Option<Client> {
    let Ok(url) = std::env::var("ORDERLY_URL") else {
        // Straight to stderr: the test harness captures `println!`.
        let _ = writeln!(
            std::io::stderr(),
            "skipping {test}: ORDERLY_URL is not set (scripts/clients_test.sh sets it)"
        );
        return None;
    };
    let email = format!("rs-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "correct horse battery";
    Client::register(&url, &email, password)
        .await
        .expect("register");
    Some(Client::login(&url, &email, password).await.expect("login"))
}

fn queue_name() -> String {
    format!("q-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test]
async fn publish_returns_the_job_and_get_reads_it() {
    let Some(client) = user("publish_returns_the_job_and_get_reads_it").await else {
        return;
    };
    let queue = queue_name();
    let job = client
        .publish(&queue, Publish::new(json!({"n": 1})).key("ann"))
        .await
        .unwrap();
    assert_eq!((job.key.as_str(), job.state), ("ann", JobState::Queued));
    assert_eq!(job.payload, json!({"n": 1}));
    let read = client.get_job(&job.id, None).await.unwrap();
    assert_eq!(read.seq, job.seq);
    let delayed = client
        .publish(&queue, Publish::new(json!(2)).delay_ms(60_000))
        .await
        .unwrap();
    assert_eq!(delayed.state, JobState::Delayed);
    let first = client
        .publish(&queue, Publish::new(json!("x")).idempotency_key("order-17"))
        .await
        .unwrap();
    let again = client
        .publish(&queue, Publish::new(json!("x")).idempotency_key("order-17"))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
}

/// A loopback TCP proxy to `target` that drops its first connection as soon
/// as the answer starts: the request was processed, the client never hears
/// back. Returns its URL and a count of connections.
async fn drop_first_answer(target: &str) -> (String, Arc<AtomicUsize>) {
    let upstream_addr = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let Ok(mut upstream) = TcpStream::connect(&upstream_addr).await else {
                return;
            };
            tokio::spawn(async move {
                if !first {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
                let (mut client_read, _client_write) = client.split();
                let (mut upstream_read, mut upstream_write) = upstream.split();
                let mut answer = [0u8; 1];
                tokio::select! {
                    _ = tokio::io::copy(&mut client_read, &mut upstream_write) => {}
                    _ = upstream_read.read(&mut answer) => {}
                }
                // Both sockets close here, before a byte of the answer is relayed.
            });
        }
    });
    (url, connections)
}

/// `client`'s user, reaching Orderly through [`drop_first_answer`] (with
/// quick retries); and its count of connections.
async fn behind_drop_first_answer(client: &Client) -> (Client, Arc<AtomicUsize>) {
    let (proxy, connections) = drop_first_answer(client.base_url()).await;
    let flaky = Client::new(&proxy, client.token())
        .unwrap()
        .with_retries(3, Duration::from_millis(10));
    (flaky, connections)
}

#[tokio::test]
async fn a_publish_retried_after_a_lost_answer_enqueues_once() {
    let Some(client) = user("a_publish_retried_after_a_lost_answer_enqueues_once").await else {
        return;
    };
    let queue = queue_name();
    let (flaky, connections) = behind_drop_first_answer(&client).await;
    let job = flaky
        .publish(&queue, Publish::new(json!({"once": true})))
        .await
        .unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    let claim = Claim {
        max_jobs: 10,
        ..Claim::default()
    };
    let claimed = client.claim(&queue, &claim).await.unwrap();
    let ids: Vec<_> = claimed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [job.id.as_str()]);
}

/// Every job of `queue` (one page of up to 1000).
async fn queued_jobs(client: &Client, queue: &str) -> Vec<Value> {
    let path = format!("/v1/queues/{queue}/jobs?limit=1000");
    let answer: Value = client
        .call(reqwest::Method::GET, &path, None::<&Value>, &[], None)
        .await
        .unwrap();
    answer["jobs"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_batch_repeated_with_its_key_answers_the_original_jobs() {
    let Some(client) = user("a_batch_repeated_with_its_key_answers_the_original_jobs").await else {
        return;
    };
    let queue = queue_name();
    let mut jobs: Vec<Publish> = (0..3)
        .map(|n| Publish::new(json!(n)).key(format!("k{n}")))
        .collect();
    jobs.push(Publish::new(json!("own")).idempotency_key("own-key"));
    let first = client
        .publish_batch_with_key(&queue, &jobs, "batch-1")
        .await
        .unwrap();
    let again = client
        .publish_batch_with_key(&queue, &jobs, "batch-1")
        .await
        .unwrap();
    let ids = |jobs: &[orderly_client::Job]| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
    // The job with its own key is that key's job for a single publish too.
    let own = client
        .publish(
            &queue,
            Publish::new(json!("own")).idempotency_key("own-key"),
        )
        .await
        .unwrap();
    assert_eq!(own.id, first[3].id);
    assert_eq!(queued_jobs(&client, &queue).await.len(), 4);
}

#[tokio::test]
async fn a_batch_retried_after_a_lost_answer_enqueues_once() {
    let Some(client) = user("a_batch_retried_after_a_lost_answer_enqueues_once").await else {
        return;
    };
    let queue = queue_name();
    let (flaky, connections) = behind_drop_first_answer(&client).await;
    let jobs: Vec<Publish> = (0..3).map(|n| Publish::new(json!(n)).key("lane")).collect();
    let published = flaky.publish_batch(&queue, &jobs).await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    let queued: Vec<Value> = queued_jobs(&client, &queue)
        .await
        .into_iter()
        .map(|j| j["id"].clone())
        .collect();
    let ids: Vec<Value> = published.iter().map(|j| json!(j.id)).collect();
    assert_eq!(queued, ids);
}

#[tokio::test]
async fn a_claim_repeated_with_its_claim_id_returns_the_same_lease() {
    let Some(client) = user("a_claim_repeated_with_its_claim_id_returns_the_same_lease").await
    else {
        return;
    };
    let queue = queue_name();
    client
        .put_queue(&queue, &json!({"lease_ms": 60_000}))
        .await
        .unwrap();
    let job = client
        .publish(&queue, Publish::new(json!("x")).key("lane"))
        .await
        .unwrap();
    let claim = Claim {
        max_jobs: 5,
        claim_id: Some(Claim::new_id()),
        ..Claim::default()
    };
    let first = client.claim(&queue, &claim).await.unwrap().jobs;
    let again = client.claim(&queue, &claim).await.unwrap().jobs;
    let leases = |jobs: &[orderly_client::Job]| {
        jobs.iter()
            .map(|j| (j.id.clone(), j.lease.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, job.id);
    assert_eq!(leases(&again), leases(&first));
    let other = Claim {
        max_jobs: 5,
        claim_id: Some(Claim::new_id()),
        ..Claim::default()
    };
    assert!(client.claim(&queue, &other).await.unwrap().jobs.is_empty());
    // The whole request repeats: its ack answers the outcome it produced.
    let ack = Claim {
        acks: vec![Ack {
            id: job.id.clone(),
            lease: first[0].lease.clone().unwrap(),
            result: None,
        }],
        claim_id: Some(Claim::new_id()),
        ..Claim::default()
    };
    let done = client.claim(&queue, &ack).await.unwrap().results;
    let repeat = client.claim(&queue, &ack).await.unwrap().results;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].status, OutcomeStatus::Completed);
    assert_eq!(repeat, done);
}

#[tokio::test]
async fn the_consumer_retries_a_lost_claim_with_its_claim_id() {
    let Some(client) = user("the_consumer_retries_a_lost_claim_with_its_claim_id").await else {
        return;
    };
    let queue = queue_name();
    // Leases far longer than the test: a claim whose lease had to expire
    // would not finish in time.
    client
        .put_queue(&queue, &json!({"lease_ms": 60_000}))
        .await
        .unwrap();
    let job = client
        .publish(&queue, Publish::new(json!({"n": 1})).key("lane"))
        .await
        .unwrap();
    let (flaky, connections) = behind_drop_first_answer(&client).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut consumer = Consumer::new(flaky, &queue).wait_ms(0);
    let handled = seen.clone();
    consumer
        .run(
            move |job| {
                handled.lock().unwrap().push(job.id.clone());
                async { Ok(json!("ok")) }
            },
            true,
        )
        .await
        .unwrap();
    // The first claim leased the job but its answer was lost; the retry
    // under the same claim_id answered that lease instead of finding the
    // lane busy.
    assert!(connections.load(Ordering::SeqCst) >= 2);
    assert_eq!(*seen.lock().unwrap(), [job.id.as_str()]);
    let done = client.get_job(&job.id, None).await.unwrap();
    assert_eq!(
        (done.state, done.attempts, done.result),
        (JobState::Completed, 1, Some(json!("ok")))
    );
}

#[tokio::test]
async fn errors_carry_the_api_code() {
    let Some(client) = user("errors_carry_the_api_code").await else {
        return;
    };
    let missing = client.get_job("nope", None).await.unwrap_err();
    assert_eq!((missing.status(), missing.code()), (Some(404), "not_found"));
    let empty = client.publish_batch(&queue_name(), &[]).await.unwrap_err();
    assert_eq!(empty.code(), "validation_failed");
    assert!(
        matches!(empty, orderly_client::Error::Api { ref fields, .. } if fields.contains_key("jobs"))
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = Client::new(&format!("http://127.0.0.1:{port}"), client.token())
        .unwrap()
        .with_retries(1, Duration::from_millis(10));
    let err = unreachable
        .publish("q", Publish::new(json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "connection_failed");
}

#[tokio::test]
async fn publish_batch_keeps_order() {
    let Some(client) = user("publish_batch_keeps_order").await else {
        return;
    };
    let jobs: Vec<Publish> = (0..5).map(|n| Publish::new(json!(n)).key("lane")).collect();
    let published = client.publish_batch(&queue_name(), &jobs).await.unwrap();
    let payloads: Vec<Value> = published.iter().map(|j| j.payload.clone()).collect();
    assert_eq!(payloads, (0..5).map(|n| json!(n)).collect::<Vec<_>>());
    assert!(published.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn the_consumer_keeps_a_long_job_alive_with_extend() {
    let Some(client) = user("the_consumer_keeps_a_long_job_alive_with_extend").await else {
        return;
    };
    let queue = queue_name();
    client
        .put_queue(&queue, &json!({"lease_ms": 1000, "max_attempts": 3}))
        .await
        .unwrap();
    let job = client
        .publish(&queue, Publish::new(json!({"work": "slow"})))
        .await
        .unwrap();
    let mut consumer = Consumer::new(client.clone(), &queue).wait_ms(0);
    consumer
        .run(
            |job| async move {
                // Real work that outlives the 1 s lease three times over.
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(json!({"attempt": job.attempts}))
            },
            true,
        )
        .await
        .unwrap();
    let done = client.get_job(&job.id, Some(5000)).await.unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.attempts, 1);
    assert_eq!(done.result, Some(json!({"attempt": 1})));
}

#[tokio::test]
async fn the_consumer_acks_and_nacks_in_batches() {
    let Some(client) = user("the_consumer_acks_and_nacks_in_batches").await else {
        return;
    };
    let queue = queue_name();
    let settings = json!({"max_attempts": 2, "backoff": {"initial_ms": 10, "max_ms": 10}});
    client.put_queue(&queue, &settings).await.unwrap();
    let mut ok = Vec::new();
    for n in 0..3 {
        let job = Publish::new(json!(n)).key(format!("k{n}"));
        ok.push(client.publish(&queue, job).await.unwrap());
    }
    let bad = client
        .publish(&queue, Publish::new(json!("fail")).key("bad"))
        .await
        .unwrap();
    let mut consumer = Consumer::new(client.clone(), &queue).wait_ms(200);
    consumer
        .run(
            |job| async move {
                match job.payload.as_u64() {
                    Some(n) => Ok(json!(n * 10)),
                    None => Err(HandlerError::new("cannot do it")),
                }
            },
            true,
        )
        .await
        .unwrap();
    for job in &ok {
        let done = client.get_job(&job.id, None).await.unwrap();
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(done.result, Some(json!(job.payload.as_u64().unwrap() * 10)));
    }
    let failed = client.get_job(&bad.id, None).await.unwrap();
    assert_eq!(failed.state, JobState::Dead);
    assert_eq!(failed.last_error.as_deref(), Some("cannot do it"));
    let statuses: Vec<_> = consumer
        .reported()
        .iter()
        .filter(|o| o.id == bad.id)
        .map(|o| o.status)
        .collect();
    assert_eq!(statuses, [OutcomeStatus::Retrying, OutcomeStatus::Dead]);
}

#[tokio::test]
async fn batch_ack_reports_each_item_in_order() {
    let Some(client) = user("batch_ack_reports_each_item_in_order").await else {
        return;
    };
    let queue = queue_name();
    client.put_queue(&queue, &json!({})).await.unwrap();
    for key in ["a", "b", "c"] {
        client
            .publish(&queue, Publish::new(json!(key)).key(key))
            .await
            .unwrap();
    }
    let claim = Claim {
        max_jobs: 3,
        ..Claim::default()
    };
    let jobs = client.claim(&queue, &claim).await.unwrap().jobs;
    let [a, b, c] = &jobs[..] else {
        panic!("claimed {jobs:?}")
    };
    let lease = |j: &orderly_client::Job| j.lease.clone().unwrap();
    let acks = [
        Ack {
            id: a.id.clone(),
            lease: lease(a),
            result: Some(json!("A")),
        },
        Ack {
            id: c.id.clone(),
            lease: lease(b),
            result: None,
        },
    ];
    let nacks = [Nack {
        id: b.id.clone(),
        lease: lease(b),
        error: Some("later".into()),
        retry_in_ms: Some(60_000),
    }];
    let results = client.report(&queue, &acks, &nacks).await.unwrap();
    let got: Vec<_> = results.iter().map(|r| (r.id.as_str(), r.status)).collect();
    assert_eq!(
        got,
        [
            (a.id.as_str(), OutcomeStatus::Completed),
            (c.id.as_str(), OutcomeStatus::LeaseLost),
            (b.id.as_str(), OutcomeStatus::Retrying),
        ]
    );
    let lost = client.extend(&a.id, &lease(a), None).await.unwrap_err();
    assert!(lost.is_lease_lost(), "{lost}");
    // A claim reports c's outcome first, then leases nothing (b waits).
    let claim = Claim {
        max_jobs: 3,
        acks: vec![Ack {
            id: c.id.clone(),
            lease: lease(c),
            result: None,
        }],
        ..Claim::default()
    };
    let claimed = client.claim(&queue, &claim).await.unwrap();
    assert_eq!(claimed.results.len(), 1);
    assert_eq!(claimed.results[0].status, OutcomeStatus::Completed);
    assert!(claimed.jobs.is_empty());
}

/// Handler time longer than the lease: a tenth of it at a time, as real
/// work would take.
async fn work(duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_consumer_keeps_every_lease_of_a_batch_alive() {
    let Some(client) = user("the_consumer_keeps_every_lease_of_a_batch_alive").await else {
        return;
    };
    let queue = queue_name();
    client
        .put_queue(&queue, &json!({"lease_ms": 1000, "max_attempts": 2}))
        .await
        .unwrap();
    // Four lanes: one claim (max_jobs 10) leases all four heads, and running
    // them takes twice the lease. The jobs waiting their turn, and the
    // finished ones whose acks ride on the next claim, must keep their leases.
    let mut ids = Vec::new();
    for n in 0..4 {
        let job = Publish::new(json!(n)).key(format!("lane-{n}"));
        ids.push(client.publish(&queue, job).await.unwrap().id);
    }
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let mut consumer = Consumer::new(client.clone(), &queue).wait_ms(200);
    consumer
        .run(
            move |job| {
                seen.lock().unwrap().push(job.id.clone());
                async move {
                    work(Duration::from_millis(500)).await;
                    Ok(json!({"n": job.payload}))
                }
            },
            true,
        )
        .await
        .unwrap();
    let mut called = calls.lock().unwrap().clone();
    called.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(called, expected, "each job runs exactly once");
    let statuses: Vec<_> = consumer.reported().iter().map(|o| o.status).collect();
    assert_eq!(statuses, [OutcomeStatus::Completed; 4]);
    for (n, id) in ids.iter().enumerate() {
        let done = client.get_job(id, None).await.unwrap();
        assert_eq!(
            (done.state, done.attempts, done.result),
            (JobState::Completed, 1, Some(json!({"n": n})))
        );
    }
}

#[tokio::test]
async fn the_consumer_keeps_the_lease_of_a_retried_job_alive() {
    let Some(client) = user("the_consumer_keeps_the_lease_of_a_retried_job_alive").await else {
        return;
    };
    let queue = queue_name();
    client
        .put_queue(&queue, &json!({"lease_ms": 1000, "max_attempts": 3}))
        .await
        .unwrap();
    let job = client
        .publish(&queue, Publish::new(json!("twice")))
        .await
        .unwrap();
    // The second attempt's `started_at` is still the first attempt's start,
    // 3 s before its lease began: it tells nothing of the lease's length.
    let mut consumer = Consumer::new(client.clone(), &queue).wait_ms(5000);
    consumer
        .run(
            |job| async move {
                if job.attempts == 1 {
                    return Err(HandlerError::retry_in("not yet", 3000));
                }
                work(Duration::from_millis(1500)).await;
                Ok(json!({"attempt": job.attempts}))
            },
            true,
        )
        .await
        .unwrap();
    let statuses: Vec<_> = consumer.reported().iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [OutcomeStatus::Retrying, OutcomeStatus::Completed]
    );
    let done = client.get_job(&job.id, None).await.unwrap();
    assert_eq!(
        (done.state, done.attempts, done.result),
        (JobState::Completed, 2, Some(json!({"attempt": 2})))
    );
}

#[tokio::test]
async fn a_repeated_idempotency_key_whose_job_expired_is_a_typed_error() {
    let Some(client) = user("a_repeated_idempotency_key_whose_job_expired_is_a_typed_error").await
    else {
        return;
    };
    let queue = queue_name();
    // The shortest retention the API allows.
    client
        .put_queue(&queue, &json!({"retention_s": 1}))
        .await
        .unwrap();
    let publish = || Publish::new(json!("once")).idempotency_key("order-42");
    let original = client.publish(&queue, publish()).await.unwrap();
    let claim = Claim {
        max_jobs: 1,
        ..Claim::default()
    };
    let leased = client.claim(&queue, &claim).await.unwrap().jobs;
    assert_eq!(leased.len(), 1);
    client
        .ack(&original.id, leased[0].lease.as_deref().unwrap(), None)
        .await
        .unwrap();
    // Finished jobs are dropped in batches a little after their retention:
    // repeat the publish until the original is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (id, expired_queue) = loop {
        match client.publish(&queue, publish()).await {
            Ok(job) => assert_eq!(job.id, original.id, "a repeat enqueues nothing"),
            Err(orderly_client::Error::Expired { id, queue }) => break (id, queue),
            Err(err) => panic!("repeat of an expired key: {err}"),
        }
        assert!(Instant::now() < deadline, "the original never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (id.as_str(), expired_queue.as_str()),
        (original.id.as_str(), queue.as_str())
    );
    let err = client.publish(&queue, publish()).await.unwrap_err();
    assert!(err.is_expired() && !err.is_transient(), "{err:?}");
    assert_eq!(err.code(), "expired");
    assert!(
        queued_jobs(&client, &queue).await.is_empty(),
        "nothing enqueued"
    );
}

#[tokio::test]
async fn a_higher_priority_lane_head_starts_first() {
    let Some(client) = user("a_higher_priority_lane_head_starts_first").await else {
        return;
    };
    let one = Claim {
        max_jobs: 1,
        ..Claim::default()
    };
    // Single publish: the later, higher-priority head starts first.
    let queue = queue_name();
    client
        .publish(&queue, Publish::new(json!("low")).key("a"))
        .await
        .unwrap();
    let high = client
        .publish(&queue, Publish::new(json!("high")).key("b").priority(9))
        .await
        .unwrap();
    let first = client.claim(&queue, &one).await.unwrap().jobs;
    assert_eq!(first.iter().map(|j| &j.id).collect::<Vec<_>>(), [&high.id]);
    // Batch publish: each job carries its own priority.
    let queue = queue_name();
    let batch = [
        Publish::new(json!("low")).key("c").priority(1),
        Publish::new(json!("high")).key("d").priority(7),
    ];
    let published = client.publish_batch(&queue, &batch).await.unwrap();
    let first = client.claim(&queue, &one).await.unwrap().jobs;
    assert_eq!(
        first.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&published[1].id]
    );
    // It is sent as is: the server refuses one outside 0–9.
    let refused = client
        .publish(&queue, Publish::new(json!(0)).priority(10))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, orderly_client::Error::Api { ref fields, .. } if fields.contains_key("priority")),
        "{refused:?}"
    );
    let refused = client
        .publish_batch(&queue, &[Publish::new(json!(0)).priority(10)])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, orderly_client::Error::Api { ref fields, .. } if fields.contains_key("jobs[0].priority")),
        "{refused:?}"
    );
}
