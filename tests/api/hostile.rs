//! Hostile input: forged tokens, abusive bodies, injection attempts, other
//! tenants' ids, SSRF targets and login abuse. Never a 500, never a change.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use orderly::queue::engine::{Engine, EngineConf};
use orderly::queue::model::{Backoff, Delivery, OnExhausted, QueueName, QueueRef, QueueSettings};
use orderly::queue::registry::QueueDefinition;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, body, error_body, eventually, spawn_app, spawn_app_with};
use crate::receiver::{Receiver, Reply};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT with any header, signed HS256-style with `secret`.
fn hand_made_token(header: &Value, claims: &Value, secret: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[actix_web::test]
async fn forged_and_malformed_tokens_are_401_never_500() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let secret = app.settings.auth.jwt_secret.clone();
    let iss = app.settings.auth.jwt_issuer.clone();
    let now = now_s();
    let good_claims = json!({"sub": user.id, "iat": now, "exp": now + 600, "iss": iss});
    let tokens = vec![
        (
            "RS256 header, HMAC signature",
            hand_made_token(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &good_claims,
                &secret,
            ),
        ),
        (
            "HS512 header",
            hand_made_token(
                &json!({"alg": "HS512", "typ": "JWT"}),
                &good_claims,
                &secret,
            ),
        ),
        (
            "no exp",
            hand_made_token(
                &json!({"alg": "HS256"}),
                &json!({"sub": user.id, "iat": now, "iss": iss}),
                &secret,
            ),
        ),
        (
            "wrong issuer",
            hand_made_token(
                &json!({"alg": "HS256"}),
                &json!({"sub": user.id, "iat": now, "exp": now + 600, "iss": "evil"}),
                &secret,
            ),
        ),
        (
            "empty sub",
            hand_made_token(
                &json!({"alg": "HS256"}),
                &json!({"sub": "", "iat": now, "exp": now + 600, "iss": iss}),
                &secret,
            ),
        ),
        (
            "sub of nobody",
            hand_made_token(
                &json!({"alg": "HS256"}),
                &json!({"sub": "ghost", "iat": now, "exp": now + 600, "iss": iss}),
                &secret,
            ),
        ),
        ("garbage header", format!("{}.e30.sig", "A".repeat(3000))),
        ("huge token", "x".repeat(20_000)),
        ("two dots only", "..".into()),
    ];
    for (name, token) in tokens {
        let response = app.get_with_token("/v1/auth/me", &token).await;
        assert_eq!(response.status(), 401, "{name}");
        error_body(response, 401, "unauthorized").await;
    }
    // The same on a queue route (no MongoDB lookup there): still refused.
    let forged = hand_made_token(&json!({"alg": "RS256"}), &good_claims, &secret);
    let publish = app.publish(&forged, "q", &json!({"payload": 1})).await;
    error_body(publish, 401, "unauthorized").await;
    // A header too large for the server is refused cleanly.
    let response = app
        .client
        .get(app.url("/v1/auth/me"))
        .header("Authorization", format!("Bearer {}", "y".repeat(200_000)))
        .send()
        .await;
    if let Ok(response) = response {
        assert!(
            matches!(response.status().as_u16(), 400 | 401 | 413 | 431),
            "{}",
            response.status()
        );
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[actix_web::test]
async fn abusive_bodies_get_4xx_and_every_json_payload_round_trips_verbatim() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let raw_post = |path: &str, bytes: Vec<u8>| {
        app.client
            .post(app.url(path))
            .bearer_auth(&user.token)
            .header("Content-Type", "application/json")
            .body(bytes)
            .send()
    };
    let depth = 100_000;
    let nested = format!("{{\"payload\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
    let response = raw_post("/v1/queues/q/jobs", nested.into_bytes())
        .await
        .unwrap();
    assert!(
        matches!(response.status().as_u16(), 400 | 413),
        "{}",
        response.status()
    );
    let response = raw_post("/v1/queues/q/jobs", b"{\"payload\":\"\xc3\x28\"}".to_vec())
        .await
        .unwrap();
    error_body(response, 400, "invalid_json").await;
    let huge = format!("{{\"payload\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    match raw_post("/v1/queues/q/jobs", huge.into_bytes()).await {
        Ok(response) => {
            error_body(response, 413, "payload_too_large").await;
        }
        // The server may close the connection after answering 413 while the
        // client is still sending; it must then still be healthy.
        Err(err) => assert!(err.is_request() || err.is_body(), "{err}"),
    }
    assert_eq!(app.get("/healthz").await.status(), 200);

    let payloads = [
        "null",
        "true",
        "false",
        "0",
        "-1.5e-10",
        "123456789012345678901234567890",
        r#""plain""#,
        r#""\u0000\ud83d\ude00 \"quoted\" \\ \n""#,
        "[]",
        "{}",
        r#"{"b":1,"a":[1,{"c":null}],"a":2}"#,
        r#"  [ 1 , 2 ]  "#,
    ];
    for payload in payloads {
        let request = format!(r#"{{"payload":{payload}}}"#);
        let response = raw_post("/v1/queues/q/jobs", request.into_bytes())
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{payload}");
        let id = body(response).await["id"].as_str().unwrap().to_owned();
        let text = app
            .get_with_token(&format!("/v1/jobs/{id}"), &user.token)
            .await
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(&format!(r#""payload":{}"#, payload.trim())),
            "{payload} came back as {text}"
        );
    }
    assert_eq!(
        app.queue(&user.token, "q").await["stats"]["waiting"],
        payloads.len()
    );
}

#[actix_web::test]
async fn injection_text_is_stored_verbatim_and_touches_nothing_else() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    // MongoDB operators: objects are refused, $-strings are plain data.
    let dollar = app.register("$where@example.com", "password1").await;
    assert_eq!(dollar.status(), 201);
    assert_eq!(body(dollar).await["email"], "$where@example.com");
    let operator_login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": {"$ne": null}, "password": {"$ne": null}}),
        )
        .await;
    error_body(operator_login, 422, "validation_failed").await;
    let regex_login = app.login("$regex", "password1").await;
    error_body(regex_login, 401, "invalid_credentials").await;

    let bystander = app
        .publish_ok(
            &user.token,
            "q",
            &json!({"payload": "bystander", "key": "safe"}),
        )
        .await;
    let hostile_keys = [
        "a\r\n*3\r\n$3\r\nDEL\r\n$1\r\nx\r\n",
        "]] .. redis.call('FLUSHALL') .. [[",
        "{other}:lane:safe",
        "safe\u{0}",
        "' OR 1=1 --",
    ];
    for key in hostile_keys {
        let payload = json!({"lua": "return redis.call('FLUSHALL')", "resp": "*1\r\n$8\r\nFLUSHALL\r\n", "key": key});
        let job = app
            .publish_ok(&user.token, "q", &json!({"payload": payload, "key": key}))
            .await;
        let read = app.job(&user.token, job["id"].as_str().unwrap()).await;
        assert_eq!(read["key"], key);
        assert_eq!(read["payload"], payload);
        let listed = body(
            app.client
                .get(app.url("/v1/queues/q/jobs"))
                .query(&[("key", key)])
                .bearer_auth(&user.token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{key:?}");
    }
    let still = app
        .job(&user.token, bystander["id"].as_str().unwrap())
        .await;
    assert_eq!(still["state"], "queued");
    assert_eq!(still["payload"], "bystander");
    assert_eq!(
        app.queue(&user.token, "q").await["stats"]["waiting"],
        1 + hostile_keys.len()
    );
    for name in ["a%0D%0Ab", "%7Bx%7D", "..", "a%20b", "A"] {
        let response = app.publish(&user.token, name, &json!({"payload": 1})).await;
        error_body(response, 404, "not_found").await;
    }
}

#[actix_web::test]
async fn another_tenants_ids_and_names_are_404_on_every_route_and_change_nothing() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let intruder = app.signed_up_user().await;
    let put = app
        .put_queue(&owner.token, "private", &json!({"max_attempts": 1}))
        .await;
    assert_eq!(put.status(), 201);
    app.publish_ok(&owner.token, "private", &json!({"payload": 1, "key": "k"}))
        .await;
    let waiting = app
        .publish_ok(&owner.token, "private", &json!({"payload": 2, "key": "k"}))
        .await;
    let claimed = body(
        app.call(
            reqwest::Method::POST,
            "/v1/queues/private/claim",
            &owner.token,
            Some(&json!({"max_jobs": 1})),
        )
        .await,
    )
    .await["jobs"][0]
        .clone();
    let lease = claimed["lease"].as_str().unwrap();
    let active = claimed["id"].as_str().unwrap();
    let waiting_id = waiting["id"].as_str().unwrap();
    assert_ne!(active, waiting_id, "the claim took the lane's second job");
    let counts = |mut stats: Value| {
        stats
            .as_object_mut()
            .unwrap()
            .remove("oldest_waiting_age_ms");
        stats
    };
    let before = counts(app.queue(&owner.token, "private").await["stats"].clone());

    use reqwest::Method;
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/jobs/{waiting_id}"), None),
        (Method::DELETE, format!("/v1/jobs/{waiting_id}"), None),
        (
            Method::POST,
            format!("/v1/jobs/{active}/ack"),
            Some(json!({"lease": lease})),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{active}/nack"),
            Some(json!({"lease": lease, "retry_in_ms": 0})),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{active}/extend"),
            Some(json!({"lease": lease})),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{waiting_id}/retry"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{waiting_id}/skip"),
            Some(json!({})),
        ),
        (Method::GET, "/v1/queues/private".into(), None),
        (Method::DELETE, "/v1/queues/private".into(), None),
        (Method::POST, "/v1/queues/private/pause".into(), None),
        (Method::POST, "/v1/queues/private/resume".into(), None),
        (
            Method::POST,
            "/v1/queues/private/claim".into(),
            Some(json!({})),
        ),
        (Method::GET, "/v1/queues/private/dead".into(), None),
        (Method::POST, "/v1/queues/private/dead/redrive".into(), None),
        (Method::GET, "/v1/queues/private/jobs".into(), None),
        (Method::GET, "/v1/queues/private/lanes".into(), None),
    ];
    for (method, path, request) in calls {
        let response = app
            .call(method.clone(), &path, &intruder.token, request.as_ref())
            .await;
        error_body(response, 404, "not_found").await;
    }
    let listed = body(app.get_with_token("/v1/queues", &intruder.token).await).await;
    assert!(listed["queues"].as_array().unwrap().is_empty());

    let after = app.queue(&owner.token, "private").await;
    assert_eq!(counts(after["stats"].clone()), before);
    assert_eq!(after["paused"], false);
    assert_eq!(app.job(&owner.token, active).await["state"], "active");
    let ack = app
        .call(
            Method::POST,
            &format!("/v1/jobs/{active}/ack"),
            &owner.token,
            Some(&json!({"lease": lease})),
        )
        .await;
    assert_eq!(ack.status(), 200, "the owner's lease still works");
}

#[actix_web::test]
async fn ssrf_targets_are_refused_at_put_when_private_targets_are_disallowed() {
    let app = spawn_app_with(|s| s.delivery.allow_private_targets = false).await;
    let user = app.signed_up_user().await;
    for url in [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://localhost:8080/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",
    ] {
        let response = app
            .put_queue(
                &user.token,
                "q",
                &json!({"delivery": {"mode": "push", "url": url}}),
            )
            .await;
        let error = error_body(response, 422, "validation_failed").await;
        assert!(error["fields"]["delivery.url"].is_string(), "{url}");
    }
    let listed = body(app.get_with_token("/v1/queues", &user.token).await).await;
    assert!(listed["queues"].as_array().unwrap().is_empty());
}

#[actix_web::test]
async fn delivery_refuses_a_private_target_stored_earlier_and_never_follows_redirects() {
    // A definition stored while private targets were allowed (or whose DNS
    // changed since): a strict process refuses to deliver to it.
    let receiver = Receiver::ok();
    let strict = spawn_app_with(|s| s.delivery.allow_private_targets = false).await;
    let user = strict.signed_up_user().await;
    let queue = QueueRef::new(&user.id, QueueName::parse("q").unwrap());
    let definition = QueueDefinition {
        tag: queue.tag(),
        owner: user.id.clone(),
        name: "q".into(),
        settings: QueueSettings {
            delivery: Delivery::Push {
                url: receiver.url.clone(),
                timeout_ms: 2_000,
            },
            max_attempts: 3,
            backoff: Backoff {
                initial_ms: 10,
                max_ms: 10,
            },
            on_exhausted: OnExhausted::DeadLetter,
            lease_ms: 30_000,
            retention_s: 3_600,
            rate_limit: None,
            max_active_lanes: None,
        },
        paused: false,
        signing_secret: Some("whsec_test".into()),
        created_at: mongodb::bson::DateTime::now(),
        updated_at: mongodb::bson::DateTime::now(),
        push_url: Default::default(),
    };
    strict
        .db
        .collection::<QueueDefinition>("queues")
        .insert_one(&definition)
        .await
        .unwrap();
    let conf = EngineConf {
        push: true,
        paused: false,
        on_exhausted: "dead_letter",
        retention_s: 3_600,
        rate_limit: None,
        max_active: None,
        version: 1,
    };
    Engine::connect(&strict.settings.redis)
        .unwrap()
        .configure(&queue, &conf)
        .await
        .unwrap();
    let job = strict
        .publish_ok(&user.token, "q", &json!({"payload": 1}))
        .await;
    let dead = eventually(Duration::from_secs(30), "job dead", || async {
        let job = strict.job(&user.token, job["id"].as_str().unwrap()).await;
        (job["state"] == "dead").then_some(job)
    })
    .await;
    assert_eq!(dead["attempts"], 1, "a refused target is not retried");
    assert!(
        dead["last_error"].as_str().unwrap().contains("private"),
        "{dead}"
    );
    assert!(
        receiver.seen().is_empty(),
        "a connection reached the private receiver"
    );

    // Redirects: the first receiver answers 302 to the second, which must never be reached.
    let target = Receiver::ok();
    let location = target.url.clone();
    let redirecting = Receiver::start(move |_| Reply::Redirect(location.clone()));
    let relaxed = spawn_app().await;
    let user = relaxed.signed_up_user().await;
    relaxed
        .push_queue(
            &user.token,
            "r",
            &redirecting.url,
            json!({"max_attempts": 2}),
        )
        .await;
    let job = relaxed
        .publish_ok(&user.token, "r", &json!({"payload": 1}))
        .await;
    let failed = eventually(Duration::from_secs(30), "redirected job dead", || async {
        let job = relaxed.job(&user.token, job["id"].as_str().unwrap()).await;
        (job["state"] == "dead").then_some(job)
    })
    .await;
    assert_eq!(failed["attempts"], 2);
    assert_eq!(redirecting.seen().len(), 2);
    assert!(target.seen().is_empty(), "a redirect was followed");
}

async fn timed_login(app: &TestApp, email: &str, password: &str) -> Duration {
    let started = Instant::now();
    let response = app.login(email, password).await;
    assert_eq!(response.status(), 401);
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[actix_web::test]
async fn unknown_email_and_wrong_password_take_the_same_time() {
    let app = spawn_app_with(|s| {
        s.auth.bcrypt_cost = 10;
        s.rate_limit.login_failures_per_email = 1_000;
        s.rate_limit.login_failures_per_ip = 1_000;
    })
    .await;
    assert_eq!(
        app.register("tim@example.com", "password1").await.status(),
        201
    );
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for n in 0..20 {
        wrong.push(timed_login(&app, "tim@example.com", &format!("nope-{n}-password")).await);
        unknown.push(timed_login(&app, &format!("nobody-{n}@example.com"), "password1").await);
    }
    let (unknown, wrong) = (median(unknown), median(wrong));
    let (low, high) = if unknown < wrong {
        (unknown, wrong)
    } else {
        (wrong, unknown)
    };
    assert!(
        high.as_secs_f64() <= low.as_secs_f64() * 1.25,
        "unknown email {unknown:?} vs wrong password {wrong:?}"
    );
}

#[actix_web::test]
async fn a_login_burst_does_not_slow_down_health_checks() {
    let app = spawn_app_with(|s| s.auth.bcrypt_cost = 8).await;
    assert_eq!(
        app.register("burst@example.com", "password1")
            .await
            .status(),
        201
    );
    let burst = futures_util::future::join_all((0..200).map(|n| {
        app.login(
            "burst@example.com",
            if n % 2 == 0 {
                "password1"
            } else {
                "wrong-password"
            },
        )
    }));
    let probes = async {
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            assert_eq!(app.get("/healthz").await.status(), 200);
            worst = worst.max(started.elapsed());
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        worst
    };
    let (responses, worst) = futures_util::join!(burst, probes);
    for response in responses {
        assert!(
            matches!(response.status().as_u16(), 200 | 401 | 429 | 503),
            "{}",
            response.status()
        );
    }
    assert!(
        worst < Duration::from_millis(100),
        "healthz took {worst:?} during the burst"
    );
}
