//! Cron schedules (§7.5): each tick publishes exactly one job however many
//! processes run, missed ticks follow `catch_up`, and the listing shows the
//! next and last runs.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, body, error_body, eventually, spawn_app, test_settings};
use crate::process::OrderlyProcess;

const EVERY_SECOND: &str = "* * * * * *";

/// Creates pull queue `name` of the user.
async fn pull_queue(app: &TestApp, token: &str, name: &str) {
    let response = app
        .put_queue(token, name, &json!({"delivery": {"mode": "pull"}}))
        .await;
    assert_eq!(response.status(), 201, "queue {name} not created");
}

async fn put_schedule(
    app: &TestApp,
    token: &str,
    queue: &str,
    name: &str,
    body: &Value,
) -> reqwest::Response {
    app.call(
        Method::PUT,
        &format!("/v1/queues/{queue}/schedules/{name}"),
        token,
        Some(body),
    )
    .await
}

/// The schedule object as `GET` shows it.
async fn schedule(app: &TestApp, token: &str, queue: &str, name: &str) -> Value {
    let response = app
        .get_with_token(&format!("/v1/queues/{queue}/schedules/{name}"), token)
        .await;
    assert_eq!(response.status(), 200, "schedule {name} not readable");
    body(response).await
}

fn millis(rfc3339: &Value) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339.as_str().expect("a time"))
        .expect("RFC 3339")
        .timestamp_millis()
}

#[actix_web::test]
async fn a_one_second_schedule_run_by_two_processes_publishes_each_tick_once() {
    let settings = test_settings();
    let first = OrderlyProcess::start(&settings).await;
    let second = OrderlyProcess::start(&settings).await;
    let apps = [
        first.client(&settings).await,
        second.client(&settings).await,
    ];
    let user = apps[0].signed_up_user().await;
    pull_queue(&apps[0], &user.token, "ticks").await;
    let payload = json!({"report": "hourly", "n": [1, 2, 3]});
    let created = put_schedule(
        &apps[1],
        &user.token,
        "ticks",
        "every-second",
        &json!({"cron": EVERY_SECOND, "timezone": "UTC", "payload": payload}),
    )
    .await;
    assert_eq!(created.status(), 201);

    // Five seconds of ticks; meanwhile both processes' listings are read
    // every 100 ms, so every tick's (time, job) is seen.
    let mut seen: BTreeMap<i64, HashSet<String>> = BTreeMap::new();
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < Duration::from_secs(5) {
        turn += 1;
        let view = schedule(&apps[turn % 2], &user.token, "ticks", "every-second").await;
        if let Some(job) = view["last_job_id"].as_str() {
            seen.entry(millis(&view["last_run_at"]))
                .or_default()
                .insert(job.to_owned());
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let paused = put_schedule(
        &apps[0],
        &user.token,
        "ticks",
        "every-second",
        &json!({"cron": EVERY_SECOND, "payload": payload, "paused": true}),
    )
    .await;
    assert_eq!(paused.status(), 200);
    let view = schedule(&apps[0], &user.token, "ticks", "every-second").await;
    if let Some(job) = view["last_job_id"].as_str() {
        seen.entry(millis(&view["last_run_at"]))
            .or_default()
            .insert(job.to_owned());
    }
    assert!(view["next_run_at"].is_null(), "paused: {view}");

    let jobs = apps[1].all_jobs(&user.token, "ticks", None).await;
    println!(
        "two processes, 5 s of a 1-second schedule: {} jobs, ticks seen {:?}",
        jobs.len(),
        seen.keys().collect::<Vec<_>>()
    );
    assert!(
        (4..=6).contains(&jobs.len()),
        "expected 5 ± 1 jobs, got {}",
        jobs.len()
    );
    for job in &jobs {
        assert_eq!(job["payload"], payload);
    }
    let ids: HashSet<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    for (tick, published) in &seen {
        assert_eq!(tick % 1000, 0, "ticks fall on whole seconds");
        assert_eq!(published.len(), 1, "tick {tick} has several jobs");
        assert!(ids.contains(published.iter().next().unwrap().as_str()));
    }
    let ticks: Vec<i64> = seen.keys().copied().collect();
    assert!(
        ticks.windows(2).all(|w| w[1] - w[0] == 1000),
        "a tick was skipped: {ticks:?}"
    );
    // A second job for one tick would be a job no tick names; only a tick
    // handled while the schedule was being paused may go unseen.
    assert!(
        jobs.len() <= seen.len() + 1,
        "{} jobs for {} ticks: a tick was published twice",
        jobs.len(),
        seen.len()
    );
}

#[actix_web::test]
async fn an_invalid_cron_or_time_zone_is_422_naming_the_field() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    let cases = [
        (json!({"cron": "61 * * * *", "payload": 1}), "cron"),
        (json!({"cron": "* * * *", "payload": 1}), "cron"),
        (json!({"cron": "0 0 0 1 1 * 2030", "payload": 1}), "cron"),
        (json!({"cron": "every day", "payload": 1}), "cron"),
        (
            json!({"cron": "*/5 * * * *", "timezone": "Mars/Olympus", "payload": 1}),
            "timezone",
        ),
        (
            json!({"cron": "*/5 * * * *", "catch_up": "all", "payload": 1}),
            "catch_up",
        ),
        (
            json!({"cron": "*/5 * * * *", "key": "k".repeat(129), "payload": 1}),
            "key",
        ),
    ];
    for (request, field) in cases {
        let response = put_schedule(&app, &user.token, "q", "s", &request).await;
        let error = error_body(response, 422, "validation_failed").await;
        assert!(
            error["fields"][field].is_string(),
            "{request} should name {field}: {error}"
        );
    }
    let listed = app
        .get_with_token("/v1/queues/q/schedules", &user.token)
        .await;
    assert_eq!(body(listed).await["schedules"], json!([]));
    // A valid schedule on a queue that does not exist: 404, like other queue routes.
    let response = put_schedule(
        &app,
        &user.token,
        "missing",
        "s",
        &json!({"cron": "*/5 * * * *", "payload": 1}),
    )
    .await;
    error_body(response, 404, "not_found").await;
}

#[actix_web::test]
async fn a_schedule_lists_its_next_run_last_run_and_last_job() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    let request = json!({"cron": EVERY_SECOND, "timezone": "Europe/Berlin",
        "payload": {"hello": "world"}, "key": "lane-a", "catch_up": "one"});
    let created = put_schedule(&app, &user.token, "q", "greet", &request).await;
    assert_eq!(created.status(), 201);
    let created = body(created).await;
    assert_eq!(created["name"], "greet");
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["catch_up"], "one");
    assert_eq!(created["payload"], json!({"hello": "world"}));
    assert!(created["last_run_at"].is_null() && created["last_job_id"].is_null());
    assert!(millis(&created["next_run_at"]) > Utc::now().timestamp_millis() - 1000);
    let replaced = put_schedule(&app, &user.token, "q", "greet", &request).await;
    assert_eq!(replaced.status(), 200);

    let listed = eventually(Duration::from_secs(10), "a tick is published", || async {
        let listed = body(
            app.get_with_token("/v1/queues/q/schedules", &user.token)
                .await,
        )
        .await;
        listed["schedules"][0]["last_job_id"]
            .is_string()
            .then_some(listed)
    })
    .await;
    let schedules = listed["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 1);
    let listed = &schedules[0];
    assert!(millis(&listed["next_run_at"]) > millis(&listed["last_run_at"]));
    let published = app
        .counter("orderly_schedule_ticks_total{outcome=\"published\"}")
        .await;
    assert!(published >= 1.0, "ticks counted: {published}");
    let job = app
        .job(&user.token, listed["last_job_id"].as_str().unwrap())
        .await;
    assert_eq!(job["payload"], json!({"hello": "world"}));
    assert_eq!(job["key"], "lane-a");
    assert_eq!(job["queue"], "q");

    // Another user sees neither the queue nor its schedules; a key without
    // the manage scope may not touch them.
    let other = app.signed_up_user().await;
    let response = app
        .get_with_token("/v1/queues/q/schedules/greet", &other.token)
        .await;
    error_body(response, 404, "not_found").await;
    let key = body(
        app.call(
            Method::POST,
            "/v1/auth/keys",
            &user.token,
            Some(&json!({"name": "p", "scopes": ["publish"]})),
        )
        .await,
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app.get_with_token("/v1/queues/q/schedules", &key).await;
    error_body(response, 403, "insufficient_scope").await;
}

/// How many jobs the queue holds.
async fn job_count(app: &TestApp, token: &str, queue: &str) -> usize {
    app.all_jobs(token, queue, None).await.len()
}

#[actix_web::test]
async fn a_deleted_schedule_publishes_nothing_more() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    let request = json!({"cron": EVERY_SECOND, "payload": null});
    assert_eq!(
        put_schedule(&app, &user.token, "q", "s", &request)
            .await
            .status(),
        201
    );
    eventually(Duration::from_secs(10), "a first tick", || async {
        (job_count(&app, &user.token, "q").await > 0).then_some(())
    })
    .await;
    let delete = || {
        app.call(
            Method::DELETE,
            "/v1/queues/q/schedules/s",
            &user.token,
            None,
        )
    };
    assert_eq!(delete().await.status(), 204);
    let response = app
        .get_with_token("/v1/queues/q/schedules/s", &user.token)
        .await;
    error_body(response, 404, "not_found").await;
    error_body(delete().await, 404, "not_found").await;
    // A tick being handled as the delete landed may still publish; after
    // that, three more ticks' worth of time must publish nothing.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    let after_delete = job_count(&app, &user.token, "q").await;
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(job_count(&app, &user.token, "q").await, after_delete);
}

#[actix_web::test]
async fn deleting_a_queue_deletes_its_schedules() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    let request = json!({"cron": "0 0 1 1 *", "payload": 1});
    assert_eq!(
        put_schedule(&app, &user.token, "q", "yearly", &request)
            .await
            .status(),
        201
    );
    let deleted = app
        .call(Method::DELETE, "/v1/queues/q", &user.token, None)
        .await;
    assert_eq!(deleted.status(), 204);
    let response = app
        .get_with_token("/v1/queues/q/schedules", &user.token)
        .await;
    error_body(response, 404, "not_found").await;
    pull_queue(&app, &user.token, "q").await;
    let listed = app
        .get_with_token("/v1/queues/q/schedules", &user.token)
        .await;
    assert_eq!(body(listed).await["schedules"], json!([]));
}

#[actix_web::test]
async fn ticks_missed_while_no_process_ran_publish_one_job_with_catch_up_one_and_none_with_none() {
    let settings = test_settings();
    let mut down = OrderlyProcess::start(&settings).await;
    let app = down.client(&settings).await;
    let user = app.signed_up_user().await;
    // Three ticks, 4 to 6 s from now: all of them fall while no process runs.
    let second = Utc::now().timestamp() + 4;
    let cron = format!(
        "{},{},{} * * * * *",
        second % 60,
        (second + 1) % 60,
        (second + 2) % 60
    );
    for policy in ["one", "none"] {
        pull_queue(&app, &user.token, policy).await;
        let request = json!({"cron": cron, "payload": {"policy": policy}, "catch_up": policy});
        let response = put_schedule(&app, &user.token, policy, "s", &request).await;
        assert_eq!(response.status(), 201);
        let view = body(response).await;
        assert_eq!(millis(&view["next_run_at"]), second * 1000, "{view}");
    }
    assert!(
        Utc::now().timestamp() < second,
        "the setup took too long: the first tick came before the process stopped"
    );
    down.kill9();
    drop(app);

    // Down until the last tick is older than a tick may be late (3 s), then
    // another process starts and handles what was missed.
    let last_tick = second + 2;
    while Utc::now().timestamp() < last_tick + 5 {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let up = OrderlyProcess::start(&settings).await;
    let app = up.client(&settings).await;
    let one = eventually(Duration::from_secs(15), "catch-up published", || async {
        let view = schedule(&app, &user.token, "one", "s").await;
        view["last_job_id"].is_string().then_some(view)
    })
    .await;
    assert_eq!(millis(&one["last_run_at"]), second * 1000);
    let none = eventually(Duration::from_secs(15), "missed ticks skipped", || async {
        let view = schedule(&app, &user.token, "none", "s").await;
        (millis(&view["next_run_at"]) > last_tick * 1000).then_some(view)
    })
    .await;
    assert!(none["last_run_at"].is_null(), "{none}");
    assert!(millis(&one["next_run_at"]) > last_tick * 1000, "{one}");

    let caught_up = app.all_jobs(&user.token, "one", None).await;
    assert_eq!(caught_up.len(), 1, "catch_up one: {caught_up:?}");
    assert_eq!(caught_up[0]["id"], one["last_job_id"]);
    assert_eq!(caught_up[0]["payload"], json!({"policy": "one"}));
    let skipped = app.all_jobs(&user.token, "none", None).await;
    assert_eq!(skipped.len(), 0, "catch_up none: {skipped:?}");
}

/// Writes `score` (ms) as schedule `id`'s next tick in the app's tick index.
async fn set_next_tick(app: &TestApp, id: &str, score: i64) {
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(format!("{}:{{sched}}:due", app.settings.redis.key_prefix))
        .arg(score)
        .arg(id);
    crate::helpers::redis_commands(app, &[zadd]).await;
}

/// Missed ticks are one step, however the ticks after them fall: a schedule
/// found 10 s behind (as after an outage) counts one `caught_up` (or one
/// `skipped`) tick, and a tick of the last 3 s — on time when it is found —
/// publishes as on time. It was left for the next sweep a second later, was
/// more than 3 s late by then, and counted as missed a second time.
#[actix_web::test]
async fn a_schedule_found_behind_catches_up_once_and_publishes_its_recent_ticks_on_time() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    // Two ticks a minute, 10 s and 2 s before now: no other tick falls
    // within the test (the next ones are a minute on).
    let now_s = Utc::now().timestamp();
    let cron = format!("{},{} * * * * *", (now_s - 10) % 60, (now_s - 2) % 60);
    for policy in ["one", "none"] {
        pull_queue(&app, &user.token, policy).await;
        let request = json!({"cron": cron, "payload": policy, "catch_up": policy});
        let response = put_schedule(&app, &user.token, policy, "s", &request).await;
        assert_eq!(response.status(), 201);
    }
    for policy in ["one", "none"] {
        set_next_tick(
            &app,
            &format!("{}:{policy}:s", user.id),
            (now_s - 10) * 1000,
        )
        .await;
    }
    for policy in ["one", "none"] {
        eventually(
            Duration::from_secs(15),
            "the missed tick handled",
            || async {
                let view = schedule(&app, &user.token, policy, "s").await;
                (millis(&view["next_run_at"]) > now_s * 1000).then_some(())
            },
        )
        .await;
    }
    let counted = |outcome: &'static str| {
        let app = &app;
        async move {
            app.counter(&format!(
                r#"orderly_schedule_ticks_total{{outcome="{outcome}"}}"#
            ))
            .await
        }
    };
    assert_eq!(
        counted("caught_up").await,
        1.0,
        "catch_up one: missed ticks are one step"
    );
    assert_eq!(
        counted("skipped").await,
        1.0,
        "catch_up none: missed ticks are one step"
    );
    let one = app.all_jobs(&user.token, "one", None).await;
    assert!(
        (1..=2).contains(&one.len()),
        "a catch-up job, and one on time at most: {one:?}"
    );
}

#[actix_web::test]
async fn schedules_tick_again_after_redis_lost_its_data() {
    // Its own Redis, so the test may flush it (a Redis restarted without
    // persistence: the tick index is gone, the definitions are in MongoDB).
    let redis = crate::helpers::TestRedis::start().await;
    let mut settings = test_settings();
    settings.redis.url = redis.url.clone();
    settings.redis.cluster_nodes.clear();
    let mut first = OrderlyProcess::start(&settings).await;
    let app = first.client(&settings).await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "ticks").await;
    let request = json!({"cron": EVERY_SECOND, "payload": {"n": 1}});
    let created = put_schedule(&app, &user.token, "ticks", "s", &request).await;
    assert_eq!(created.status(), 201);
    eventually(Duration::from_secs(15), "a first tick", || async {
        let view = schedule(&app, &user.token, "ticks", "s").await;
        view["last_job_id"].is_string().then_some(())
    })
    .await;
    first.kill9();
    drop(app);

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let flushed_at = Utc::now().timestamp_millis();

    let second = OrderlyProcess::start(&settings).await;
    let app = second.client(&settings).await;
    let view = eventually(Duration::from_secs(15), "ticks again", || async {
        let view = schedule(&app, &user.token, "ticks", "s").await;
        (view["last_job_id"].is_string() && millis(&view["last_run_at"]) > flushed_at)
            .then_some(view)
    })
    .await;
    assert!(view["next_run_at"].is_string(), "{view}");
    let jobs = app.all_jobs(&user.token, "ticks", None).await;
    assert!(
        jobs.iter().any(|j| j["id"] == view["last_job_id"]),
        "the tick's job is in the queue: {view}"
    );
}
