//! Lanes you can see and steer (PRODUCT.md §7.4): the listing (stuck first),
//! one lane, pause and resume, and priority between lanes.

use std::time::Duration;

use orderly::queue::engine::LaneFilter;
use orderly::queue::model::{QueueName, QueueRef};
use serde_json::{Value, json};

use crate::crash::publish_spread;
use crate::helpers::{
    TestApp, TestRedis, body, error_body, eventually, own_engine, spawn_app, spawn_app_with,
};
use crate::pull::{ack, claim, id, job_call, lease, pull_queue};
use crate::push::publish_keys_with;
use crate::receiver::{Receiver, Reply, assert_lanes_in_order, seqs_by_lane};

async fn lanes(app: &TestApp, token: &str, queue: &str, query: &str) -> Value {
    let response = app
        .get_with_token(&format!("/v1/queues/{queue}/lanes{query}"), token)
        .await;
    assert_eq!(response.status(), 200, "lanes listing");
    body(response).await
}

async fn lane_call(app: &TestApp, token: &str, queue: &str, key: &str, action: &str) -> Value {
    let response = app
        .post(
            &format!("/v1/queues/{queue}/lanes/{key}/{action}"),
            token,
            None,
        )
        .await;
    assert_eq!(response.status(), 200, "lane {action}");
    body(response).await
}

fn keys(listing: &Value) -> Vec<&str> {
    listing["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect()
}

#[actix_web::test]
async fn a_blocked_lane_is_listed_first_with_its_heads_last_error_and_retry_or_skip_from_the_listing_works()
 {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let settings = json!({"max_attempts": 1, "on_exhausted": "block"});
    pull_queue(&app, &user.token, "q", settings).await;
    for key in ["old", "old", "mid", "stuck", "stuck"] {
        app.publish_ok(&user.token, "q", &json!({"payload": {}, "key": key}))
            .await;
    }
    // The newest lane's head fails for good: the lane blocks.
    let heads = claim(&app, &user.token, "q", 0, 3).await;
    let stuck = heads.iter().find(|j| j["key"] == "stuck").unwrap();
    let nack = json!({"lease": lease(stuck), "error": "downstream said no"});
    let nacked = job_call(&app, &user.token, id(stuck), "nack", nack).await;
    assert_eq!(body(nacked).await["state"], "blocked");
    for head in heads.iter().filter(|j| j["key"] != "stuck") {
        ack(&app, &user.token, head).await;
    }

    let listing = lanes(&app, &user.token, "q", "").await;
    assert_eq!(keys(&listing), ["stuck", "old"], "{listing}");
    let first = &listing["lanes"][0];
    assert_eq!(first["state"], "blocked");
    assert_eq!(first["length"], 2);
    assert_eq!(first["head"]["id"], stuck["id"]);
    assert_eq!(first["head"]["last_error"], "downstream said no");
    assert_eq!(first["head"]["attempts"], 1);
    assert!(first["head_age_ms"].as_u64().is_some());
    assert_eq!(listing["lanes"][1]["state"], "ready");
    let blocked_only = lanes(&app, &user.token, "q", "?state=blocked").await;
    assert_eq!(keys(&blocked_only), ["stuck"]);
    eventually(
        Duration::from_secs(10),
        "the blocked-lanes gauge",
        || async {
            let blocked = app.counter("orderly_lanes_blocked").await;
            let oldest = app.counter("orderly_oldest_lane_head_age_seconds").await;
            (blocked == 1.0 && oldest > 0.0).then_some(())
        },
    )
    .await;

    // Retry from the listing: the head may start again, then blocks again.
    let head_id = first["head"]["id"].as_str().unwrap();
    let retried = job_call(&app, &user.token, head_id, "retry", json!({})).await;
    assert_eq!(body(retried).await["state"], "queued");
    let one = body(
        app.get_with_token("/v1/queues/q/lanes/stuck", &user.token)
            .await,
    )
    .await;
    assert_eq!(one["state"], "ready");
    let again = claim(&app, &user.token, "q", 1_000, 2).await;
    let again = again.iter().find(|j| j["key"] == "stuck").unwrap();
    assert_eq!(id(again), head_id, "the retried head starts first");
    let nack = json!({"lease": lease(again), "error": "still no"});
    job_call(&app, &user.token, head_id, "nack", nack).await;

    // Skip from the listing: the head is dead-lettered, the lane moves on.
    let listing = lanes(&app, &user.token, "q", "?state=blocked").await;
    assert_eq!(listing["lanes"][0]["head"]["last_error"], "still no");
    let skipped = job_call(&app, &user.token, head_id, "skip", json!({})).await;
    assert_eq!(body(skipped).await["state"], "dead");
    let one = body(
        app.get_with_token("/v1/queues/q/lanes/stuck", &user.token)
            .await,
    )
    .await;
    assert_eq!(one["state"], "ready");
    assert_eq!(one["length"], 1);
    assert_ne!(one["head"]["id"], head_id);
    let next = claim(&app, &user.token, "q", 1_000, 2).await;
    assert!(next.iter().any(|j| j["id"] == one["head"]["id"]));
}

#[actix_web::test]
async fn the_lanes_listing_pages_with_after_and_answers_404_for_a_lane_without_jobs() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    for key in ["a", "b", "c", ""] {
        app.publish_ok(&user.token, "q", &json!({"payload": {}, "key": key}))
            .await;
    }
    let mut seen = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let page = lanes(&app, &user.token, "q", &query).await;
        seen.extend(keys(&page).iter().map(|k| k.to_string()));
        match page["next"].as_u64() {
            Some(next) => query = format!("?limit=1&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", ""], "oldest head first");

    let default_lane = app
        .get_with_token("/v1/queues/q/lanes/~", &user.token)
        .await;
    assert_eq!(body(default_lane).await["key"], "");
    let none = app
        .get_with_token("/v1/queues/q/lanes/nothing", &user.token)
        .await;
    let none = error_body(none, 404, "not_found").await;
    assert_eq!(none["message"], "no unfinished job in this lane");
    // A queue that does not exist has no lanes to list or show, nor jobs.
    for path in [
        "/v1/queues/nope/lanes",
        "/v1/queues/nope/jobs",
        "/v1/queues/nope/lanes/k",
    ] {
        let missing = app.get_with_token(path, &user.token).await;
        let missing = error_body(missing, 404, "not_found").await;
        assert_eq!(missing["message"], "no such queue", "{path}");
    }
    let bad_state = app
        .get_with_token("/v1/queues/q/lanes?state=stuck", &user.token)
        .await;
    error_body(bad_state, 422, "validation_failed").await;
}

/// A path whose escapes are not UTF-8 names no lane: `%FF` used to be read
/// as the key "\u{FFFD}" and paused that real lane.
#[actix_web::test]
async fn a_lane_key_that_is_not_utf8_is_422_and_pauses_nothing() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    app.publish_ok(&user.token, "q", &json!({"payload": 1, "key": "\u{FFFD}"}))
        .await;
    for action in ["pause", "resume"] {
        for raw in ["%FF", "%C3", "a%FEb"] {
            let path = format!("/v1/queues/q/lanes/{raw}/{action}");
            let response = app
                .call(reqwest::Method::POST, &path, &user.token, None)
                .await;
            let error = error_body(response, 422, "validation_failed").await;
            assert!(error["fields"]["key"].is_string(), "{path}: {error}");
        }
    }
    let response = app
        .get_with_token("/v1/queues/q/lanes/%FF", &user.token)
        .await;
    error_body(response, 422, "validation_failed").await;
    let jobs = claim(&app, &user.token, "q", 0, 1).await;
    assert_eq!(jobs.len(), 1, "the lane \u{FFFD} was not paused");
    assert_eq!(jobs[0]["key"], "\u{FFFD}");
}

#[actix_web::test]
async fn a_paused_lane_starts_nothing_while_the_others_flow_and_resumed_continues_in_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::ok();
    app.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let paused = lane_call(&app, &user.token, "q", "p", "pause").await;
    assert_eq!(paused["paused"], true);
    for n in 0..4 {
        for key in ["p", "f"] {
            let job = json!({"payload": {"n": n}, "key": key});
            app.publish_ok(&user.token, "q", &job).await;
        }
    }
    eventually(Duration::from_secs(10), "lane f delivered", || async {
        let f = seqs_by_lane(&receiver.seen())
            .remove("f")
            .unwrap_or_default();
        (f.len() == 4).then_some(())
    })
    .await;
    // Lane f is done, so nothing of p was startable in that time.
    assert!(!seqs_by_lane(&receiver.seen()).contains_key("p"));
    let p = body(
        app.get_with_token("/v1/queues/q/lanes/p", &user.token)
            .await,
    )
    .await;
    assert_eq!(p["state"], "paused");
    assert_eq!(p["length"], 4);
    let listing = lanes(&app, &user.token, "q", "?state=paused").await;
    assert_eq!(keys(&listing), ["p"]);
    let stats = app.queue(&user.token, "q").await["stats"].clone();
    assert_eq!(stats["paused_lanes"], 1, "{stats}");
    assert_eq!(stats["waiting"], 4, "{stats}");
    eventually(
        Duration::from_secs(10),
        "the paused-lanes gauge",
        || async { (app.counter("orderly_lanes_paused").await == 1.0).then_some(()) },
    )
    .await;

    let resumed = lane_call(&app, &user.token, "q", "p", "resume").await;
    assert_eq!(resumed["paused"], false);
    app.wait_for_completed(&user.token, "q", 8, Duration::from_secs(10))
        .await;
    let stats = app.queue(&user.token, "q").await["stats"].clone();
    assert_eq!(stats["paused_lanes"], 0, "{stats}");
    let seen = receiver.seen();
    assert_eq!(seqs_by_lane(&seen)["p"].len(), 4);
    assert_lanes_in_order(&seen);
}

#[actix_web::test]
async fn pausing_a_lane_while_its_head_is_leased_holds_the_next_job_and_keeps_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    for _ in 0..3 {
        app.publish_ok(&user.token, "q", &json!({"payload": {}, "key": "p"}))
            .await;
    }
    let first = claim(&app, &user.token, "q", 0, 1).await.remove(0);
    assert_eq!(first["key"], "p");
    app.publish_ok(&user.token, "q", &json!({"payload": {}, "key": "f"}))
        .await;
    let paused = lane_call(&app, &user.token, "q", "p", "pause").await;
    assert_eq!(paused["lane"]["state"], "paused");
    ack(&app, &user.token, &first).await;
    // Only lane f may start now, however many are asked for.
    let next = claim(&app, &user.token, "q", 0, 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["key"], "f");
    ack(&app, &user.token, &next[0]).await;
    assert!(claim(&app, &user.token, "q", 0, 10).await.is_empty());

    // A consumer waiting on the queue gets the lane's next job once resumed.
    let waiting = claim(&app, &user.token, "q", 5_000, 10);
    let resume = async {
        lane_call(&app, &user.token, "q", "p", "resume").await;
    };
    let (claimed, ()) = futures_util::join!(waiting, resume);
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0]["seq"], first["seq"].as_u64().unwrap() + 1);
}

#[actix_web::test]
async fn among_ready_lanes_the_higher_priority_head_starts_first_and_a_lane_keeps_its_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    for key in ["low-1", "low-2", "low-3"] {
        app.publish_ok(&user.token, "q", &json!({"payload": {}, "key": key}))
            .await;
    }
    let mid = json!({"payload": {}, "key": "mid", "priority": 4});
    app.publish_ok(&user.token, "q", &mid).await;
    let high = json!({"payload": {}, "key": "high", "priority": 9});
    app.publish_ok(&user.token, "q", &high).await;
    // Within a lane FIFO holds: a priority-9 job behind a priority-0 head waits.
    let behind = json!({"payload": {}, "key": "low-1", "priority": 9});
    app.publish_ok(&user.token, "q", &behind).await;

    let order: Vec<String> = {
        let mut order = Vec::new();
        for _ in 0..5 {
            let job = claim(&app, &user.token, "q", 0, 1).await.remove(0);
            order.push(job["key"].as_str().unwrap().to_owned());
        }
        order
    };
    assert_eq!(order, ["high", "mid", "low-1", "low-2", "low-3"]);
    let lane = body(
        app.get_with_token("/v1/queues/q/lanes/high", &user.token)
            .await,
    )
    .await;
    assert_eq!(lane["head"]["priority"], 9, "{lane}");

    for priority in [json!(10), json!(-1), json!("high")] {
        let job = json!({"payload": {}, "priority": priority});
        let refused = app.publish(&user.token, "q", &job).await;
        assert!(
            refused.status().is_client_error(),
            "priority {priority} accepted"
        );
    }
    let refused = app
        .publish(&user.token, "q", &json!({"payload": {}, "priority": 10}))
        .await;
    let error = error_body(refused, 422, "validation_failed").await;
    assert!(error["fields"]["priority"].is_string(), "{error}");
}

#[actix_web::test]
async fn a_push_receiver_sees_the_higher_priority_lane_first_when_both_wait() {
    // One delivery at a time, so arrival order is start order.
    let app = spawn_app_with(|s| s.worker.concurrency = 1).await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::start(|_| Reply::Status(200));
    app.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    // Held back by a paused queue, so both lanes wait when it resumes.
    let paused = app.post("/v1/queues/q/pause", &user.token, None).await;
    assert_eq!(paused.status(), 200);
    app.publish_ok(&user.token, "q", &json!({"payload": {}, "key": "low"}))
        .await;
    let high = json!({"payload": {}, "key": "high", "priority": 7});
    app.publish_ok(&user.token, "q", &high).await;
    let resumed = app.post("/v1/queues/q/resume", &user.token, None).await;
    assert_eq!(resumed.status(), 200);
    app.wait_for_completed(&user.token, "q", 2, Duration::from_secs(10))
        .await;
    let keys: Vec<String> = receiver.seen().iter().map(|s| s.key.clone()).collect();
    assert_eq!(keys, ["high", "low"]);
}

#[actix_web::test]
async fn listing_twenty_thousand_lanes_runs_in_bounded_steps_of_a_few_milliseconds() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    let lanes_total = 20_000;
    publish_spread(&app, &user.token, "q", lanes_total, lanes_total).await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let patient = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(30)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .unwrap();
    let config = |name: &'static str, value: &'static str| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg(name).arg(value);
        cmd
    };
    let _: () = config("slowlog-log-slower-than", "0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = config("slowlog-max-len", "100000")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();

    // No lane is blocked: every call examines its share and hands on a cursor.
    let (mut calls, mut query) = (0, "?state=blocked".to_owned());
    loop {
        let page = lanes(&app, &user.token, "q", &query).await;
        calls += 1;
        assert!(page["lanes"].as_array().unwrap().is_empty());
        match page["next"].as_u64() {
            Some(next) => query = format!("?state=blocked&after={next}"),
            None => break,
        }
    }
    assert!(
        calls >= lanes_total / 200,
        "{calls} calls walked {lanes_total} lanes"
    );

    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(100_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut script_us: Vec<i64> = log
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let micros = match fields.get(2)? {
                redis::Value::Int(us) => *us,
                _ => return None,
            };
            let redis::Value::Array(args) = fields.get(3)? else {
                return None;
            };
            let command = match args.first()? {
                redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).to_lowercase(),
                _ => return None,
            };
            (command == "fcall" || command.starts_with("eval")).then_some(micros)
        })
        .collect();
    script_us.sort_unstable();
    let median = script_us[script_us.len() / 2];
    let slowest = script_us[script_us.len() - 1];
    eprintln!(
        "lanes listing: {calls} calls over {lanes_total} lanes, scripts: median {median} µs, slowest {slowest} µs"
    );
    // The work per call is bounded (the page count above); its time is
    // judged by the median, as a loaded machine can pause Redis mid-script.
    assert!(median < 5_000, "listing scripts took {median} µs (median)");
}

#[actix_web::test]
async fn lanes_made_before_the_lane_index_existed_are_listed_after_a_few_listings() {
    let app = spawn_app().await;
    let engine = own_engine(&app);
    let queue = QueueRef::new("owner", QueueName::parse("q").unwrap());
    let total = 500;
    let keys: Vec<String> = (0..total).map(|n| format!("old-{n}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    engine
        .configure(&queue, &crate::helpers::pull_conf())
        .await
        .unwrap();
    publish_keys_with(&engine, &queue, &keys, 3).await;
    // Data as an Orderly without the lane index left it: no index, and no
    // record of a scan for lanes older than it.
    let mut del = redis::cmd("DEL");
    del.arg(format!("{}n", engine.queue_base(&queue)));
    let mut forget = redis::cmd("HDEL");
    forget
        .arg(format!("{}m", engine.queue_base(&queue)))
        .arg("lane_scan");
    crate::helpers::redis_commands(&app, &[del, forget]).await;

    let listed = eventually(Duration::from_secs(10), "every old lane listed", || async {
        let mut listed = Vec::new();
        let mut filter = LaneFilter {
            limit: 1000,
            ..LaneFilter::default()
        };
        loop {
            let page = engine.lanes(&queue, &filter).await.unwrap();
            listed.extend(page.lanes.into_iter().map(|l| l.key));
            match page.next {
                Some(next) => filter.after = Some(next),
                None => break,
            }
        }
        (listed.len() == total).then_some(listed)
    })
    .await;
    assert_eq!(listed, keys, "oldest head first");
}

/// The lanes of a paused queue are listed `paused` (nothing of theirs can
/// start), but a head leased before the pause stays `active`; resumed, they
/// are `ready` again.
#[actix_web::test]
async fn the_lanes_of_a_paused_queue_are_listed_paused() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q", json!({})).await;
    for key in ["a", "b"] {
        app.publish_ok(&user.token, "q", &json!({"payload": 1, "key": key}))
            .await;
    }
    let claimed = claim(&app, &user.token, "q", 0, 1).await;
    assert_eq!(claimed[0]["key"], "a");
    let pause = app.post("/v1/queues/q/pause", &user.token, None).await;
    assert_eq!(pause.status(), 200);
    let state_of = |listing: &Value, key: &str| {
        listing["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["key"] == key)
            .map(|l| l["state"].clone())
    };
    let listing = lanes(&app, &user.token, "q", "").await;
    assert_eq!(state_of(&listing, "a"), Some(json!("active")), "{listing}");
    assert_eq!(state_of(&listing, "b"), Some(json!("paused")), "{listing}");
    let b = body(
        app.get_with_token("/v1/queues/q/lanes/b", &user.token)
            .await,
    )
    .await;
    assert_eq!(b["state"], "paused");
    assert_eq!(
        keys(&lanes(&app, &user.token, "q", "?state=paused").await),
        ["b"]
    );

    let resume = app.post("/v1/queues/q/resume", &user.token, None).await;
    assert_eq!(resume.status(), 200);
    let listing = lanes(&app, &user.token, "q", "").await;
    assert_eq!(state_of(&listing, "b"), Some(json!("ready")), "{listing}");
}
