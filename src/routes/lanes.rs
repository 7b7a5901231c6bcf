//! `/v1/queues/{queue}/lanes*`: see which lanes are stuck and steer one
//! (pause / resume). Listing is bounded work per call: a page may come back
//! short, with `next` to continue.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::jobs::page_limit;
use super::queues::{QueuePath, path_queue};
use crate::auth::{Authorized, Caller, need};
use crate::error::{ApiError, ErrorBody};
use crate::queue::Queues;
use crate::queue::engine::LaneFilter;
use crate::queue::model::{Lane, LaneState, QueueRef, parse_lane_key};
use crate::queue::registry::queue_ref;

/// The `{queue}` and `{key}` path parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LanePath {
    /// Queue name.
    #[param(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    queue: String,
    /// The lane's key, percent-encoded. `~` names the default lane `""`;
    /// a key that starts with `~` is written with one more `~` in front.
    key: String,
}

/// The lane key a path segment names (`~` → `""`, `~~x` → `~x`).
fn segment_key(segment: &str) -> Result<String, ApiError> {
    let key = segment.strip_prefix('~').unwrap_or(segment);
    parse_lane_key(Some(key.to_owned())).map_err(|reason| ApiError::invalid_field("key", reason))
}

/// The queue and lane key a lane route names. The router decodes the
/// path's percent-escapes leniently (bytes that are not UTF-8 become U+FFFD,
/// a character keys may hold), so the raw path is checked first: `%FF` must
/// not name the lane `"\u{FFFD}"`.
fn lane_path(
    req: &HttpRequest,
    who: &Caller,
    path: &LanePath,
) -> Result<(QueueRef, String), ApiError> {
    if percent_encoding::percent_decode_str(req.path())
        .decode_utf8()
        .is_err()
    {
        return Err(ApiError::invalid_field(
            "key",
            "must be UTF-8 once percent-decoded",
        ));
    }
    let queue =
        queue_ref(&who.user_id, &path.queue).map_err(|_| ApiError::not_found("no such queue"))?;
    Ok((queue, segment_key(&path.key)?))
}

/// Lanes listing filters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LanesQuery {
    /// Only lanes in this state (`""`: any).
    #[param(schema_with = lane_state_filter_schema)]
    state: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Continue after this position (the previous page's `next`).
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    after: Option<u64>,
}

const LANE_STATE_FILTERS: [&str; 7] = [
    "", "ready", "delayed", "active", "retrying", "blocked", "paused",
];

fn lane_state_filter_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(LANE_STATE_FILTERS))
        .build()
}

/// One page of lanes; pass `next` as `after` for the following page.
#[derive(Serialize, ToSchema)]
pub struct LanePage {
    pub lanes: Vec<Lane>,
    /// `null` on the last page. A page may hold fewer than `limit` lanes
    /// and still have a `next` (each call examines a bounded number).
    pub next: Option<u64>,
}

/// A queue's lanes with unfinished jobs, stuck first: blocked lanes, then the
/// oldest heads.
#[utoipa::path(get, path = "/v1/queues/{queue}/lanes", operation_id = "list_lanes", tag = "lanes", security(("bearer" = [])),
    params(QueuePath, LanesQuery),
    responses(
        (status = 200, description = "One page", body = LanePage),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 422, description = "Unknown query parameter (`fields.query`), or invalid `state` or `limit`", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn list(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
    query: web::Query<LanesQuery>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    let query = query.into_inner();
    let state = match query.state.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(LaneState::parse(raw).ok_or_else(|| {
            ApiError::invalid_field(
                "state",
                "must be a lane state (ready, delayed, active, retrying, blocked, paused)",
            )
        })?),
    };
    let filter = LaneFilter {
        state,
        after: query.after,
        limit: page_limit(query.limit)?,
    };
    if queues.registry.get(&queue).await?.is_none() {
        return Err(ApiError::not_found("no such queue"));
    }
    let page = queues.engine.lanes(&queue, &filter).await?;
    Ok(HttpResponse::Ok().json(LanePage {
        lanes: page.lanes,
        next: page.next,
    }))
}

/// One lane.
#[utoipa::path(get, path = "/v1/queues/{queue}/lanes/{key}", operation_id = "get_lane", tag = "lanes", security(("bearer" = [])),
    params(LanePath),
    responses(
        (status = 200, description = "The lane", body = Lane),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue, or no unfinished job in this lane", body = ErrorBody),
        (status = 422, description = "Key longer than 128 characters, or not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn get(
    req: HttpRequest,
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<LanePath>,
) -> Result<HttpResponse, ApiError> {
    let (queue, key) = lane_path(&req, &who, &path)?;
    let lane = queues.engine.lane(&queue, &key).await?;
    // Only a miss looks the queue up, to say which of the two is missing.
    let Some(lane) = lane else {
        if queues.registry.get(&queue).await?.is_none() {
            return Err(ApiError::not_found("no such queue"));
        }
        return Err(ApiError::not_found("no unfinished job in this lane"));
    };
    Ok(HttpResponse::Ok().json(lane))
}

/// A paused or resumed lane: the lane as it is now (`null` while it has no
/// unfinished job; a pause still holds for jobs published later).
#[derive(Serialize, ToSchema)]
pub struct LaneSwitch {
    pub key: String,
    pub paused: bool,
    pub lane: Option<Lane>,
}

async fn set_lane_paused(
    req: HttpRequest,
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<LanePath>,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    let (queue, key) = lane_path(&req, &who, &path)?;
    queues
        .registry
        .get(&queue)
        .await?
        .ok_or_else(|| ApiError::not_found("no such queue"))?;
    let lane = queues.engine.pause_lane(&queue, &key, paused).await?;
    Ok(HttpResponse::Ok().json(LaneSwitch { key, paused, lane }))
}

/// Pause one lane: its head does not start (a running one finishes); other
/// lanes flow. Order and the lane's place are kept. Idempotent.
#[utoipa::path(post, path = "/v1/queues/{queue}/lanes/{key}/pause", operation_id = "pause_lane", tag = "lanes", security(("bearer" = [])),
    params(LanePath),
    responses(
        (status = 200, description = "Paused", body = LaneSwitch),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 422, description = "Key longer than 128 characters, or not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn pause(
    queues: web::Data<Queues>,
    req: HttpRequest,
    who: Authorized<need::Manage>,
    path: web::Path<LanePath>,
) -> Result<HttpResponse, ApiError> {
    set_lane_paused(req, queues, who, path, true).await
}

/// Resume a paused lane: its head starts when it may, in order. Idempotent.
#[utoipa::path(post, path = "/v1/queues/{queue}/lanes/{key}/resume", operation_id = "resume_lane", tag = "lanes", security(("bearer" = [])),
    params(LanePath),
    responses(
        (status = 200, description = "Resumed", body = LaneSwitch),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 422, description = "Key longer than 128 characters, or not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn resume(
    queues: web::Data<Queues>,
    req: HttpRequest,
    who: Authorized<need::Manage>,
    path: web::Path<LanePath>,
) -> Result<HttpResponse, ApiError> {
    set_lane_paused(req, queues, who, path, false).await
}

#[cfg(test)]
mod tests {
    use super::segment_key;

    #[test]
    fn a_tilde_names_the_default_lane_and_escapes_itself() {
        assert_eq!(segment_key("~").unwrap(), "");
        assert_eq!(segment_key("~~").unwrap(), "~");
        assert_eq!(segment_key("~~x").unwrap(), "~x");
        assert_eq!(segment_key("user-1").unwrap(), "user-1");
    }
}
