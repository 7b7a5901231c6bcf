//! Liveness and readiness.

use std::time::{Duration, Instant};

use crate::helpers::{TestRedis, body, closed_port, error_body, spawn_app, spawn_app_with};

#[actix_web::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["status"], "ok");
}

#[actix_web::test]
async fn readyz_is_200_when_redis_and_mongodb_answer() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let ready = body(response).await;
    assert_eq!(ready["checks"]["redis"], "ok");
    assert_eq!(ready["checks"]["mongodb"], "ok");
}

#[actix_web::test]
async fn readyz_is_503_naming_mongodb_when_it_is_down_and_answers_fast() {
    let port = closed_port();
    let app = spawn_app_with(|s| s.mongodb.uri = format!("mongodb://127.0.0.1:{port}")).await;
    let started = Instant::now();
    let response = app.get("/readyz").await;
    let elapsed = started.elapsed();
    let error = error_body(response, 503, "unavailable").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("mongodb"), "{message}");
    assert!(!message.contains("redis"), "{message}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    // Liveness does not depend on MongoDB.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[actix_web::test]
async fn register_is_503_while_mongodb_is_down() {
    let port = closed_port();
    let app = spawn_app_with(|s| s.mongodb.uri = format!("mongodb://127.0.0.1:{port}")).await;
    let response = app.register("ivy@example.com", "password1").await;
    error_body(response, 503, "unavailable").await;
}

#[actix_web::test]
async fn readyz_warns_when_redis_may_evict_jobs() {
    let redis = TestRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url.clone()).await;
    let ready = body(app.get("/readyz").await).await;
    assert!(ready.get("warnings").is_none(), "{ready}");

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let ready = body(response).await;
    let warning = ready["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("allkeys-lru"), "{ready}");
}
