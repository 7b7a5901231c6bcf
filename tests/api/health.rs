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

/// The binary takes no arguments: `--help` prints how it is configured and
/// exits 0 without starting (it started the server), an unknown argument is
/// refused with exit code 2.
#[actix_web::test]
async fn help_prints_usage_and_an_unknown_argument_is_refused_without_starting() {
    for (arg, code, says) in [
        ("--help", 0, "ORDERLY_ENV"),
        ("--bogus", 2, "unexpected argument"),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orderly"));
        // (A port in use: had it tried to start, it would say so and exit 1.)
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        command.arg(arg).env("ORDERLY_ENV", "test").env(
            "ORDERLY__SERVER__PORT",
            taken.local_addr().unwrap().port().to_string(),
        );
        let output = actix_web::rt::time::timeout(
            Duration::from_secs(30),
            actix_web::rt::task::spawn_blocking(move || command.output()),
        )
        .await
        .expect("it answers at once")
        .unwrap()
        .expect("the binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(code), "{arg}: {text}");
        assert!(text.contains(says), "{arg}: {text}");
        assert!(!text.contains("listening"), "{arg}: {text}");
    }
}

/// A port in use is a clean refusal: exit code 1 and one line saying why,
/// no panic from actors torn down half-started.
#[actix_web::test]
async fn a_port_in_use_is_refused_with_one_error_and_no_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orderly"));
    command
        .env("ORDERLY_ENV", "test")
        .env("ORDERLY_CONFIG_DIR", config)
        .env("ORDERLY__SERVER__PORT", port.to_string())
        .env("RUST_LOG", "info");
    let output = actix_web::rt::time::timeout(
        Duration::from_secs(30),
        actix_web::rt::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the refusal comes at once")
    .unwrap()
    .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}
