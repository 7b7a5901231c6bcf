//! Jobs: publish, read (with long-poll), list and cancel.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::queues::{QueuePath, path_queue};
use crate::auth::{Authorized, Caller, need};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::ApiJson;
use crate::http::json::{integer, parse_item};
use crate::queue::Queues;
use crate::queue::engine::{CancelOutcome, ListFilter};
use crate::queue::ingress::{Admission, IngressLimiter};
use crate::queue::model::{Job, JobId, JobState, MAX_DELAY_MS, QueueRef, parse_lane_key};
use crate::queue::service::{Draft, Publication};

/// A long-poll's `wait_ms` (≤ [`MAX_WAIT_MS`]; absent: 0) as a duration;
/// `422` naming the field otherwise. Shared by claim and job reads.
pub fn wait_ms(raw: Option<u64>) -> Result<Duration, ApiError> {
    let ms = raw.unwrap_or(0);
    if ms > MAX_WAIT_MS {
        return Err(ApiError::invalid_field(
            "wait_ms",
            format!("must be at most {MAX_WAIT_MS}"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// Longest `wait_ms` accepted by long-polls.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Largest page of a job listing.
pub const MAX_PAGE: usize = 1000;

/// One job to publish.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// Any JSON value; stored and delivered byte for byte.
    #[schema(value_type = Value)]
    payload: Box<RawValue>,
    /// Ordering lane (≤ 128 characters): jobs with the same key run one at a
    /// time in publish order. Omitted: the queue's default lane `""`.
    #[schema(max_length = 128)]
    key: Option<String>,
    /// Do not start before this many ms (≤ 30 days).
    #[schema(maximum = 2_592_000_000_u64)]
    #[serde(default, deserialize_with = "integer::option")]
    delay_ms: Option<u64>,
    /// This job's idempotency key (1–255 visible ASCII characters; in a
    /// batch it takes precedence over the batch's `Idempotency-Key`): a
    /// repeat within the queue's window enqueues nothing and answers the
    /// original job. The `Idempotency-Key` header takes precedence over it
    /// in a single publish.
    #[schema(pattern = "^[!-~]{1,255}$")]
    idempotency_key: Option<String>,
    /// 0–9 (default 0): among lanes whose heads may start, a head with a
    /// higher priority starts first; within a lane the order never changes.
    #[schema(minimum = 0, maximum = 9)]
    #[serde(default, deserialize_with = "integer::option")]
    priority: Option<u64>,
}

/// The `{id}` path parameter.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// Job id as returned by publish: 32 hex digits, `.`, the queue name.
    #[param(pattern = "^[0-9a-f]{32}\\.[a-z0-9][a-z0-9_.-]{0,63}$")]
    id: String,
}

/// A publish that repeated an `Idempotency-Key` whose job is gone (past its
/// retention, or its queue was deleted).
#[derive(Serialize, ToSchema)]
pub struct ExpiredDuplicate<'a> {
    id: &'a str,
    queue: &'a str,
    #[schema(pattern = "^expired$", example = "expired")]
    state: &'static str,
}

/// The `200` answer to a repeated `Idempotency-Key`: the original job, or
/// what is known of it when it is gone. Nothing is enqueued either way.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Repeated<'a> {
    Original(Box<Job>),
    #[schema(value_type = ExpiredDuplicate)]
    Expired(ExpiredDuplicate<'a>),
}

/// A list of jobs (batch publish, claim).
#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// One page of a listing; pass `next` as `after` for the following page.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// `null` on the last page.
    pub next: Option<u64>,
}

/// The caller's job named by `raw`, as (queue, id); `404` for ids that cannot exist.
pub fn path_job(who: &Caller, path: &JobPath) -> Result<(QueueRef, String), ApiError> {
    let id = JobId::parse(&path.id).ok_or_else(|| ApiError::not_found("no such job"))?;
    Ok((QueueRef::new(&who.user_id, id.queue), id.id))
}

/// A listing's `limit` (default 100, at most [`MAX_PAGE`]).
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Highest publish `priority`.
pub const MAX_PRIORITY: u64 = 9;
/// Most jobs in one batch publish.
pub const MAX_BATCH: usize = 1000;

/// Validates one publish item into a job for `queue`; on error, the offending
/// field and why.
/// A parsed job to publish; `(field, reason)` for what is invalid.
fn draft(
    body: PublishBody,
    idempotency_key: Option<String>,
) -> Result<Draft, (&'static str, String)> {
    let key = parse_lane_key(body.key).map_err(|reason| ("key", reason))?;
    if let Some(own) = &body.idempotency_key {
        valid_idempotency_key(own).map_err(|reason| ("idempotency_key", reason))?;
    }
    let idempotency_key = idempotency_key.or(body.idempotency_key);
    let delay_ms = body.delay_ms.unwrap_or(0);
    if delay_ms > MAX_DELAY_MS {
        return Err(("delay_ms", format!("must be at most {MAX_DELAY_MS}")));
    }
    let priority = match body.priority.unwrap_or(0) {
        p @ 0..=MAX_PRIORITY => p as u8,
        _ => return Err(("priority", format!("must be between 0 and {MAX_PRIORITY}"))),
    };
    Ok(Draft {
        priority,
        key,
        payload: body.payload.get().to_owned(),
        delay_ms,
        idempotency_key,
    })
}

/// An idempotency key: 1 to 255 visible ASCII characters.
fn valid_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ));
    }
    Ok(())
}

/// The `Idempotency-Key` header: at most 255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = |reason: String| ApiError::invalid_field("Idempotency-Key", reason);
    let key = value
        .to_str()
        .map_err(|_| invalid(valid_idempotency_key("").unwrap_err()))?;
    valid_idempotency_key(key).map_err(invalid)?;
    Ok(Some(key.to_owned()))
}

/// Takes `jobs` publishes from the caller's ingress limit (PRODUCT §7.4): `429`
/// with `Retry-After` while it is spent, `422` for a batch larger than the
/// limit's burst (no wait would make it fit). Nothing is enqueued either way.
async fn admit(limiter: &IngressLimiter, who: &Caller, jobs: usize) -> Result<(), ApiError> {
    match limiter.admit(&who.user_id, jobs).await? {
        Admission::Admitted => Ok(()),
        Admission::Wait { retry_after_s } => Err(ApiError::limited(
            "over this account's publish rate limit; retry after Retry-After seconds",
            retry_after_s,
        )),
        Admission::OverCapacity { capacity } => Err(ApiError::invalid_field(
            "jobs",
            format!("a batch may hold at most {capacity} jobs under this account's publish limit"),
        )),
    }
}

/// Publish one job.
#[utoipa::path(post, path = "/v1/queues/{queue}/jobs", operation_id = "publish_job", tag = "jobs", security(("bearer" = [])),
    params(QueuePath,
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1–255 visible ASCII characters; a repeat within the queue's window returns the original job with 200 and enqueues nothing")),
    request_body = PublishBody,
    responses(
        (status = 202, description = "Accepted and durably queued", body = Job, links(
            ("GetJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/id")),
                description = "Read the job (long-poll with `wait_ms`)")),
            ("CancelJob" = (operation_id = "cancel_job", parameters(("id" = "$response.body#/id")),
                description = "Cancel the job while it has not started")),
        )),
        (status = 200, description = "Idempotent repeat: the original job, or `ExpiredDuplicate` when it is gone; nothing is enqueued", body = Repeated),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "Impossible queue name", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid `key`, `delay_ms` or `Idempotency-Key`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the account's publish limit (`limits.publish_per_second`); retry after `Retry-After` seconds. Nothing was enqueued", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds (≥ 1) until the publish fits the limit"))),
        (status = 503, description = "`unavailable`: Redis or MongoDB down, nothing was enqueued; `outcome_unknown`: Redis took the request but its reply was lost, so the job(s) may have been enqueued — retry with the same idempotency key(s)", body = ErrorBody),
    ))]
pub async fn publish(
    req: HttpRequest,
    queues: web::Data<Queues>,
    limiter: web::Data<IngressLimiter>,
    who: Authorized<need::Publish>,
    path: web::Path<QueuePath>,
    ApiJson(body): ApiJson<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    let idempotency_key = idempotency_key(&req)?;
    let draft = draft(body, idempotency_key)
        .map_err(|(field, reason)| ApiError::invalid_field(field, reason))?;
    admit(&limiter, &who, 1).await?;
    match queues.publish(&queue, vec![draft]).await?.pop() {
        Some(Publication::Enqueued(job)) => Ok(HttpResponse::Accepted().json(job)),
        Some(Publication::Repeat {
            original_id,
            original,
        }) => {
            let repeated = match original {
                Some(original) => Repeated::Original(original),
                None => Repeated::Expired(ExpiredDuplicate {
                    id: &original_id,
                    queue: queue.name.as_str(),
                    state: "expired",
                }),
            };
            Ok(HttpResponse::Ok().json(repeated))
        }
        None => Err(ApiError::internal("publish returned no job")),
    }
}

/// Up to 1000 jobs, published atomically with contiguous `seq`s.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// Parsed one by one, so errors name `jobs[i].field`.
    #[schema(value_type = Vec<PublishBody>, min_items = 1, max_items = 1000)]
    jobs: Vec<Box<RawValue>>,
}

/// Publish up to 1000 jobs atomically: all or none, in order.
#[utoipa::path(post, path = "/v1/queues/{queue}/jobs/batch", operation_id = "publish_batch", tag = "jobs", security(("bearer" = [])),
    params(QueuePath,
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "The whole batch's key: job i gets `<key>#<i>` unless it has its own `idempotency_key`; a repeat within the queue's window enqueues nothing and answers the original jobs")),
    request_body = BatchBody,
    responses(
        (status = 200, description = "Idempotent repeat: every job was already published; the original jobs (those still stored), nothing enqueued", body = JobList),
        (status = 202, description = "Accepted, in the given order; jobs whose idempotency key was seen are not enqueued again and appear as the original job (left out when it is gone, past its retention)", body = JobList, links(
            ("GetFirstJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/jobs/0/id")),
                description = "Read the batch's first job")),
        )),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "Impossible queue name", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Empty or over 1000 jobs, more jobs than the account's publish burst, or `jobs[i].field` invalid; nothing was enqueued", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the batch's jobs are over the account's publish limit (a batch counts its jobs); retry after `Retry-After` seconds. Nothing was enqueued", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds (≥ 1) until the batch fits the limit"))),
        (status = 503, description = "`unavailable`: Redis or MongoDB down, nothing was enqueued; `outcome_unknown`: Redis took the request but its reply was lost, so the job(s) may have been enqueued — retry with the same idempotency key(s)", body = ErrorBody),
    ))]
pub async fn publish_batch(
    req: HttpRequest,
    queues: web::Data<Queues>,
    limiter: web::Data<IngressLimiter>,
    who: Authorized<need::Publish>,
    path: web::Path<QueuePath>,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    let batch_key = idempotency_key(&req)?;
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "jobs",
            format!("must hold 1 to {MAX_BATCH} jobs"),
        ));
    }
    let drafts = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("jobs[{i}]");
            let item = parse_item::<PublishBody>(&item, &at)?;
            let mut draft = draft(item, None).map_err(|(field, reason)| {
                ApiError::invalid_field(&format!("{at}.{field}"), reason)
            })?;
            if draft.idempotency_key.is_none() {
                draft.idempotency_key = batch_key.as_ref().map(|key| format!("{key}#{i}"));
            }
            Ok(draft)
        })
        .collect::<Result<Vec<Draft>, ApiError>>()?;
    admit(&limiter, &who, drafts.len()).await?;
    let mut enqueued = 0;
    let jobs: Vec<Job> = queues
        .publish(&queue, drafts)
        .await?
        .into_iter()
        .filter_map(|publication| match publication {
            Publication::Enqueued(job) => {
                enqueued += 1;
                Some(*job)
            }
            Publication::Repeat { original, .. } => original.map(|job| *job),
        })
        .collect();
    log::info!(
        "batch of {enqueued} new jobs published to queue={}",
        queue.name.as_str()
    );
    if enqueued == 0 {
        return Ok(HttpResponse::Ok().json(JobList { jobs }));
    }
    Ok(HttpResponse::Accepted().json(JobList { jobs }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Long-poll: wait up to this many ms (≤ 30000) for the job to reach a terminal state.
    #[param(maximum = 30_000)]
    wait_ms: Option<u64>,
}

/// A job, optionally waiting for it to finish.
#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "get_job", tag = "jobs", security(("bearer" = [])),
    params(JobPath, WaitQuery),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such job (of this user)", body = ErrorBody),
        (status = 422, description = "`wait_ms` over 30000", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn get(
    queues: web::Data<Queues>,
    who: Authorized<need::ReadJob>,
    path: web::Path<JobPath>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &path)?;
    let wait = wait_ms(query.wait_ms)?;
    let job = queues
        .get_and_wait(&queue, &id, wait)
        .await?
        .ok_or_else(|| ApiError::not_found("no such job"))?;
    Ok(HttpResponse::Ok().json(job))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs in this state (`""`: any).
    #[param(schema_with = state_filter_schema)]
    state: Option<String>,
    /// Only jobs of this lane.
    key: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only jobs with a larger `seq` (the previous page's `next`).
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    after: Option<u64>,
}

/// Every `state` filter the listing takes: a job state, or `""` for any.
const STATE_FILTERS: [&str; 9] = [
    "",
    "queued",
    "delayed",
    "active",
    "retrying",
    "blocked",
    "completed",
    "dead",
    "cancelled",
];

fn state_filter_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(STATE_FILTERS))
        .build()
}

/// List a queue's jobs in `seq` order.
#[utoipa::path(get, path = "/v1/queues/{queue}/jobs", operation_id = "list_jobs", tag = "jobs", security(("bearer" = [])),
    params(QueuePath, ListQuery),
    responses(
        (status = 200, description = "One page", body = JobPage),
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
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    let query = query.into_inner();
    let state = match query.state.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(JobState::parse(raw).ok_or_else(|| {
            ApiError::invalid_field("state", "must be a job state (queued, delayed, active, …)")
        })?),
    };
    let limit = page_limit(query.limit)?;
    if queues.registry.get(&queue).await?.is_none() {
        return Err(ApiError::not_found("no such queue"));
    }
    let filter = ListFilter {
        state,
        key: query.key,
        after: query.after.unwrap_or(0),
        limit,
    };
    let page = queues.engine.list(&queue, &filter).await?;
    Ok(HttpResponse::Ok().json(JobPage {
        jobs: page.jobs,
        next: page.next,
    }))
}

/// Cancel a job that has not started (queued, delayed or retrying).
#[utoipa::path(delete, path = "/v1/jobs/{id}", operation_id = "cancel_job", tag = "jobs", security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "Cancelled; its lane moves on", body = Job),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`not_cancellable`: active or finished", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn cancel(
    queues: web::Data<Queues>,
    who: Authorized<need::CancelJob>,
    path: web::Path<JobPath>,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &path)?;
    match queues.engine.cancel(&queue, &id).await? {
        CancelOutcome::Cancelled(job) => {
            log::info!("job_id={} cancelled", job.id);
            Ok(HttpResponse::Ok().json(job))
        }
        CancelOutcome::NotFound => Err(ApiError::not_found("no such job")),
        CancelOutcome::NotCancellable(job) => Err(ApiError::conflict(
            ErrorCode::NotCancellable,
            format!("a job that is {} cannot be cancelled", job.state.as_str()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_state_filters_are_exactly_the_job_states() {
        for filter in &STATE_FILTERS[1..] {
            assert!(JobState::parse(filter).is_some(), "{filter}");
        }
        let listed = serde_json::to_value(<JobState as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            listed["enum"].as_array().unwrap().len(),
            STATE_FILTERS.len() - 1
        );
    }
}
