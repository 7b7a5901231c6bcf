//! `/healthz` (the process runs) and `/readyz` (Redis and MongoDB answer).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::error::ApiError;
use crate::startup::Dependencies;

/// Longest a readiness probe waits on one dependency.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(deps: web::Data<Dependencies>) -> Result<HttpResponse, ApiError> {
    let (redis_ok, mongo_ok) = futures_util::join!(
        crate::storage::redis_answers(deps.redis.clone(), PROBE_TIMEOUT),
        crate::storage::mongo_answers(&deps.mongo, PROBE_TIMEOUT),
    );
    let down: Vec<&str> = [("redis", redis_ok), ("mongodb", mongo_ok)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
    if down.is_empty() {
        Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "checks": { "redis": "ok", "mongodb": "ok" }
        })))
    } else {
        Err(ApiError::unavailable(format!(
            "not ready: {} down",
            down.join(" and ")
        )))
    }
}
