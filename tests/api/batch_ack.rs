//! Batch outcomes (§7.3): `POST /v1/queues/{queue}/ack` and `claim` with
//! `acks` / `nacks`.

use serde_json::{Value, json};

use crate::helpers::{TestApp, body, error_body, spawn_app};

/// A pull queue with fast retries.
async fn pull_queue(app: &TestApp, token: &str, name: &str) {
    let settings = json!({"max_attempts": 3, "backoff": {"initial_ms": 10, "max_ms": 10}});
    let response = app.put_queue(token, name, &settings).await;
    assert_eq!(response.status(), 201);
}

async fn post(app: &TestApp, token: &str, path: &str, request: Value) -> reqwest::Response {
    app.call(reqwest::Method::POST, path, token, Some(&request))
        .await
}

async fn claim(app: &TestApp, token: &str, queue: &str, request: Value) -> Value {
    let response = post(app, token, &format!("/v1/queues/{queue}/claim"), request).await;
    assert_eq!(response.status(), 200, "claim failed");
    body(response).await
}

fn jobs(reply: &Value) -> Vec<Value> {
    reply["jobs"].as_array().expect("jobs").clone()
}

fn id(job: &Value) -> &str {
    job["id"].as_str().unwrap()
}

fn lease(job: &Value) -> &str {
    job["lease"].as_str().unwrap()
}

/// The (id, status) pairs of a `results` array.
fn statuses(results: &Value) -> Vec<(String, String)> {
    results
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// An id of the right shape for `queue` that names no job.
fn unknown_id(queue: &str) -> String {
    format!("{}.{queue}", uuid::Uuid::now_v7().simple())
}

#[actix_web::test]
async fn mixed_outcomes_answer_per_item_in_request_order() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    for key in ["a", "b", "c", "d"] {
        app.publish_ok(&user.token, "q", &json!({"payload": key, "key": key}))
            .await;
    }
    let claimed = jobs(&claim(&app, &user.token, "q", json!({"max_jobs": 4})).await);
    assert_eq!(claimed.len(), 4);
    let (a, b, c, d) = (&claimed[0], &claimed[1], &claimed[2], &claimed[3]);
    // A lease of the right shape that is not c's live lease: stale.
    let stale = format!("{}.{}", 0, "0".repeat(32));
    let missing = unknown_id("q");
    let request = json!({
        "acks": [
            {"id": id(c), "lease": stale},
            {"id": id(a), "lease": lease(a), "result": {"ok": 1}},
            {"id": missing, "lease": lease(a)},
        ],
        "nacks": [
            {"id": id(b), "lease": lease(b), "error": "boom", "retry_in_ms": 0},
            {"id": id(d), "lease": lease(d)},
        ],
    });
    let response = post(&app, &user.token, "/v1/queues/q/ack", request).await;
    assert_eq!(response.status(), 200);
    let reply = body(response).await;
    let expected: Vec<(String, String)> = [
        (id(c), "lease_lost"),
        (id(a), "completed"),
        (missing.as_str(), "not_found"),
        (id(b), "retrying"),
        (id(d), "retrying"),
    ]
    .iter()
    .map(|(i, s)| (i.to_string(), s.to_string()))
    .collect();
    assert_eq!(statuses(&reply["results"]), expected);

    let a_now = app.job(&user.token, id(a)).await;
    assert_eq!(a_now["state"], "completed");
    assert_eq!(a_now["result"], json!({"ok": 1}));
    let b_now = app.job(&user.token, id(b)).await;
    assert_eq!(b_now["last_error"], "boom");
    // The stale lease changed nothing: c is still leased.
    assert_eq!(app.job(&user.token, id(c)).await["state"], "active");
}

#[actix_web::test]
async fn a_batch_ack_lets_the_next_job_of_the_lane_start() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    let mut published = Vec::new();
    for n in 0..3 {
        let job = app
            .publish_ok(&user.token, "q", &json!({"payload": n, "key": "lane"}))
            .await;
        published.push(id(&job).to_owned());
    }
    let mut order = Vec::new();
    let mut reply = claim(&app, &user.token, "q", json!({"wait_ms": 2000})).await;
    while let Some(job) = jobs(&reply).first() {
        order.push(id(job).to_owned());
        // Nothing else of the lane starts while its head is leased.
        let none = claim(&app, &user.token, "q", json!({"max_jobs": 10})).await;
        assert!(jobs(&none).is_empty(), "a second job of the lane started");
        let acks = json!({"acks": [{"id": id(job), "lease": lease(job)}]});
        let response = post(&app, &user.token, "/v1/queues/q/ack", acks).await;
        assert_eq!(body(response).await["results"][0]["status"], "completed");
        reply = claim(&app, &user.token, "q", json!({"wait_ms": 200})).await;
    }
    assert_eq!(order, published);
}

#[actix_web::test]
async fn claim_reports_outcomes_first_then_leases_the_next_head() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    let first = app
        .publish_ok(&user.token, "q", &json!({"payload": 1, "key": "k"}))
        .await;
    let second = app
        .publish_ok(&user.token, "q", &json!({"payload": 2, "key": "k"}))
        .await;
    let reply = claim(&app, &user.token, "q", json!({})).await;
    assert!(reply.get("results").is_none(), "no outcomes, no results");
    let head = &jobs(&reply)[0];
    assert_eq!(id(head), id(&first));

    // Acking the head in the same request lets its successor be claimed.
    let request = json!({
        "wait_ms": 2000,
        "acks": [{"id": id(head), "lease": lease(head), "result": "done"}],
    });
    let reply = claim(&app, &user.token, "q", request).await;
    assert_eq!(
        statuses(&reply["results"]),
        vec![(id(head).to_owned(), "completed".to_owned())]
    );
    let next = &jobs(&reply)[0];
    assert_eq!(id(next), id(&second));

    // A nack reported with a claim retries the job at the head of its lane.
    let request = json!({
        "wait_ms": 2000,
        "nacks": [{"id": id(next), "lease": lease(next), "retry_in_ms": 0}],
    });
    let reply = claim(&app, &user.token, "q", request).await;
    assert_eq!(reply["results"][0]["status"], "retrying");
    let again = &jobs(&reply)[0];
    assert_eq!(id(again), id(&second));
    assert_eq!(again["attempts"], 2);
}

#[actix_web::test]
async fn more_than_1000_outcomes_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    app.publish_ok(&user.token, "q", &json!({"payload": 1}))
        .await;
    let job = jobs(&claim(&app, &user.token, "q", json!({})).await).remove(0);
    let mut acks = vec![json!({"id": id(&job), "lease": lease(&job)})];
    let filler = json!({"id": unknown_id("q"), "lease": "1.abc"});
    acks.extend(std::iter::repeat_n(filler.clone(), 500));
    let nacks = vec![filler; 500];
    let request = json!({"acks": acks, "nacks": nacks});
    let response = post(&app, &user.token, "/v1/queues/q/ack", request.clone()).await;
    error_body(response, 422, "validation_failed").await;
    let claim_path = "/v1/queues/q/claim";
    let response = post(&app, &user.token, claim_path, request).await;
    error_body(response, 422, "validation_failed").await;
    assert_eq!(app.job(&user.token, id(&job)).await["state"], "active");
}

#[actix_web::test]
async fn malformed_outcomes_are_refused_with_the_offending_field() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    let path = "/v1/queues/q/ack";
    let some_id = unknown_id("q");
    let cases = [
        (json!({"acks": [{"id": some_id}]}), "acks[0]"),
        (
            json!({"acks": [{"id": some_id, "lease": "x"}]}),
            "acks[0].lease",
        ),
        (json!({"acks": {"id": some_id}}), "acks"),
        (json!({"acks": [], "extra": 1}), "extra"),
        (
            json!({"nacks": [{"id": some_id, "lease": 7}]}),
            "nacks[0].lease",
        ),
        (
            json!({"nacks": [{"id": some_id, "lease": "1.a", "retry_in_ms": u64::MAX}]}),
            "nacks[0].retry_in_ms",
        ),
        (
            json!({"nacks": [{"id": some_id, "lease": "1.a", "bogus": true}]}),
            "nacks[0]",
        ),
    ];
    for (request, field) in cases {
        let response = post(&app, &user.token, path, request.clone()).await;
        let error = error_body(response, 422, "validation_failed").await;
        let fields = error["fields"].as_object().expect("fields");
        assert!(
            fields.keys().any(|k| k.starts_with(field)),
            "{request}: expected a reason for {field}, got {fields:?}"
        );
    }
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body("{\"acks\": [")
        .send()
        .await
        .unwrap();
    error_body(response, 400, "invalid_json").await;
    let response = post(&app, &user.token, "/v1/queues/none/ack", json!({})).await;
    error_body(response, 404, "not_found").await;
}

#[actix_web::test]
async fn an_empty_report_answers_no_results() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue(&app, &user.token, "q").await;
    let response = post(&app, &user.token, "/v1/queues/q/ack", json!({})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await, json!({"results": []}));
}
