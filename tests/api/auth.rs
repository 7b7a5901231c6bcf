//! Registration, login, tokens, rate limiting and the bcrypt pool bound.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

use crate::helpers::{body, error_body, spawn_app, spawn_app_with};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[actix_web::test]
async fn register_returns_the_new_user() {
    let app = spawn_app().await;
    let response = app.register("  Ann@Example.COM ", "correct horse").await;
    assert_eq!(response.status(), 201);
    let user = body(response).await;
    assert_eq!(user["email"], "ann@example.com");
    assert!(!user["id"].as_str().unwrap().is_empty());
    let created = user["created_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
}

#[actix_web::test]
async fn duplicate_email_is_409_even_with_other_case_or_whitespace() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("bob@example.com", "password1").await.status(),
        201
    );
    for again in ["bob@example.com", "BOB@Example.com", "  bob@example.com\t"] {
        let response = app.register(again, "password2").await;
        error_body(response, 409, "email_taken").await;
    }
    let count = app
        .db
        .collection::<Document>("users")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[actix_web::test]
async fn invalid_registrations_are_422_naming_the_field_and_store_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "password1"}),
            "email",
        ),
        (
            json!({"email": "ann@example.com", "password": "1234567"}),
            "password",
        ),
        (
            json!({"email": "ann@example.com", "password": "x".repeat(73)}),
            "password",
        ),
        (
            json!({"email": {"$gt": ""}, "password": "password1"}),
            "email",
        ),
        (
            json!({"email": "ann@example.com", "password": {"$ne": null}}),
            "password",
        ),
        // A missing field is named itself.
        (json!({"password": "password1"}), "email"),
    ];
    for (request, field) in cases {
        let response = app.post_json("/v1/auth/register", &request).await;
        let error = error_body(response, 422, "validation_failed").await;
        assert!(
            error["fields"].get(field).is_some(),
            "{request} should name {field}: {error}"
        );
    }
    let count = app
        .db
        .collection::<Document>("users")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// 72 bytes is bcrypt's whole key, so such a password is accepted and every
/// byte of it counts: a password differing only in its 72nd byte, or one
/// byte longer, does not log in.
#[actix_web::test]
async fn a_password_of_exactly_72_bytes_registers_and_every_byte_counts() {
    let app = spawn_app().await;
    for (email, password) in [
        ("ascii72@example.com", "a".repeat(71) + "b"),
        // 72 bytes in 36 characters: bytes are what bcrypt counts.
        ("utf72@example.com", "é".repeat(36)),
    ] {
        assert_eq!(password.len(), 72);
        assert_eq!(app.register(email, &password).await.status(), 201);
        assert_eq!(app.login(email, &password).await.status(), 200);
        let mut last_byte_differs = password.clone().into_bytes();
        last_byte_differs[71] ^= 1;
        let wrong = String::from_utf8(last_byte_differs).unwrap_or_else(|_| "a".repeat(72));
        let longer = password.clone() + "x";
        for wrong in [wrong, longer] {
            assert_eq!(app.login(email, &wrong).await.status(), 401, "{wrong:?}");
        }
    }
}

#[actix_web::test]
async fn the_stored_user_holds_a_bcrypt_hash_never_the_password() {
    let app = spawn_app().await;
    let password = "s3cret-passw0rd";
    assert_eq!(app.register("cy@example.com", password).await.status(), 201);
    let stored = app
        .db
        .collection::<Document>("users")
        .find_one(doc! {"email": "cy@example.com"})
        .await
        .unwrap()
        .expect("user stored");
    let hash = stored.get_str("password_hash").unwrap();
    assert!(hash.starts_with("$2"), "not a bcrypt hash: {hash}");
    assert!(bcrypt::verify(password, hash).unwrap());
    let raw = format!("{stored:?}");
    assert!(!raw.contains(password), "password stored in clear: {raw}");
}

#[actix_web::test]
async fn login_issues_a_bearer_token_that_works_on_me() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("dee@example.com", "password1").await.status(),
        201
    );
    let response = app.login(" DEE@example.com", "password1").await;
    assert_eq!(response.status(), 200);
    let token = body(response).await;
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], app.settings.auth.token_lifetime_s);
    let me = app
        .get_with_token("/v1/auth/me", token["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), 200);
    assert_eq!(body(me).await["email"], "dee@example.com");
}

#[actix_web::test]
async fn wrong_password_and_unknown_email_get_identical_401s() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("eve@example.com", "password1").await.status(),
        201
    );
    let wrong = error_body(
        app.login("eve@example.com", "password2").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown = error_body(
        app.login("nobody@example.com", "password1").await,
        401,
        "invalid_credentials",
    )
    .await;
    let strip = |mut e: Value| {
        e.as_object_mut().unwrap().remove("request_id");
        e
    };
    assert_eq!(strip(wrong), strip(unknown));
}

#[actix_web::test]
async fn repeated_failures_are_rate_limited_with_retry_after() {
    let app = spawn_app_with(|s| s.rate_limit.login_failures_per_email = 3).await;
    assert_eq!(
        app.register("fay@example.com", "password1").await.status(),
        201
    );
    for _ in 0..3 {
        let response = app.login("fay@example.com", "wrong-password").await;
        assert_eq!(response.status(), 401);
    }
    // Even the right password is refused until the window ends.
    let limited = app.login("fay@example.com", "password1").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=app.settings.rate_limit.login_window_s).contains(&retry_after));
    error_body(limited, 429, "rate_limited").await;
    // Another email from the same client is still allowed (per-IP limit is higher).
    assert_eq!(
        app.register("gus@example.com", "password1").await.status(),
        201
    );
    assert_eq!(
        app.login("gus@example.com", "password1").await.status(),
        200
    );
}

#[actix_web::test]
async fn rate_limit_holds_per_client_ip_across_emails() {
    let app = spawn_app_with(|s| {
        s.rate_limit.login_failures_per_email = 100;
        s.rate_limit.login_failures_per_ip = 4;
    })
    .await;
    for n in 0..4 {
        let response = app.login(&format!("u{n}@example.com"), "password1").await;
        assert_eq!(response.status(), 401);
    }
    let limited = app.login("fresh@example.com", "password1").await;
    error_body(limited, 429, "rate_limited").await;
}

fn forge(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[actix_web::test]
async fn me_rejects_missing_malformed_expired_forged_and_unsigned_tokens() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let secret = app.settings.auth.jwt_secret.clone();
    let issuer = app.settings.auth.jwt_issuer.clone();
    let now = now_s();
    let expired = forge(
        &json!({"sub": user.id, "iat": now - 7200, "exp": now - 3600, "iss": issuer}),
        &secret,
    );
    let wrong_secret = forge(
        &json!({"sub": user.id, "iat": now, "exp": now + 3600, "iss": issuer}),
        "another-secret-that-is-long-enough-to-use",
    );
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(
            json!({"sub": user.id, "iat": now, "exp": now + 3600, "iss": issuer})
                .to_string()
                .as_bytes()
        )
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("Bearer not.a.jwt".into())),
        ("wrong scheme", Some(format!("Basic {}", user.token))),
        ("empty", Some("Bearer ".into())),
        ("expired", Some(format!("Bearer {expired}"))),
        ("wrong signature", Some(format!("Bearer {wrong_secret}"))),
        ("alg none", Some(format!("Bearer {unsigned}"))),
    ];
    for (name, header) in cases {
        let mut request = app.client.get(app.url("/v1/auth/me"));
        if let Some(value) = header {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{name}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{name}");
        let error = error_body(response, 401, "unauthorized").await;
        let message = error["message"].as_str().unwrap();
        // Why, in both places: only a token this service signed is called
        // expired; a token presented but refused is an invalid_token.
        let expired = name == "expired";
        assert_eq!(message.contains("expired"), expired, "{name}: {message}");
        assert_eq!(
            challenge.contains("The access token expired"),
            expired,
            "{name}: {challenge}"
        );
        let presented = !matches!(name, "missing" | "wrong scheme" | "empty");
        assert_eq!(
            challenge.contains("error=\"invalid_token\""),
            presented,
            "{name}: {challenge}"
        );
    }
    // The genuine token still works.
    assert_eq!(
        app.get_with_token("/v1/auth/me", &user.token)
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn a_token_for_a_user_that_does_not_exist_is_401() {
    let app = spawn_app().await;
    let now = now_s();
    let token = forge(
        &json!({"sub": "no-such-user", "iat": now, "exp": now + 60, "iss": app.settings.auth.jwt_issuer}),
        &app.settings.auth.jwt_secret,
    );
    error_body(
        app.get_with_token("/v1/auth/me", &token).await,
        401,
        "unauthorized",
    )
    .await;
}

#[actix_web::test]
async fn a_saturated_hash_pool_answers_503_quickly_instead_of_queueing() {
    let app = spawn_app_with(|s| {
        s.auth.hash_threads = 1;
        s.auth.hash_queue = 1;
        s.auth.bcrypt_cost = 11;
    })
    .await;
    assert_eq!(
        app.register("hal@example.com", "password1").await.status(),
        201
    );
    let started = Instant::now();
    let logins = (0..12).map(|_| async {
        let response = app.login("hal@example.com", "password1").await;
        (response.status().as_u16(), started.elapsed())
    });
    let outcomes = futures_util::future::join_all(logins).await;
    let busy: Vec<Duration> = outcomes
        .iter()
        .filter(|(status, _)| *status == 503)
        .map(|(_, at)| *at)
        .collect();
    let served: Vec<Duration> = outcomes
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(busy.len() + served.len(), outcomes.len(), "{outcomes:?}");
    assert!(!busy.is_empty(), "no request was refused: {outcomes:?}");
    assert!(!served.is_empty(), "no request was served: {outcomes:?}");
    // Refusals do not wait for the hashing backlog.
    let slowest_served = served.iter().max().unwrap();
    assert!(
        busy.iter().all(|at| at < slowest_served),
        "a 503 waited as long as the hashing: {outcomes:?}"
    );
}
