//! `/healthz` (the process runs) and `/readyz` (Redis and MongoDB answer).

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::startup::Dependencies;

/// Longest a readiness probe waits on one dependency.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// `/healthz` body.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// `/readyz` body when both dependencies answer.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    status: &'static str,
    /// `"ok"` per dependency (`redis`, `mongodb`).
    checks: BTreeMap<&'static str, &'static str>,
    /// Ready, but configured in a way that can lose jobs (e.g. a Redis
    /// `maxmemory-policy` that evicts keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// Liveness: the process runs and serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness: Redis and MongoDB both answer (within 1.5 s each); `warnings`
/// names settings that can lose jobs.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; the message names what is down", body = ErrorBody),
    ))]
pub async fn readyz(deps: web::Data<Dependencies>) -> Result<HttpResponse, ApiError> {
    let (redis_ok, policy, mongo_ok) = futures_util::join!(
        crate::storage::redis_answers(deps.redis.clone(), PROBE_TIMEOUT),
        crate::storage::redis_maxmemory_policy(deps.redis.clone(), PROBE_TIMEOUT),
        crate::storage::mongo_answers(&deps.mongo, PROBE_TIMEOUT),
    );
    let down: Vec<&str> = [("redis", redis_ok), ("mongodb", mongo_ok)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
    if down.is_empty() {
        Ok(HttpResponse::Ok().json(Readiness {
            status: "ready",
            checks: BTreeMap::from([("redis", "ok"), ("mongodb", "ok")]),
            warnings: policy
                .as_deref()
                .and_then(crate::storage::eviction_warning)
                .into_iter()
                .collect(),
        }))
    } else {
        Err(ApiError::unavailable(format!(
            "not ready: {} down",
            down.join(" and ")
        )))
    }
}
