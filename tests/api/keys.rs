//! API keys (§7.6): created and listed by users, shown once, stored hashed,
//! scoped to operations and queues, refused once expired or revoked — in
//! every process within 2 seconds.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, body, error_body, eventually, spawn_app, spawn_app_with};

/// Creates a key as `token`'s user and returns the `201` body.
async fn create_key(app: &TestApp, token: &str, request: Value) -> Value {
    let response = app
        .call(Method::POST, "/v1/auth/keys", token, Some(&request))
        .await;
    assert_eq!(response.status(), 201, "key not created");
    body(response).await
}

/// A `manage` key of `token`'s user: the `201` body and the secret.
async fn manage_key(app: &TestApp, token: &str) -> (Value, String) {
    let created = create_key(app, token, json!({"name": "k", "scopes": ["manage"]})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    (created, key)
}

async fn list_keys(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get_with_token("/v1/auth/keys", token).await;
    assert_eq!(response.status(), 200);
    body(response).await["keys"].as_array().unwrap().clone()
}

/// A pull queue `name` of the user, with one published job.
async fn pull_queue_with_a_job(app: &TestApp, token: &str, name: &str) {
    let response = app
        .put_queue(token, name, &json!({"delivery": {"mode": "pull"}}))
        .await;
    assert_eq!(response.status(), 201);
    app.publish_ok(token, name, &json!({"payload": {"n": 1}}))
        .await;
}

async fn claim(app: &TestApp, token: &str, queue: &str) -> reqwest::Response {
    app.call(
        Method::POST,
        &format!("/v1/queues/{queue}/claim"),
        token,
        Some(&json!({})),
    )
    .await
}

#[actix_web::test]
async fn a_created_key_is_shown_once_and_stored_only_as_its_sha256() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let created = create_key(
        &app,
        &user.token,
        json!({"name": "billing", "scopes": ["publish"], "queues": ["*"]}),
    )
    .await;
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("ok_") && key.len() >= 3 + 43, "{key}");
    assert_eq!(created["name"], "billing");
    assert_eq!(created["scopes"], json!(["publish"]));
    assert_eq!(created["queues"], json!(["*"]));
    assert!(created["last_used_at"].is_null());

    let listed = list_keys(&app, &user.token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);
    assert!(listed[0].get("key").is_none(), "listing leaks the secret");
    assert!(!listed[0].to_string().contains(key));

    let stored = app
        .db
        .collection::<mongodb::bson::Document>("api_keys")
        .find_one(mongodb::bson::doc! {})
        .await
        .unwrap()
        .expect("the key is stored");
    assert_eq!(
        stored.get_str("hash").unwrap(),
        hex::encode(Sha256::digest(key.as_bytes()))
    );
    assert!(!stored.to_string().contains(key), "the secret is stored");
}

#[actix_web::test]
async fn a_deleted_key_is_gone_and_refused() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let (created, key) = manage_key(&app, &user.token).await;
    let key = key.as_str();
    assert_eq!(app.get_with_token("/v1/queues", key).await.status(), 200);

    let path = format!("/v1/auth/keys/{}", created["id"].as_str().unwrap());
    let deleted = app.call(Method::DELETE, &path, &user.token, None).await;
    assert_eq!(deleted.status(), 204);
    assert!(list_keys(&app, &user.token).await.is_empty());
    error_body(
        app.get_with_token("/v1/queues", key).await,
        401,
        "unauthorized",
    )
    .await;
    let again = app.call(Method::DELETE, &path, &user.token, None).await;
    error_body(again, 404, "not_found").await;
}

#[actix_web::test]
async fn another_users_key_cannot_be_seen_or_deleted() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let stranger = app.signed_up_user().await;
    let created = create_key(
        &app,
        &owner.token,
        json!({"name": "k", "scopes": ["publish"]}),
    )
    .await;
    let path = format!("/v1/auth/keys/{}", created["id"].as_str().unwrap());
    let response = app.call(Method::DELETE, &path, &stranger.token, None).await;
    error_body(response, 404, "not_found").await;
    assert!(list_keys(&app, &stranger.token).await.is_empty());
    assert_eq!(list_keys(&app, &owner.token).await.len(), 1);
}

#[actix_web::test]
async fn a_consume_key_for_one_queue_claims_and_acks_there_and_nothing_else() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue_with_a_job(&app, &user.token, "work").await;
    pull_queue_with_a_job(&app, &user.token, "other").await;
    let created = create_key(
        &app,
        &user.token,
        json!({"name": "worker", "scopes": ["consume"], "queues": ["work"]}),
    )
    .await;
    let key = created["key"].as_str().unwrap();

    let claimed = claim(&app, key, "work").await;
    assert_eq!(claimed.status(), 200);
    let job = body(claimed).await["jobs"][0].clone();
    let ack = app
        .call(
            Method::POST,
            &format!("/v1/jobs/{}/ack", job["id"].as_str().unwrap()),
            key,
            Some(&json!({"lease": job["lease"]})),
        )
        .await;
    assert_eq!(ack.status(), 200);
    assert_eq!(body(ack).await["state"], "completed");

    let publish = app.publish(key, "work", &json!({"payload": 1})).await;
    error_body(publish, 403, "insufficient_scope").await;
    error_body(claim(&app, key, "other").await, 403, "insufficient_scope").await;
    let settings = app.get_with_token("/v1/queues/work", key).await;
    error_body(settings, 403, "insufficient_scope").await;
}

#[actix_web::test]
async fn a_key_answers_403_outside_its_scopes_and_queues() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    pull_queue_with_a_job(&app, &user.token, "mine").await;
    let created = create_key(
        &app,
        &user.token,
        json!({"name": "producer", "scopes": ["publish"], "queues": ["mine"]}),
    )
    .await;
    let key = created["key"].as_str().unwrap();
    let job = app.publish_ok(key, "mine", &json!({"payload": 2})).await;
    assert_eq!(app.job(key, job["id"].as_str().unwrap()).await["seq"], 2);

    error_body(claim(&app, key, "mine").await, 403, "insufficient_scope").await;
    let dead = app.get_with_token("/v1/queues/mine/dead", key).await;
    error_body(dead, 403, "insufficient_scope").await;
    let elsewhere = app.publish(key, "yours", &json!({"payload": 1})).await;
    error_body(elsewhere, 403, "insufficient_scope").await;
}

#[actix_web::test]
async fn keys_never_manage_keys_or_users() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let created = create_key(
        &app,
        &user.token,
        json!({"name": "all", "scopes": ["publish", "consume", "manage"]}),
    )
    .await;
    let key = created["key"].as_str().unwrap();
    let request = json!({"name": "child", "scopes": ["manage"]});
    let response = app
        .call(Method::POST, "/v1/auth/keys", key, Some(&request))
        .await;
    error_body(response, 403, "insufficient_scope").await;
    let listing = app.get_with_token("/v1/auth/keys", key).await;
    error_body(listing, 403, "insufficient_scope").await;
    let me = app.get_with_token("/v1/auth/me", key).await;
    error_body(me, 403, "insufficient_scope").await;
}

#[actix_web::test]
async fn an_unknown_key_is_401() {
    let app = spawn_app().await;
    let forged = format!("ok_{}", "0".repeat(64));
    let response = app.get_with_token("/v1/queues", &forged).await;
    let error = error_body(response, 401, "unauthorized").await;
    assert!(error["message"].as_str().unwrap().contains("key"));
}

#[actix_web::test]
async fn an_expired_key_is_401() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let expires_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let created = create_key(
        &app,
        &user.token,
        json!({"name": "brief", "scopes": ["manage"], "expires_at": expires_at.to_rfc3339()}),
    )
    .await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.get_with_token("/v1/queues", key).await.status(), 200);
    // Polled until refused as unauthorized (a busy machine may answer a
    // transient 503 meanwhile; that is not what this test is about).
    let response = eventually(Duration::from_secs(5), "the key expires", || async {
        let response = app.get_with_token("/v1/queues", key).await;
        (response.status() == 401).then_some(response)
    })
    .await;
    assert!(
        chrono::Utc::now() >= expires_at,
        "refused before it expired"
    );
    let error = error_body(response, 401, "unauthorized").await;
    assert!(error["message"].as_str().unwrap().contains("expired"));
}

#[actix_web::test]
async fn a_revoked_key_is_refused_by_another_process_within_2_seconds() {
    let first = spawn_app().await;
    let second = spawn_app_with(|settings| *settings = first.settings.clone()).await;
    let user = first.signed_up_user().await;
    let (created, key) = manage_key(&first, &user.token).await;
    let key = key.as_str();
    // The second process has verified (and cached) the key.
    assert_eq!(second.get_with_token("/v1/queues", key).await.status(), 200);
    assert_eq!(second.get_with_token("/v1/queues", key).await.status(), 200);

    let path = format!("/v1/auth/keys/{}", created["id"].as_str().unwrap());
    let revoked = first.call(Method::DELETE, &path, &user.token, None).await;
    assert_eq!(revoked.status(), 204);
    let revoked_at = Instant::now();
    eventually(
        Duration::from_secs(2),
        "the second process refuses the key",
        || async {
            let status = second.get_with_token("/v1/queues", key).await.status();
            (status == 401).then_some(())
        },
    )
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
}

#[actix_web::test]
async fn invalid_key_requests_are_422_per_field() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let request = json!({"name": "", "scopes": [], "queues": ["Not A Queue"]});
    let response = app
        .call(Method::POST, "/v1/auth/keys", &user.token, Some(&request))
        .await;
    let error = error_body(response, 422, "validation_failed").await;
    for field in ["name", "scopes", "queues[0]"] {
        assert!(error["fields"][field].is_string(), "{field}: {error}");
    }
    let unknown_scope = json!({"name": "k", "scopes": ["admin"]});
    let response = app
        .call(
            Method::POST,
            "/v1/auth/keys",
            &user.token,
            Some(&unknown_scope),
        )
        .await;
    let error = error_body(response, 422, "validation_failed").await;
    assert!(error["fields"]["scopes[0]"].is_string(), "{error}");
}

#[actix_web::test]
async fn a_used_key_records_when_it_was_last_used() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let (_, key) = manage_key(&app, &user.token).await;
    let key = key.as_str();
    assert_eq!(app.get_with_token("/v1/queues", key).await.status(), 200);
    eventually(Duration::from_secs(5), "last_used_at is set", || async {
        let keys = list_keys(&app, &user.token).await;
        keys[0]["last_used_at"].as_str().map(str::to_owned)
    })
    .await;
}

#[actix_web::test]
async fn a_key_restricted_to_some_queues_lists_only_those() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    for name in ["seen", "hidden"] {
        let response = app.put_queue(&user.token, name, &json!({})).await;
        assert_eq!(response.status(), 201);
    }
    let created = create_key(
        &app,
        &user.token,
        json!({"name": "ops", "scopes": ["manage"], "queues": ["seen"]}),
    )
    .await;
    let listed = body(
        app.get_with_token("/v1/queues", created["key"].as_str().unwrap())
            .await,
    )
    .await;
    let names: Vec<&str> = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["seen"]);
}

/// A refused use is no use: a key created already expired is answered 401
/// and keeps `last_used_at` empty (a key let in, used after it, has its use
/// recorded — the sign the writes were made).
#[actix_web::test]
async fn an_expired_key_refused_does_not_record_a_use() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let past = chrono::Utc::now() - chrono::Duration::seconds(60);
    let expired = create_key(
        &app,
        &user.token,
        json!({"name": "old", "scopes": ["manage"], "expires_at": past.to_rfc3339()}),
    )
    .await;
    let refused = app
        .get_with_token("/v1/queues", expired["key"].as_str().unwrap())
        .await;
    error_body(refused, 401, "unauthorized").await;
    let (valid, key) = manage_key(&app, &user.token).await;
    assert_eq!(app.get_with_token("/v1/queues", &key).await.status(), 200);
    let keys = eventually(Duration::from_secs(5), "the valid key's use", || async {
        let keys = list_keys(&app, &user.token).await;
        keys.iter()
            .any(|k| k["id"] == valid["id"] && k["last_used_at"].is_string())
            .then_some(keys)
    })
    .await;
    let old = keys.iter().find(|k| k["id"] == expired["id"]).unwrap();
    assert!(old["last_used_at"].is_null(), "{old}");
}
