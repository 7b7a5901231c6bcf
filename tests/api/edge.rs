//! The JSON error contract at the HTTP edge, and request ids.

use crate::helpers::{error_body, spawn_app, spawn_app_with};

#[actix_web::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;
    for raw in [&b"{\"email\": "[..], b"not json", b"\xff\xfe{}", b"{} {}"] {
        let response = app
            .client
            .post(app.url("/v1/auth/register"))
            .header("Content-Type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        error_body(response, 400, "invalid_json").await;
    }
}

#[actix_web::test]
async fn a_non_json_content_type_is_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/auth/register"))
        .header("Content-Type", "text/plain")
        .body(r#"{"email":"a@example.com","password":"password1"}"#)
        .send()
        .await
        .unwrap();
    error_body(response, 415, "unsupported_media_type").await;
}

#[actix_web::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(|s| s.server.body_limit_bytes = 1024).await;
    let big = serde_json::json!({"email": "a@example.com", "password": "p".repeat(2048)});
    let response = app.post_json("/v1/auth/register", &big).await;
    error_body(response, 413, "payload_too_large").await;
}

#[actix_web::test]
async fn unknown_routes_are_404_json() {
    let app = spawn_app().await;
    error_body(app.get("/v1/nowhere/42").await, 404, "not_found").await;
    let response = app
        .client
        .delete(app.url("/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert!(matches!(response.status().as_u16(), 404 | 405));
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let app = spawn_app().await;
    for path in ["/healthz", "/metrics", "/v1/auth/me", "/no-such-route"] {
        let response = app.get(path).await;
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert!(!id.is_empty(), "{path}");
    }
    let response = app
        .client
        .get(app.url("/v1/auth/me"))
        .header("X-Request-Id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
    let error = error_body(response, 401, "unauthorized").await;
    assert_eq!(error["request_id"], "client-chosen-42");
    // Ids that could forge log lines are replaced.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "bad id\twith spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "bad id\twith spaces");
}
