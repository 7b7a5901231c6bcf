//! `/metrics`: request counts and durations by route pattern, and the
//! in-flight gauge.

use std::io::Write;
use std::time::Duration;

use crate::helpers::{eventually, spawn_app};

fn gauge_value(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
}

#[actix_web::test]
async fn requests_are_counted_by_route_pattern_not_raw_path() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    assert_eq!(
        app.get_with_token("/v1/auth/me", &user.token)
            .await
            .status(),
        200
    );
    assert_eq!(app.get("/v1/jobs/some-raw-id-123").await.status(), 401);
    assert_eq!(app.get("/v1/nowhere/raw-path-456").await.status(), 404);
    let text = app.metrics_text().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("orderly_http_requests_total{")
                && l.contains(r#"endpoint="/v1/auth/me""#)
                && l.contains(r#"method="GET""#)
                && l.contains(r#"status="200""#)),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("orderly_http_requests_duration_seconds_bucket{")
                && l.contains(r#"endpoint="/v1/auth/login""#)
        ),
        "{text}"
    );
    assert!(text.contains(r#"endpoint="unmatched""#), "{text}");
    assert!(text.contains(r#"endpoint="/v1/jobs/{id}""#), "{text}");
    assert!(
        !text.contains("raw-path-456"),
        "raw path leaked into labels"
    );
    assert!(
        !text.contains("some-raw-id-123"),
        "raw path leaked into labels"
    );
    assert!(!text.contains(&user.id), "user id leaked into labels");
}

/// Any token is a method to HTTP; the request metrics name those outside
/// the standard set `OTHER`, so made-up methods add no series (label values
/// stay bounded). The answers are the usual 405 / 404.
#[actix_web::test]
async fn made_up_methods_are_counted_as_other() {
    let app = spawn_app().await;
    for n in 0..20 {
        let method = reqwest::Method::from_bytes(format!("M{n:06}").as_bytes()).unwrap();
        let known = app
            .client
            .request(method.clone(), app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(known.status(), 405);
        assert_eq!(known.headers()["allow"], "GET, HEAD");
        let unknown = app
            .client
            .request(method, app.url("/nowhere"))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
    }
    let text = app.metrics_text().await;
    assert!(
        !text.contains("method=\"M0"),
        "made-up methods became labels"
    );
    let counted = |endpoint: &str, status: &str| {
        text.lines().any(|l| {
            l.starts_with("orderly_http_requests_total{")
                && l.contains(&format!("endpoint=\"{endpoint}\""))
                && l.contains("method=\"OTHER\"")
                && l.contains(&format!("status=\"{status}\""))
                && l.ends_with(" 20")
        })
    };
    assert!(counted("/healthz", "405"), "{text}");
    assert!(counted("unmatched", "404"), "{text}");
}

/// Each error is counted under the status the client got: a query string
/// that does not parse answered `422` but was counted as the extractor's
/// `400` (the error was turned into its contract form outside the metrics).
#[actix_web::test]
async fn error_responses_are_counted_under_the_status_the_client_got() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    app.publish_ok(&user.token, "q", &serde_json::json!({"payload": 1}))
        .await;
    let send = |method: reqwest::Method, path: &str, body: Option<&'static str>| {
        let mut request = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&user.token);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        request.send()
    };
    let cases = [
        (
            reqwest::Method::GET,
            "/v1/queues/q/jobs?after=xyz",
            None,
            422,
            "/v1/queues/{queue}/jobs",
        ),
        (
            reqwest::Method::GET,
            "/v1/queues/q/lanes?limit=-1",
            None,
            422,
            "/v1/queues/{queue}/lanes",
        ),
        (
            reqwest::Method::POST,
            "/v1/queues/q/jobs",
            Some("{"),
            400,
            "/v1/queues/{queue}/jobs",
        ),
        (
            reqwest::Method::POST,
            "/v1/queues/q/jobs",
            Some(r#"{"payload": 1, "extra": 2}"#),
            422,
            "/v1/queues/{queue}/jobs",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/auth/me",
            None,
            405,
            "/v1/auth/me",
        ),
    ];
    for (method, path, body, status, endpoint) in cases {
        let response = send(method.clone(), path, body).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let text = app.metrics_text().await;
        let counted = text.lines().any(|l| {
            l.starts_with("orderly_http_requests_total{")
                && l.contains(&format!(r#"endpoint="{endpoint}""#))
                && l.contains(&format!(r#"method="{method}""#))
                && l.contains(&format!(r#"status="{status}""#))
        });
        assert!(
            counted,
            "{method} {path}: no count under status {status}:\n{text}"
        );
    }
}

#[actix_web::test]
async fn the_in_flight_gauge_counts_requests_being_handled() {
    let app = spawn_app().await;
    // The scrape itself is in flight while the gauge is read.
    let in_flight = || async {
        gauge_value(&app.metrics_text().await, "orderly_http_requests_in_flight").map(|n| n - 1)
    };
    assert_eq!(in_flight().await, Some(0));
    // A request whose body never finishes stays in flight.
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stalled,
        "POST /v1/auth/login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"email\""
    )
    .unwrap();
    eventually(
        Duration::from_secs(5),
        "gauge shows the stalled request",
        || async { (in_flight().await == Some(1)).then_some(()) },
    )
    .await;
    drop(stalled);
    eventually(Duration::from_secs(5), "gauge returns to 0", || async {
        (in_flight().await == Some(0)).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn every_metric_the_grafana_dashboard_queries_exists() {
    let app = spawn_app().await;
    app.signed_up_user().await;
    let text = app.metrics_text().await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/orderly.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("orderly_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "the dashboard queries {name}, which /metrics does not expose"
        );
    }
}
