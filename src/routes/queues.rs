//! `/v1/queues/*`: queue definitions, pause/resume and stats.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Authorized, Caller, need};
use crate::error::{ApiError, ErrorBody};
use crate::http::json::ApiJsonOrEmpty;
use crate::http::json::{integer, object};
use crate::queue::Queues;
use crate::queue::delivery::check_target;
use crate::queue::engine::RawStats;
use crate::queue::model::{
    Backoff, Delivery, OnExhausted, PUSH_TIMEOUT_MS_RANGE, QueueRef, QueueSettings, RateLimit,
};
use crate::queue::registry::{QueueDefinition, queue_ref};
use crate::queue::schedules::Schedules;

/// The `{queue}` path parameter.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct QueuePath {
    /// Queue name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    #[param(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    queue: String,
}

impl QueuePath {
    /// The path parameter of a route that names the queue among others.
    pub fn named(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
        }
    }
}

/// The caller's queue named in the path; `404` for a name that cannot exist.
pub fn path_queue(who: &Caller, path: &QueuePath) -> Result<QueueRef, ApiError> {
    queue_ref(&who.user_id, &path.queue).map_err(|_| ApiError::not_found("no such queue"))
}

/// How jobs reach their consumer: `{"mode": "pull"}` or
/// `{"mode": "push", "url", "timeout_ms"?}` (its schema, a `oneOf` of the
/// two, is written out below because the body is parsed field by field to
/// name the offending one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryBody {
    mode: String,
    url: Option<String>,
    #[serde(default, deserialize_with = "integer::option")]
    timeout_ms: Option<u64>,
}

/// A push URL the server accepts: http(s), a DNS name (last label starting
/// with a letter) or an IPv4 address, an optional port, no credentials.
/// (IPv6 literals such as `http://[::1]:8080/` are accepted too.)
pub const PUSH_URL_PATTERN: &str = concat!(
    r"^https?://(?:(?:(?![Xx][Nn]--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*",
    r"(?![Xx][Nn]--)[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    r"|(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})",
    r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    r"(?:[/?#]\S*)?$",
);

impl utoipa::PartialSchema for DeliveryBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        let mode = |name: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([name.to_owned()]))
        };
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let pull = ObjectBuilder::new()
            .description(Some(
                "Consumers claim jobs (`POST /v1/queues/{queue}/claim`).",
            ))
            .property("mode", mode("pull"))
            .property("url", null())
            .property("timeout_ms", null())
            .required("mode")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        let push = ObjectBuilder::new()
            .description(Some("Orderly POSTs each job to `url`."))
            .property("mode", mode("push"))
            .property(
                "url",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(PUSH_URL_PATTERN))
                    .description(Some(
                        "Absolute http(s) URL without credentials. Outside the dev/test \
                         profiles it must resolve to public addresses (else `422`).",
                    ))
                    .examples(["https://example.com/hooks/orderly"]),
            )
            .property(
                "timeout_ms",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                    .minimum(Some(PUSH_TIMEOUT_MS_RANGE.0))
                    .maximum(Some(PUSH_TIMEOUT_MS_RANGE.1))
                    .description(Some(
                        "Per delivery attempt; default from the configuration.",
                    )),
            )
            .required("mode")
            .required("url")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        OneOfBuilder::new().item(pull).item(push).into()
    }
}

impl ToSchema for DeliveryBody {}

/// Exponential backoff between attempts.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffBody {
    /// The first retry's delay (1 ms to 1 day; omitted: 1000).
    #[schema(minimum = 1, maximum = 86_400_000)]
    #[serde(default, deserialize_with = "integer::option")]
    initial_ms: Option<u64>,
    /// Caps every delay (1 ms to 1 day; omitted: 300000); an `initial_ms`
    /// above it means every retry waits about `max_ms`.
    #[schema(minimum = 1, maximum = 86_400_000)]
    #[serde(default, deserialize_with = "integer::option")]
    max_ms: Option<u64>,
}

/// A queue's settings; omitted fields take the configured defaults (a `PUT`
/// without a body, or with `null`, takes every default).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    #[serde(default, deserialize_with = "object::option")]
    delivery: Option<DeliveryBody>,
    /// Attempts before `on_exhausted` applies.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "integer::option")]
    max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "object::option")]
    backoff: Option<BackoffBody>,
    on_exhausted: Option<OnExhausted>,
    /// How long a claim or delivery holds a job before it is retried.
    #[schema(minimum = 1000, maximum = 43_200_000)]
    #[serde(default, deserialize_with = "integer::option")]
    lease_ms: Option<u64>,
    /// How long finished jobs stay readable (at most 90 days).
    #[schema(minimum = 1, maximum = 7_776_000)]
    #[serde(default, deserialize_with = "integer::option")]
    retention_s: Option<u64>,
    /// Lane heads started per second over all processes (push and pull);
    /// omitted or `null`: unlimited.
    #[serde(default, deserialize_with = "object::option")]
    rate_limit: Option<RateLimitBody>,
    /// At most this many lane heads leased at once; omitted or `null`:
    /// unlimited.
    #[schema(minimum = 1, maximum = 100_000)]
    #[serde(default, deserialize_with = "integer::option")]
    max_active_lanes: Option<u32>,
}

/// A token bucket: `per_second` heads start per second, `burst` at once
/// after a quiet spell (default: `per_second`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    #[schema(minimum = 1, maximum = 100_000)]
    #[serde(deserialize_with = "integer::required")]
    per_second: u32,
    #[schema(minimum = 1, maximum = 100_000)]
    #[serde(default, deserialize_with = "integer::option")]
    burst: Option<u32>,
}

impl SettingsBody {
    /// Full settings: what the body names, defaults for the rest.
    fn into_settings(
        self,
        defaults: QueueSettings,
        push_timeout_ms: u64,
    ) -> Result<QueueSettings, ApiError> {
        let delivery = match self.delivery {
            None => Delivery::Pull,
            Some(body) => match (body.mode.as_str(), body.url) {
                ("pull", None) if body.timeout_ms.is_none() => Delivery::Pull,
                ("pull", _) => {
                    return Err(ApiError::invalid_field(
                        "delivery",
                        "pull delivery takes no url or timeout_ms",
                    ));
                }
                ("push", Some(url)) => Delivery::Push {
                    url,
                    timeout_ms: body.timeout_ms.unwrap_or(push_timeout_ms),
                },
                ("push", None) => {
                    return Err(ApiError::invalid_field(
                        "delivery.url",
                        "is required for push delivery",
                    ));
                }
                _ => {
                    return Err(ApiError::invalid_field(
                        "delivery.mode",
                        "must be \"pull\" or \"push\"",
                    ));
                }
            },
        };
        let settings = QueueSettings {
            delivery,
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
            backoff: self.backoff.map_or(defaults.backoff, |b| Backoff {
                initial_ms: b.initial_ms.unwrap_or(defaults.backoff.initial_ms),
                max_ms: b.max_ms.unwrap_or(defaults.backoff.max_ms),
            }),
            on_exhausted: self.on_exhausted.unwrap_or(defaults.on_exhausted),
            lease_ms: self.lease_ms.unwrap_or(defaults.lease_ms),
            retention_s: self.retention_s.unwrap_or(defaults.retention_s),
            rate_limit: self.rate_limit.map(|r| RateLimit {
                per_second: r.per_second,
                burst: r.burst.unwrap_or(r.per_second),
            }),
            max_active_lanes: self.max_active_lanes,
        };
        settings.validate().map_err(ApiError::validation)?;
        Ok(settings)
    }
}

/// Queue counts as the API shows them: how far behind the queue is at a glance.
#[derive(Serialize, ToSchema)]
pub struct StatsView {
    /// Jobs that are queued or retrying (not delayed, not leased).
    waiting: u64,
    delayed: u64,
    active: u64,
    blocked: u64,
    completed: u64,
    dead: u64,
    cancelled: u64,
    retried: u64,
    /// Age of the oldest unfinished job, 0 when none (the oldest lane head:
    /// a lane keeps its jobs in seq order).
    oldest_waiting_age_ms: u64,
    /// Lanes paused by `POST …/lanes/{key}/pause` (blocked lanes: `blocked`,
    /// one blocked head each).
    paused_lanes: u64,
    /// Jobs published in the last 60 seconds.
    published_last_minute: u64,
    /// Jobs completed in the last 60 seconds: the queue's current throughput.
    completed_last_minute: u64,
    /// Seconds until the waiting jobs are done at the last minute's
    /// completion rate: `0` when nothing waits, `null` when jobs wait but
    /// none completed in the last minute (the queue is not draining).
    drain_eta_s: Option<u64>,
}

impl From<RawStats> for StatsView {
    fn from(s: RawStats) -> Self {
        Self {
            waiting: s.waiting(),
            delayed: s.delayed,
            active: s.active,
            blocked: s.blocked,
            completed: s.completed,
            dead: s.dead,
            cancelled: s.cancelled,
            retried: s.retried,
            oldest_waiting_age_ms: s
                .oldest_pending_created_ms
                .map_or(0, |created| s.now_ms.saturating_sub(created)),
            paused_lanes: s.paused_lanes,
            published_last_minute: s.published_last_minute,
            completed_last_minute: s.completed_last_minute,
            drain_eta_s: drain_eta_s(s.waiting(), s.completed_last_minute),
        }
    }
}

/// Seconds to work off `waiting` jobs at `completed_last_minute` per minute.
fn drain_eta_s(waiting: u64, completed_last_minute: u64) -> Option<u64> {
    match (waiting, completed_last_minute) {
        (0, _) => Some(0),
        (_, 0) => None,
        (waiting, done) => Some((waiting * 60).div_ceil(done)),
    }
}

/// The queue object.
#[derive(Serialize, ToSchema)]
pub struct QueueView<'a> {
    name: &'a str,
    #[serde(flatten)]
    settings: &'a QueueSettings,
    paused: bool,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Only in `GET /v1/queues/{queue}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<StatsView>,
    /// Push queues, only when the queue is created: the HMAC key of `Orderly-Signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_secret: Option<String>,
}

/// `GET /v1/queues` body.
#[derive(Serialize, ToSchema)]
pub struct QueueList<'a> {
    queues: Vec<QueueView<'a>>,
}

impl<'a> QueueView<'a> {
    pub fn of(definition: &'a QueueDefinition) -> Self {
        Self {
            name: &definition.name,
            settings: &definition.settings,
            paused: definition.paused,
            created_at: definition.created_at_rfc3339(),
            updated_at: definition.updated_at_rfc3339(),
            stats: None,
            signing_secret: None,
        }
    }
}

/// Create or replace a queue's definition.
#[utoipa::path(put, path = "/v1/queues/{queue}", operation_id = "put_queue", tag = "queues", security(("bearer" = [])),
    params(QueuePath), request_body(content = Option<SettingsBody>, description = "Optional: a request with no body (or `null`) creates or resets the queue with every default"),
    responses(
        (status = 201, description = "Created (push queues: with `signing_secret`)", body = QueueView, links(
            ("PublishJob" = (operation_id = "publish_job", parameters(("queue" = "$request.path.queue")),
                description = "Publish to the queue")),
            ("ClaimJobs" = (operation_id = "claim_jobs", parameters(("queue" = "$request.path.queue")),
                description = "Claim from the queue (pull queues)")),
            ("GetQueue" = (operation_id = "get_queue", parameters(("queue" = "$request.path.queue")),
                description = "The queue with its stats")),
        )),
        (status = 200, description = "Updated", body = QueueView, links(
            ("PublishJob" = (operation_id = "publish_job", parameters(("queue" = "$request.path.queue")),
                description = "Publish to the queue")),
            ("ClaimJobs" = (operation_id = "claim_jobs", parameters(("queue" = "$request.path.queue")),
                description = "Claim from the queue (pull queues)")),
            ("GetQueue" = (operation_id = "get_queue", parameters(("queue" = "$request.path.queue")),
                description = "The queue with its stats")),
        )),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid name or settings, per field", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn put(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<SettingsBody>,
) -> Result<HttpResponse, ApiError> {
    let queue = queue_ref(&who.user_id, &path.queue)
        .map_err(|reason| ApiError::invalid_field("name", reason))?;
    let settings = body.into_settings(
        queues.registry.default_settings(),
        queues.default_push_timeout_ms,
    )?;
    if let Delivery::Push { url, .. } = &settings.delivery {
        check_target(url, queues.allow_private_targets)
            .await
            .map_err(|reason| {
                ApiError::validation(BTreeMap::from([("delivery.url".to_owned(), reason)]))
            })?;
    }
    let upserted = queues.registry.put(&queue, settings).await?;
    let mut view = QueueView::of(&upserted.definition);
    view.signing_secret = upserted.new_signing_secret;
    let mut response = if upserted.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(view))
}

/// The caller's queues.
#[utoipa::path(get, path = "/v1/queues", operation_id = "list_queues", tag = "queues", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every queue of the caller", body = QueueList),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ))]
pub async fn list(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
) -> Result<HttpResponse, ApiError> {
    let definitions = queues.registry.list(&who.user_id).await?;
    let views: Vec<QueueView> = definitions
        .iter()
        .filter(|d| who.sees_queue(&d.name))
        .map(QueueView::of)
        .collect();
    Ok(HttpResponse::Ok().json(QueueList { queues: views }))
}

/// A queue with its progress: waiting, oldest age, throughput.
#[utoipa::path(get, path = "/v1/queues/{queue}", operation_id = "get_queue", tag = "queues", security(("bearer" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "The queue with `stats`", body = QueueView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue (of this user)", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn get(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    let definition = queues
        .registry
        .get(&queue)
        .await?
        .ok_or_else(|| ApiError::not_found("no such queue"))?;
    let stats = queues.engine.stats(&queue).await?;
    let mut view = QueueView::of(&definition);
    view.stats = Some(stats.into());
    Ok(HttpResponse::Ok().json(view))
}

/// Delete a queue, its jobs and its schedules.
#[utoipa::path(delete, path = "/v1/queues/{queue}", operation_id = "delete_queue", tag = "queues", security(("bearer" = [])),
    params(QueuePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn delete(
    queues: web::Data<Queues>,
    schedules: web::Data<Schedules>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    // Schedules first: none can publish into (and so re-create) the queue
    // once it is gone.
    schedules.delete_queue(&queue).await?;
    if !queues.registry.delete(&queue).await? {
        return Err(ApiError::not_found("no such queue"));
    }
    Ok(HttpResponse::NoContent().finish())
}

async fn set_paused(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    let definition = queues
        .registry
        .set_paused(&queue, paused)
        .await?
        .ok_or_else(|| ApiError::not_found("no such queue"))?;
    Ok(HttpResponse::Ok().json(QueueView::of(&definition)))
}

/// Stop starting new deliveries (publishing still works; running ones finish).
#[utoipa::path(post, path = "/v1/queues/{queue}/pause", operation_id = "pause_queue", tag = "queues", security(("bearer" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "Paused", body = QueueView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn pause(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
) -> Result<HttpResponse, ApiError> {
    set_paused(queues, who, path, true).await
}

/// Start delivering again.
#[utoipa::path(post, path = "/v1/queues/{queue}/resume", operation_id = "resume_queue", tag = "queues", security(("bearer" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "Resumed", body = QueueView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn resume(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
) -> Result<HttpResponse, ApiError> {
    set_paused(queues, who, path, false).await
}

#[cfg(test)]
mod tests {
    use super::drain_eta_s;

    #[test]
    fn drain_eta_follows_the_last_minutes_completion_rate() {
        assert_eq!(drain_eta_s(0, 0), Some(0));
        assert_eq!(drain_eta_s(10, 0), None);
        assert_eq!(drain_eta_s(120, 60), Some(120));
        assert_eq!(drain_eta_s(1, 600), Some(1));
    }
}
