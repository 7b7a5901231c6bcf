//! `/openapi.json` and `/docs`: the document is valid OpenAPI 3.1, names
//! every registered route, and real responses match its schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TempDir, TestApp, body, error_body, spawn_app};

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
    // A claim may come without a body (it claims one job without waiting).
    let claim_body = &paths["/v1/queues/{queue}/claim"]["post"]["requestBody"];
    assert!(claim_body.is_object(), "claim documents its body");
    assert_ne!(claim_body["required"], true, "the claim body is optional");
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
}

#[actix_web::test]
async fn a_method_a_path_does_not_take_is_405_with_allow_naming_its_methods() {
    let app = spawn_app().await;
    let mut methods: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (method, pattern) in orderly::routes::ROUTES {
        let entry = methods.entry(pattern).or_default();
        entry.insert(method.to_uppercase());
        if *method == "get" {
            entry.insert("HEAD".to_owned());
        }
    }
    for (pattern, expected) in methods {
        let response = app
            .client
            .patch(app.url(&concrete(pattern)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "PATCH {pattern}");
        let allow: BTreeSet<String> = response.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        assert_eq!(allow, expected, "Allow of {pattern}");
        error_body(response, 405, "method_not_allowed").await;
    }
}

/// `HEAD` of every `GET` route answers as `GET` does — status and headers
/// (`Content-Type`, `Content-Length`, the request id) — with no body; a path
/// without `GET` answers `405`.
#[actix_web::test]
async fn head_answers_like_get_without_a_body() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let get_paths: BTreeSet<&str> = orderly::routes::ROUTES
        .iter()
        .filter(|(method, _)| *method == "get")
        .map(|(_, pattern)| *pattern)
        .collect();
    for pattern in &get_paths {
        let path = concrete(pattern);
        let get = app
            .client
            .get(app.url(&path))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        let (get_status, get_type) = (get.status(), get.headers().get("content-type").cloned());
        let get_length = get.bytes().await.unwrap().len();
        let head = app
            .client
            .head(app.url(&path))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), get_status, "HEAD {pattern}");
        assert_eq!(
            head.headers().get("content-type").cloned(),
            get_type,
            "HEAD {pattern}"
        );
        assert!(
            head.headers().contains_key("x-request-id"),
            "HEAD {pattern}"
        );
        if let Some(length) = head.headers().get("content-length") {
            // (A body whose size actix cannot know ahead is sent chunked.)
            let length: usize = length.to_str().unwrap().parse().unwrap();
            if get_length > 0 && pattern != &"/metrics" {
                assert_eq!(length, get_length, "Content-Length of HEAD {pattern}");
            }
        }
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {pattern} sent a body"
        );
    }
    let response = app
        .client
        .head(app.url("/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

/// Sends requests as one user and records each real response, under its
/// route pattern, for the schema check.
struct Recorder<'a> {
    app: &'a TestApp,
    token: String,
    samples: Vec<Value>,
}

impl Recorder<'_> {
    /// `method path` with the user's token (if logged in) and an optional
    /// JSON body; records the answer as one of `pattern` and returns its body.
    async fn call(
        &mut self,
        method: Method,
        pattern: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = self.app.client.request(method.clone(), self.app.url(path));
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        self.record(method.as_str(), pattern, response).await
    }

    async fn record(&mut self, method: &str, pattern: &str, response: reqwest::Response) -> Value {
        let status = response.status().as_u16();
        let body = body(response).await;
        let method = method.to_lowercase();
        self.samples
            .push(json!({"method": method, "path": pattern, "status": status, "body": body}));
        body
    }
}

#[actix_web::test]
async fn the_document_is_valid_and_real_responses_match_it() {
    use Method as M;
    let app = spawn_app().await;
    let mut r = Recorder {
        app: &app,
        token: String::new(),
        samples: Vec::new(),
    };
    r.call(M::GET, "/healthz", "/healthz", None).await;
    r.call(M::GET, "/readyz", "/readyz", None).await;
    let creds = json!({"email": "spec@example.com", "password": "correct horse"});
    let register = "/v1/auth/register";
    r.call(M::POST, register, register, Some(creds.clone()))
        .await;
    r.call(M::POST, register, register, Some(creds.clone()))
        .await;
    r.call(
        M::POST,
        register,
        register,
        Some(json!({"email": "nope", "password": "x"})),
    )
    .await;
    let login = "/v1/auth/login";
    let wrong = json!({"email": "spec@example.com", "password": "wrong password"});
    r.call(M::POST, login, login, Some(wrong)).await;
    let token = r.call(M::POST, login, login, Some(creds)).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    r.call(M::GET, "/v1/auth/me", "/v1/auth/me", None).await;
    r.token = token;
    r.call(M::GET, "/v1/auth/me", "/v1/auth/me", None).await;

    let q = "/v1/queues/{queue}";
    let pull = json!({"max_attempts": 2, "backoff": {"initial_ms": 10, "max_ms": 10}});
    r.call(M::PUT, q, "/v1/queues/work", Some(pull.clone()))
        .await;
    r.call(M::PUT, q, "/v1/queues/work", Some(pull)).await;
    let pause = "/v1/queues/{queue}/pause";
    r.call(M::POST, pause, "/v1/queues/hooks/pause", None).await;
    let push = json!({"delivery": {"mode": "push", "url": "http://127.0.0.1:9/hook"}});
    r.call(M::PUT, q, "/v1/queues/hooks", Some(push)).await;
    r.call(M::POST, pause, "/v1/queues/hooks/pause", None).await;
    r.call(M::PUT, q, "/v1/queues/work", Some(json!({"lease_ms": 1})))
        .await;

    let jobs = "/v1/queues/{queue}/jobs";
    let work_jobs = "/v1/queues/work/jobs";
    let published = r
        .call(
            M::POST,
            jobs,
            work_jobs,
            Some(json!({"payload": {"n": 1}, "key": "a"})),
        )
        .await;
    for _ in 0..2 {
        let keyed = app
            .client
            .post(app.url(work_jobs))
            .bearer_auth(&r.token)
            .header("Idempotency-Key", "k-1")
            .json(&json!({"payload": 2}))
            .send()
            .await
            .unwrap();
        r.record("post", jobs, keyed).await;
    }
    r.call(
        M::POST,
        jobs,
        work_jobs,
        Some(json!({"payload": 3, "delay_ms": 60000})),
    )
    .await;
    r.call(
        M::POST,
        jobs,
        work_jobs,
        Some(json!({"payload": 3, "key": "k".repeat(200)})),
    )
    .await;
    let batch = json!({"jobs": [{"payload": "x", "key": "b"}, {"payload": [1, 2], "key": "b"}]});
    r.call(
        M::POST,
        "/v1/queues/{queue}/jobs/batch",
        "/v1/queues/work/jobs/batch",
        Some(batch),
    )
    .await;
    r.call(M::GET, jobs, "/v1/queues/work/jobs?limit=2", None)
        .await;
    r.call(M::GET, jobs, "/v1/queues/work/jobs?state=nope", None)
        .await;
    r.call(M::GET, q, "/v1/queues/work", None).await;
    r.call(M::GET, q, "/v1/queues/missing", None).await;
    r.call(M::GET, "/v1/queues", "/v1/queues", None).await;

    let id = published["id"].as_str().unwrap();
    let job = |suffix: &str| format!("/v1/jobs/{id}{suffix}");
    r.call(M::GET, "/v1/jobs/{id}", &job(""), None).await;
    r.call(M::GET, "/v1/jobs/{id}", "/v1/jobs/nope", None).await;

    let claim = "/v1/queues/{queue}/claim";
    let claimed = r
        .call(
            M::POST,
            claim,
            "/v1/queues/work/claim",
            Some(json!({"max_jobs": 2})),
        )
        .await;
    r.call(M::POST, claim, "/v1/queues/hooks/claim", Some(json!({})))
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
    r.call(
        M::POST,
        "/v1/jobs/{id}/extend",
        &format!("/v1/jobs/{first}/extend"),
        Some(extend),
    )
    .await;
    let ack = json!({"lease": first_lease, "result": {"ok": true}});
    r.call(
        M::POST,
        "/v1/jobs/{id}/ack",
        &format!("/v1/jobs/{first}/ack"),
        Some(ack.clone()),
    )
    .await;
    r.call(
        M::POST,
        "/v1/jobs/{id}/ack",
        &format!("/v1/jobs/{first}/ack"),
        Some(ack),
    )
    .await;
    let nack = json!({"lease": second_lease, "error": "boom", "retry_in_ms": 0});
    r.call(
        M::POST,
        "/v1/jobs/{id}/nack",
        &format!("/v1/jobs/{second}/nack"),
        Some(nack),
    )
    .await;

    r.call(M::DELETE, "/v1/jobs/{id}", &job(""), None).await;
    r.call(
        M::GET,
        "/v1/queues/{queue}/dead",
        "/v1/queues/work/dead",
        None,
    )
    .await;
    r.call(
        M::POST,
        "/v1/queues/{queue}/dead/redrive",
        "/v1/queues/work/dead/redrive",
        None,
    )
    .await;
    let lanes = "/v1/queues/{queue}/lanes";
    r.call(M::GET, lanes, "/v1/queues/work/lanes?limit=1", None)
        .await;
    r.call(M::GET, lanes, "/v1/queues/work/lanes?state=nope", None)
        .await;
    let lane = "/v1/queues/{queue}/lanes/{key}";
    r.call(M::GET, lane, "/v1/queues/work/lanes/b", None).await;
    r.call(M::GET, lane, "/v1/queues/work/lanes/none", None)
        .await;
    for action in ["pause", "resume"] {
        r.call(
            M::POST,
            &format!("{lane}/{action}"),
            &format!("/v1/queues/work/lanes/b/{action}"),
            None,
        )
        .await;
    }
    r.call(M::POST, "/v1/jobs/{id}/retry", &job("/retry"), None)
        .await;
    r.call(M::POST, "/v1/jobs/{id}/skip", &job("/skip"), None)
        .await;
    r.call(
        M::POST,
        "/v1/queues/{queue}/resume",
        "/v1/queues/hooks/resume",
        None,
    )
    .await;

    let schedule = "/v1/queues/{queue}/schedules/{name}";
    let daily = json!({"cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin",
        "payload": {"report": true}, "key": "reports", "catch_up": "one"});
    r.call(
        M::PUT,
        schedule,
        "/v1/queues/work/schedules/daily",
        Some(daily.clone()),
    )
    .await;
    r.call(
        M::PUT,
        schedule,
        "/v1/queues/work/schedules/daily",
        Some(daily),
    )
    .await;
    let bad = json!({"cron": "0 25 * * *", "timezone": "Nowhere/Else", "payload": 1});
    r.call(M::PUT, schedule, "/v1/queues/work/schedules/bad", Some(bad))
        .await;
    r.call(M::GET, schedule, "/v1/queues/work/schedules/daily", None)
        .await;
    r.call(M::GET, schedule, "/v1/queues/work/schedules/missing", None)
        .await;
    let schedules = "/v1/queues/{queue}/schedules";
    r.call(M::GET, schedules, "/v1/queues/work/schedules", None)
        .await;

    let statuses: Vec<u64> = r
        .samples
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    for expected in [200, 201, 202, 401, 404, 409, 422] {
        assert!(
            statuses.contains(&expected),
            "no {expected} among {statuses:?}"
        );
    }
    check_with_python(&served_spec(&app).await, &r.samples);
}

#[actix_web::test]
async fn the_docs_page_loads_only_assets_served_by_orderly() {
    let app = spawn_app().await;
    let (_, html) = app.page("/docs").await;
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
