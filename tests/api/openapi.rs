//! `/openapi.json` and `/docs`: the document is valid OpenAPI 3.1, names
//! every registered route, and real responses match its schemas.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TempDir, TestApp, body, spawn_app};

/// Runs `scripts/openapi_check.py` with the Python that scripts/test.sh
/// prepared (`ORDERLY_TEST_OPENAPI_PYTHON`, a venv with openapi-spec-validator).
fn check_with_python(spec: &Value, samples: &[Value]) {
    let python = std::env::var("ORDERLY_TEST_OPENAPI_PYTHON").expect(
        "ORDERLY_TEST_OPENAPI_PYTHON names a Python with openapi-spec-validator (scripts/test.sh sets it)",
    );
    let dir = TempDir::new();
    let spec_file = dir.0.join("openapi.json");
    let samples_file = dir.0.join("samples.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    std::fs::write(&samples_file, Value::from(samples.to_vec()).to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/openapi_check.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(&spec_file)
        .arg(&samples_file)
        .output()
        .expect("the checker runs");
    assert!(
        output.status.success(),
        "openapi_check.py failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn served_spec(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    body(response).await
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{queue}", "routecheck")
        .replace("{id}", "nope")
        .replace("{asset}", "init.js")
}

#[actix_web::test]
async fn every_registered_route_is_in_the_document_and_answers() {
    let app = spawn_app().await;
    let spec = served_spec(&app).await;
    let paths = spec["paths"].as_object().expect("paths");
    let described: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        described,
        orderly::routes::ROUTES.len(),
        "document and route table differ in size"
    );

    for (method, pattern) in orderly::routes::ROUTES {
        assert!(
            spec["paths"][*pattern][*method].is_object(),
            "{method} {pattern} is registered but not in /openapi.json"
        );
        // The route is really served: not the no-route fallback, not a 405.
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = app
            .client
            .request(method.clone(), app.url(&concrete(pattern)))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {pattern}: {text}");
        assert!(
            !(status == 404 && text.contains("no such route")),
            "{method} {pattern} is in the table but not routed: {text}"
        );
    }
    // A method the table does not list for a known path is refused.
    let response = app
        .client
        .patch(app.url("/v1/queues/routecheck"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

/// Records a real response for the schema check and returns its body.
async fn record(
    samples: &mut Vec<Value>,
    method: &str,
    pattern: &str,
    response: reqwest::Response,
) -> Value {
    let status = response.status().as_u16();
    let body = body(response).await;
    samples.push(json!({"method": method, "path": pattern, "status": status, "body": body}));
    body
}

#[actix_web::test]
async fn the_document_is_valid_and_real_responses_match_it() {
    let app = spawn_app().await;
    let mut s = Vec::new();
    record(&mut s, "get", "/healthz", app.get("/healthz").await).await;
    record(&mut s, "get", "/readyz", app.get("/readyz").await).await;
    let creds = json!({"email": "spec@example.com", "password": "correct horse"});
    record(
        &mut s,
        "post",
        "/v1/auth/register",
        app.post_json("/v1/auth/register", &creds).await,
    )
    .await;
    record(
        &mut s,
        "post",
        "/v1/auth/register",
        app.post_json("/v1/auth/register", &creds).await,
    )
    .await;
    let bad = json!({"email": "nope", "password": "x"});
    record(
        &mut s,
        "post",
        "/v1/auth/register",
        app.post_json("/v1/auth/register", &bad).await,
    )
    .await;
    let wrong = json!({"email": "spec@example.com", "password": "wrong password"});
    record(
        &mut s,
        "post",
        "/v1/auth/login",
        app.post_json("/v1/auth/login", &wrong).await,
    )
    .await;
    let token = record(
        &mut s,
        "post",
        "/v1/auth/login",
        app.post_json("/v1/auth/login", &creds).await,
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    record(&mut s, "get", "/v1/auth/me", app.get("/v1/auth/me").await).await;
    record(
        &mut s,
        "get",
        "/v1/auth/me",
        app.get_with_token("/v1/auth/me", &token).await,
    )
    .await;

    let q = "/v1/queues/{queue}";
    let pull = json!({"max_attempts": 2, "backoff": {"initial_ms": 10, "max_ms": 10}});
    record(&mut s, "put", q, app.put_queue(&token, "work", &pull).await).await;
    record(&mut s, "put", q, app.put_queue(&token, "work", &pull).await).await;
    let push = json!({"delivery": {"mode": "push", "url": "http://127.0.0.1:9/hook"}});
    record(
        &mut s,
        "post",
        "/v1/queues/{queue}/pause",
        app.call(Method::POST, "/v1/queues/hooks/pause", &token, None)
            .await,
    )
    .await;
    record(
        &mut s,
        "put",
        q,
        app.put_queue(&token, "hooks", &push).await,
    )
    .await;
    record(
        &mut s,
        "post",
        "/v1/queues/{queue}/pause",
        app.call(Method::POST, "/v1/queues/hooks/pause", &token, None)
            .await,
    )
    .await;
    record(
        &mut s,
        "put",
        q,
        app.put_queue(&token, "work", &json!({"lease_ms": 1})).await,
    )
    .await;

    let jobs = "/v1/queues/{queue}/jobs";
    let published = record(
        &mut s,
        "post",
        jobs,
        app.publish(&token, "work", &json!({"payload": {"n": 1}, "key": "a"}))
            .await,
    )
    .await;
    for _ in 0..2 {
        let keyed = app
            .client
            .post(app.url("/v1/queues/work/jobs"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "k-1")
            .json(&json!({"payload": 2}))
            .send()
            .await
            .unwrap();
        record(&mut s, "post", jobs, keyed).await;
    }
    record(
        &mut s,
        "post",
        jobs,
        app.publish(&token, "work", &json!({"payload": 3, "delay_ms": 60000}))
            .await,
    )
    .await;
    record(
        &mut s,
        "post",
        jobs,
        app.publish(
            &token,
            "work",
            &json!({"payload": 3, "key": "k".repeat(200)}),
        )
        .await,
    )
    .await;
    let batch = json!({"jobs": [{"payload": "x", "key": "b"}, {"payload": [1, 2], "key": "b"}]});
    record(
        &mut s,
        "post",
        "/v1/queues/{queue}/jobs/batch",
        app.call(
            Method::POST,
            "/v1/queues/work/jobs/batch",
            &token,
            Some(&batch),
        )
        .await,
    )
    .await;
    record(
        &mut s,
        "get",
        jobs,
        app.get_with_token("/v1/queues/work/jobs?limit=2", &token)
            .await,
    )
    .await;
    record(
        &mut s,
        "get",
        jobs,
        app.get_with_token("/v1/queues/work/jobs?state=nope", &token)
            .await,
    )
    .await;
    record(
        &mut s,
        "get",
        q,
        app.get_with_token("/v1/queues/work", &token).await,
    )
    .await;
    record(
        &mut s,
        "get",
        q,
        app.get_with_token("/v1/queues/missing", &token).await,
    )
    .await;
    record(
        &mut s,
        "get",
        "/v1/queues",
        app.get_with_token("/v1/queues", &token).await,
    )
    .await;

    let id = published["id"].as_str().unwrap();
    let job = |suffix: &str| format!("/v1/jobs/{id}{suffix}");
    record(
        &mut s,
        "get",
        "/v1/jobs/{id}",
        app.get_with_token(&job(""), &token).await,
    )
    .await;
    record(
        &mut s,
        "get",
        "/v1/jobs/{id}",
        app.get_with_token("/v1/jobs/nope", &token).await,
    )
    .await;

    let claim = "/v1/queues/{queue}/claim";
    let claimed = record(
        &mut s,
        "post",
        claim,
        app.call(
            Method::POST,
            "/v1/queues/work/claim",
            &token,
            Some(&json!({"max_jobs": 2})),
        )
        .await,
    )
    .await;
    record(
        &mut s,
        "post",
        claim,
        app.call(
            Method::POST,
            "/v1/queues/hooks/claim",
            &token,
            Some(&json!({})),
        )
        .await,
    )
    .await;
    let leases: Vec<(String, String)> = claimed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_owned(),
                j["lease"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(leases.len(), 2, "claimed: {claimed}");
    let (first, first_lease) = &leases[0];
    let (second, second_lease) = &leases[1];
    let extend = json!({"lease": first_lease, "lease_ms": 5000});
    record(
        &mut s,
        "post",
        "/v1/jobs/{id}/extend",
        app.call(
            Method::POST,
            &format!("/v1/jobs/{first}/extend"),
            &token,
            Some(&extend),
        )
        .await,
    )
    .await;
    let ack = json!({"lease": first_lease, "result": {"ok": true}});
    record(
        &mut s,
        "post",
        "/v1/jobs/{id}/ack",
        app.call(
            Method::POST,
            &format!("/v1/jobs/{first}/ack"),
            &token,
            Some(&ack),
        )
        .await,
    )
    .await;
    record(
        &mut s,
        "post",
        "/v1/jobs/{id}/ack",
        app.call(
            Method::POST,
            &format!("/v1/jobs/{first}/ack"),
            &token,
            Some(&ack),
        )
        .await,
    )
    .await;
    let nack = json!({"lease": second_lease, "error": "boom", "retry_in_ms": 0});
    record(
        &mut s,
        "post",
        "/v1/jobs/{id}/nack",
        app.call(
            Method::POST,
            &format!("/v1/jobs/{second}/nack"),
            &token,
            Some(&nack),
        )
        .await,
    )
    .await;

    record(
        &mut s,
        "delete",
        "/v1/jobs/{id}",
        app.call(Method::DELETE, &job(""), &token, None).await,
    )
    .await;
    record(
        &mut s,
        "get",
        "/v1/queues/{queue}/dead",
        app.get_with_token("/v1/queues/work/dead", &token).await,
    )
    .await;
    record(
        &mut s,
        "post",
        "/v1/queues/{queue}/dead/redrive",
        app.call(Method::POST, "/v1/queues/work/dead/redrive", &token, None)
            .await,
    )
    .await;
    record(
        &mut s,
        "post",
        "/v1/jobs/{id}/retry",
        app.call(Method::POST, &job("/retry"), &token, None).await,
    )
    .await;
    record(
        &mut s,
        "post",
        "/v1/jobs/{id}/skip",
        app.call(Method::POST, &job("/skip"), &token, None).await,
    )
    .await;
    record(
        &mut s,
        "post",
        "/v1/queues/{queue}/resume",
        app.call(Method::POST, "/v1/queues/hooks/resume", &token, None)
            .await,
    )
    .await;

    let statuses: Vec<u64> = s.iter().map(|x| x["status"].as_u64().unwrap()).collect();
    for expected in [200, 201, 202, 401, 404, 409, 422] {
        assert!(
            statuses.contains(&expected),
            "no {expected} among {statuses:?}"
        );
    }
    check_with_python(&served_spec(&app).await, &s);
}

#[actix_web::test]
async fn the_docs_page_loads_only_assets_served_by_orderly() {
    let app = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = response.text().await.unwrap();
    let refs: Vec<&str> = html
        .split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css"))
        .collect();
    assert!(refs.len() >= 3, "scripts and styles referenced: {refs:?}");
    for asset in refs {
        assert!(
            asset.starts_with("/docs/"),
            "{asset} is not served by Orderly"
        );
        let response = app.get(asset).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert!(
            response.bytes().await.unwrap().len() > 100,
            "{asset} is empty"
        );
    }
    let init = app.get("/docs/init.js").await.text().await.unwrap();
    assert!(init.contains("\"/openapi.json\""));
    let missing = app.get("/docs/../Cargo.toml").await;
    assert_eq!(missing.status(), 404);
}
