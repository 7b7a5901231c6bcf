//! Dependency outages: Redis restarting mid-run, MongoDB down. Clear 503s,
//! never a hang or a 500, automatic recovery, nothing accepted is lost.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestMongo, TestRedis, body, error_body, eventually, spawn_app_with};
use crate::receiver::{Receiver, Reply};

#[actix_web::test]
async fn a_redis_restart_mid_run_answers_503_then_recovers_without_losing_accepted_jobs() {
    let mut redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::start(|_| Reply::Hang(Duration::from_millis(5)));
    app.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let mut accepted = 0u64;
    for n in 0..100 {
        app.publish_ok(
            &user.token,
            "q",
            &json!({"payload": n, "key": format!("k{}", n % 4)}),
        )
        .await;
        accepted += 1;
    }
    eventually(Duration::from_secs(30), "deliveries started", || async {
        (!receiver.seen().is_empty()).then_some(())
    })
    .await;

    redis.stop();
    let budget = Duration::from_millis(app.settings.redis.response_timeout_ms + 2_000);
    for n in 0..5 {
        let started = Instant::now();
        let response = app
            .publish(&user.token, "q", &json!({"payload": format!("outage-{n}")}))
            .await;
        assert!(
            started.elapsed() < budget,
            "publish hung for {:?}",
            started.elapsed()
        );
        // Refused outright: nothing enqueued; a request the dropped
        // connection may have carried: outcome unknown (§7.2).
        let code = if response.status() == 503 {
            body(response).await["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            format!("status {}", response.status())
        };
        assert!(
            code == "unavailable" || code == "outcome_unknown",
            "publish while redis is down answered {code}"
        );
    }
    let ready = app.get("/readyz").await;
    let error = error_body(ready, 503, "unavailable").await;
    assert!(error["message"].as_str().unwrap().contains("redis"));

    redis.resume().await;
    let returned = Instant::now();
    let before = receiver.seen().len();
    let resumed = eventually(Duration::from_secs(10), "deliveries resume", || async {
        (receiver.seen().len() > before
            || app.queue(&user.token, "q").await["stats"]["completed"] == accepted)
            .then(|| returned.elapsed())
    })
    .await;
    assert!(
        resumed < Duration::from_secs(5),
        "deliveries resumed after {resumed:?}"
    );
    for n in 0..10 {
        app.publish_ok(&user.token, "q", &json!({"payload": format!("after-{n}")}))
            .await;
        accepted += 1;
    }
    // Jobs whose delivery the outage cut off come back when their lease
    // expires (15 s) at the latest; the rest is slack for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let queue = app.queue(&user.token, "q").await;
        if queue["stats"]["completed"] == accepted {
            break;
        }
        if Instant::now() > deadline {
            let active = app.all_jobs(&user.token, "q", Some("active")).await;
            let retrying = app.all_jobs(&user.token, "q", Some("retrying")).await;
            panic!(
                "{accepted} jobs never completed; queue {queue}; active {active:?}; retrying {retrying:?}; now {}",
                chrono::Utc::now()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[actix_web::test]
async fn with_mongodb_down_auth_is_503_but_publishing_and_reading_jobs_keep_working() {
    let mut mongo = TestMongo::start().await;
    let app = spawn_app_with(|s| s.mongodb.uri = mongo.uri.clone()).await;
    let user = app.signed_up_user().await;
    let first = app
        .publish_ok(&user.token, "q", &json!({"payload": "before"}))
        .await;

    mongo.stop();
    let register = app.register("late@example.com", "password1").await;
    error_body(register, 503, "unavailable").await;
    let login = app.login("late@example.com", "password1").await;
    error_body(login, 503, "unavailable").await;
    let ready = error_body(app.get("/readyz").await, 503, "unavailable").await;
    assert!(
        ready["message"].as_str().unwrap().contains("mongodb"),
        "{ready}"
    );
    // Past the settings cache period, publishing still works from the cache.
    let mut published = vec![first["id"].as_str().unwrap().to_owned()];
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let started = Instant::now();
        let job = app
            .publish_ok(&user.token, "q", &json!({"payload": "during"}))
            .await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "publish waited on MongoDB"
        );
        published.push(job["id"].as_str().unwrap().to_owned());
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    for id in &published {
        assert_eq!(app.job(&user.token, id).await["state"], "queued");
    }

    mongo.resume().await;
    eventually(Duration::from_secs(30), "auth recovers", || async {
        (app.register("late@example.com", "password1").await.status() == 201).then_some(())
    })
    .await;
    assert_eq!(
        app.login("late@example.com", "password1").await.status(),
        200
    );
    eventually(Duration::from_secs(10), "ready again", || async {
        (app.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    let stats = app.queue(&user.token, "q").await["stats"].clone();
    assert_eq!(stats["waiting"], published.len());
}

/// A process that cannot read a push queue's settings (started while
/// MongoDB is down: nothing cached) leaves that queue's lanes to a process
/// that can, instead of claiming them and handing them back: every job is
/// delivered under its first lease, by the running process.
#[actix_web::test]
async fn a_process_without_a_queues_settings_leaves_its_lanes_to_one_that_has_them() {
    let warm = crate::helpers::spawn_app().await;
    let user = warm.signed_up_user().await;
    let receiver = crate::receiver::Receiver::ok();
    warm.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    warm.publish_ok(&user.token, "q", &json!({"payload": 0, "key": "k0"}))
        .await;
    eventually(Duration::from_secs(10), "the first delivery", || async {
        (!receiver.seen().is_empty()).then_some(())
    })
    .await;
    // Another process on the same Redis whose MongoDB never answers.
    let redis = warm.settings.redis.clone();
    let port = crate::helpers::closed_port();
    let cold = spawn_app_with(|s| {
        s.redis = redis;
        s.mongodb.uri = format!("mongodb://127.0.0.1:{port}");
    })
    .await;
    for n in 1..=30 {
        let job = json!({"payload": n, "key": format!("k{n}")});
        warm.publish_ok(&user.token, "q", &job).await;
    }
    eventually(Duration::from_secs(20), "every job delivered", || async {
        (receiver.seen().len() >= 31).then_some(())
    })
    .await;
    let handed_back: Vec<_> = receiver
        .seen()
        .into_iter()
        .filter(|s| s.lease != 1)
        .map(|s| (s.key, s.lease))
        .collect();
    assert!(
        handed_back.is_empty(),
        "claimed and handed back: {handed_back:?}"
    );
    drop(cold);
}
