//! Pull consumers: long-polling `claim`, and `ack` / `nack` / `extend` under a
//! fenced lease. A stale or expired lease answers `409 lease_lost` and changes
//! nothing.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::jobs::{JobPath, path_job, wait_ms};
use super::outcomes::{self, AckItem, ClaimReply, NackItem};
use super::queues::{QueuePath, path_queue};
use crate::auth::{Authorized, need};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::ApiJson;
use crate::http::json::ApiJsonOrEmpty;
use crate::http::json::integer;
use crate::queue::Queues;
use crate::queue::engine::{Failure, Lease, Transition};
use crate::queue::model::{Job, LEASE_MS_RANGE, QueueRef};
use crate::queue::registry::QueueDefinition;

/// Most jobs one claim returns.
pub const MAX_CLAIM: usize = 100;
/// Longest `retry_in_ms` a nack may ask for (1 day).
pub const MAX_RETRY_IN_MS: u64 = 24 * 3600 * 1000;
/// What to claim; an empty body claims one job without waiting.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Long-poll up to this many ms (≤ 30000) when nothing is ready.
    #[schema(maximum = 30_000)]
    #[serde(default, deserialize_with = "integer::option")]
    wait_ms: Option<u64>,
    /// Up to this many jobs (1–100), each from a different lane.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "integer::option")]
    max_jobs: Option<usize>,
    /// Jobs to complete before claiming (as `POST /v1/queues/{queue}/ack`).
    #[serde(default)]
    #[schema(max_items = 1000)]
    acks: Vec<AckItem>,
    /// Jobs to fail before claiming (as `POST /v1/queues/{queue}/ack`;
    /// at most 1000 outcomes together).
    #[serde(default)]
    #[schema(max_items = 1000)]
    nacks: Vec<NackItem>,
    /// Client-chosen id of this claim (1–64 visible ASCII characters):
    /// repeating the claim with it while the leases it took live answers the
    /// same jobs and leases, so a lost reply never strands a lane.
    #[schema(pattern = "^[!-~]{1,64}$")]
    claim_id: Option<String>,
}

/// Longest `claim_id`.
pub const MAX_CLAIM_ID: usize = 64;

fn claim_id(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(id)
            if id.is_empty()
                || id.len() > MAX_CLAIM_ID
                || !id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Err(ApiError::invalid_field(
                "claim_id",
                format!("must be 1 to {MAX_CLAIM_ID} visible ASCII characters"),
            ))
        }
        other => Ok(other),
    }
}

/// The caller's pull queue: `404` when it does not exist, `409
/// not_a_pull_queue` for a push queue.
pub(crate) async fn pull_queue(
    queues: &Queues,
    queue: &QueueRef,
) -> Result<Arc<QueueDefinition>, ApiError> {
    let definition = queues
        .registry
        .get(queue)
        .await?
        .ok_or_else(|| ApiError::not_found("no such queue"))?;
    if definition.settings.delivery.is_push() {
        return Err(ApiError::conflict(
            ErrorCode::NotAPullQueue,
            "this queue delivers by push; claim works on pull queues",
        ));
    }
    Ok(definition)
}

/// Lease the next startable job(s) of a pull queue, after reporting the
/// outcomes of earlier ones (`acks` / `nacks`, answered in `results`).
#[utoipa::path(post, path = "/v1/queues/{queue}/claim", operation_id = "claim_jobs", tag = "consumers", security(("bearer" = [])),
    params(QueuePath), request_body(content = Option<ClaimBody>, description = "Optional: a request with no body (or `null`) claims one job without waiting"),
    responses(
        (status = 200, description = "Leased jobs, each with `lease` and `lease_expires_at` (empty when none became ready in time); `results` when `acks` or `nacks` were given", body = ClaimReply, links(
            ("AckJob" = (operation_id = "ack_job", parameters(("id" = "$response.body#/jobs/0/id")),
                request_body = json!({"lease": "$response.body#/jobs/0/lease"}),
                description = "Complete the first leased job")),
            ("NackJob" = (operation_id = "nack_job", parameters(("id" = "$response.body#/jobs/0/id")),
                request_body = json!({"lease": "$response.body#/jobs/0/lease"}),
                description = "Fail the first leased job's attempt")),
            ("ExtendLease" = (operation_id = "extend_lease", parameters(("id" = "$response.body#/jobs/0/id")),
                request_body = json!({"lease": "$response.body#/jobs/0/lease"}),
                description = "Keep the first job's lease alive")),
            ("GetJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/jobs/0/id")),
                description = "Read the first leased job")),
        )),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 409, description = "`not_a_pull_queue`", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 415, description = "A body that is not `application/json` (a request with no body needs no `Content-Type`)", body = ErrorBody),
        (status = 422, description = "`wait_ms` or `max_jobs` out of range, an invalid `claim_id`, more than 1000 outcomes or an invalid outcome", body = ErrorBody),
        (status = 503, description = "Redis or MongoDB down", body = ErrorBody),
    ))]
pub async fn claim(
    queues: web::Data<Queues>,
    who: Authorized<need::Consume>,
    path: web::Path<QueuePath>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<ClaimBody>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    let wait = wait_ms(body.wait_ms)?;
    let max_jobs = body.max_jobs.unwrap_or(1);
    if !(1..=MAX_CLAIM).contains(&max_jobs) {
        return Err(ApiError::invalid_field(
            "max_jobs",
            format!("must be between 1 and {MAX_CLAIM}"),
        ));
    }
    let claim_id = claim_id(body.claim_id)?;
    let definition = pull_queue(&queues, &queue).await?;
    // Outcomes of earlier jobs go with the first claim, in one engine run.
    let given = !(body.acks.is_empty() && body.nacks.is_empty());
    let prepared = outcomes::prepare(&queues, &queue, body.acks, body.nacks).await?;
    let lease_ms = definition.settings.lease_ms;
    // Counted, logged and timed as the first claim's run applies them, not
    // after the wait for jobs.
    let mut results = None;
    let jobs = queues
        .claim_and_wait(
            &queue,
            &prepared.items,
            |reported| results = Some(outcomes::results(&queues, &prepared, reported)),
            max_jobs,
            lease_ms,
            wait,
            claim_id.as_deref(),
        )
        .await?;
    let results = if given { results } else { None };
    Ok(HttpResponse::Ok().json(ClaimReply { jobs, results }))
}

/// Complete a leased job.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The `lease` from the claim.
    #[schema(pattern = "^[0-9]{1,19}\\.[!-~]{1,64}$")]
    lease: String,
    /// Any JSON value, stored as the job's `result`.
    #[schema(value_type = Option<Value>)]
    result: Option<Box<RawValue>>,
}

/// Fail a leased job's attempt.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackBody {
    /// The `lease` from the claim.
    #[schema(pattern = "^[0-9]{1,19}\\.[!-~]{1,64}$")]
    lease: String,
    /// Stored as `last_error`.
    error: Option<String>,
    /// Retry after this many ms (≤ 1 day) instead of the queue's backoff.
    #[schema(maximum = 86_400_000)]
    #[serde(default, deserialize_with = "integer::option")]
    retry_in_ms: Option<u64>,
}

/// Keep a lease alive.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// The `lease` from the claim.
    #[schema(pattern = "^[0-9]{1,19}\\.[!-~]{1,64}$")]
    lease: String,
    /// New lease length from now (1000–43200000 ms; default: the queue's `lease_ms`).
    #[schema(minimum = 1000, maximum = 43_200_000)]
    #[serde(default, deserialize_with = "integer::option")]
    lease_ms: Option<u64>,
}

/// The lease in `field`; `422` for anything this service could not have
/// issued: `<fence number>.<token>`, the number at most 19 digits and the
/// token 1–64 visible ASCII characters (the schema's pattern says the same).
pub(crate) fn parse_lease(field: &str, raw: &str) -> Result<Lease, ApiError> {
    let well_formed = raw.split_once('.').is_some_and(|(number, token)| {
        (1..=19).contains(&number.len())
            && number.bytes().all(|b| b.is_ascii_digit())
            && (1..=64).contains(&token.len())
            && token.bytes().all(|b| b.is_ascii_graphic())
    });
    well_formed
        .then(|| Lease::parse(raw))
        .flatten()
        .ok_or_else(|| ApiError::invalid_field(field, "is not a lease this service issued"))
}

/// Checks a nack's `retry_in_ms` (named `field`) against [`MAX_RETRY_IN_MS`].
pub(crate) fn check_retry_in(field: &str, retry_in_ms: Option<u64>) -> Result<(), ApiError> {
    if retry_in_ms.is_some_and(|ms| ms > MAX_RETRY_IN_MS) {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {MAX_RETRY_IN_MS}"),
        ));
    }
    Ok(())
}

/// Counts and logs an applied transition, and the attempt it ended.
fn settled(queues: &Queues, lease: &Lease, transition: Transition) -> Transition {
    // A repeat changed nothing: its transition was counted when it happened.
    if let Transition::Done(job) = &transition {
        queues.metrics.record(job.state);
        observe_attempt(queues, lease);
        log::info!("job_id={} state={}", job.id, job.state.as_str());
    }
    transition
}

/// A pull attempt under `lease` ended (an ack or nack applied now): its
/// time from the claim, in the processing-time histogram (as the push worker
/// observes its deliveries).
pub(crate) fn observe_attempt(queues: &Queues, lease: &Lease) {
    if let Some(issued) = lease.issued_at_ms() {
        let ms = crate::queue::model::now_ms().saturating_sub(issued);
        queues.metrics.processing.observe(ms as f64 / 1000.0);
    }
}

/// Completes job `id` held under `lease`, storing `result` (JSON `null` when absent).
async fn ack_job(
    queues: &Queues,
    queue: &QueueRef,
    id: &str,
    lease: &Lease,
    result: Option<&RawValue>,
) -> Result<Transition, ApiError> {
    let result = result.map_or("null", RawValue::get);
    let transition = queues.engine.ack(queue, id, lease, result).await?;
    Ok(settled(queues, lease, transition))
}

/// `last_error` of a nack that gives none.
pub(crate) const NACK_ERROR: &str = "nacked by the consumer";

/// The queue's backoff, for a nack without `retry_in_ms` (1 s if the queue
/// is gone).
pub(crate) async fn queue_backoff(queues: &Queues, queue: &QueueRef) -> Result<Failure, ApiError> {
    Ok(match queues.registry.get(queue).await? {
        Some(definition) => Failure::Backoff {
            initial_ms: definition.settings.backoff.initial_ms,
            max_ms: definition.settings.backoff.max_ms,
        },
        None => Failure::Retry { in_ms: 1_000 },
    })
}

/// Fails the attempt of job `id` held under `lease`; it retries after
/// `retry_in_ms`, or the queue's backoff when absent.
async fn nack_job(
    queues: &Queues,
    queue: &QueueRef,
    id: &str,
    lease: &Lease,
    error: Option<&str>,
    retry_in_ms: Option<u64>,
) -> Result<Transition, ApiError> {
    let failure = match retry_in_ms {
        Some(in_ms) => Failure::Retry { in_ms },
        None => queue_backoff(queues, queue).await?,
    };
    let error = error.unwrap_or(NACK_ERROR);
    let transition = queues.engine.fail(queue, id, lease, error, failure).await?;
    Ok(settled(queues, lease, transition))
}

/// Maps a lease-holder transition to the response.
/// An ack's or nack's job carries its lease's `outcome`: the state it
/// reached, or on a repeat the outcome the first call produced.
fn answer(transition: Transition) -> Result<HttpResponse, ApiError> {
    match transition {
        Transition::Done(mut job) => {
            job.outcome = Some(job.state);
            Ok(HttpResponse::Ok().json(job))
        }
        Transition::Repeated { outcome, mut job } => {
            job.outcome = Some(outcome);
            Ok(HttpResponse::Ok().json(job))
        }
        Transition::LeaseLost(Some(_)) => Err(ApiError::conflict(
            ErrorCode::LeaseLost,
            "the lease is stale or expired; the job's outcome was not changed",
        )),
        Transition::LeaseLost(None) => Err(ApiError::not_found("no such job")),
    }
}

/// Acknowledge: the job is `completed` and its lane moves on.
#[utoipa::path(post, path = "/v1/jobs/{id}/ack", operation_id = "ack_job", tag = "consumers", security(("bearer" = [])),
    params(JobPath), request_body = AckBody,
    responses(
        (status = 200, description = "Completed", body = Job),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`lease_lost`: stale or expired lease; nothing changed", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Not a lease this service issued", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn ack(
    queues: web::Data<Queues>,
    who: Authorized<need::Consume>,
    path: web::Path<JobPath>,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &path)?;
    let lease = parse_lease("lease", &body.lease)?;
    answer(ack_job(&queues, &queue, &id, &lease, body.result.as_deref()).await?)
}

/// Negative acknowledgement: retry later (at the head of its lane) or, out of attempts, dead-letter/block.
#[utoipa::path(post, path = "/v1/jobs/{id}/nack", operation_id = "nack_job", tag = "consumers", security(("bearer" = [])),
    params(JobPath), request_body = NackBody,
    responses(
        (status = 200, description = "`retrying`, `dead` or `blocked`", body = Job),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`lease_lost`: stale or expired lease; nothing changed", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid lease or `retry_in_ms`", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn nack(
    queues: web::Data<Queues>,
    who: Authorized<need::Consume>,
    path: web::Path<JobPath>,
    ApiJson(body): ApiJson<NackBody>,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &path)?;
    let lease = parse_lease("lease", &body.lease)?;
    check_retry_in("retry_in_ms", body.retry_in_ms)?;
    let (error, retry_in_ms) = (body.error.as_deref(), body.retry_in_ms);
    answer(nack_job(&queues, &queue, &id, &lease, error, retry_in_ms).await?)
}

/// Extend a lease.
#[utoipa::path(post, path = "/v1/jobs/{id}/extend", operation_id = "extend_lease", tag = "consumers", security(("bearer" = [])),
    params(JobPath), request_body = ExtendBody,
    responses(
        (status = 200, description = "The job with its new `lease_expires_at`", body = Job),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`lease_lost`", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid lease or `lease_ms`", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn extend(
    queues: web::Data<Queues>,
    who: Authorized<need::Consume>,
    path: web::Path<JobPath>,
    ApiJson(body): ApiJson<ExtendBody>,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &path)?;
    let lease = parse_lease("lease", &body.lease)?;
    let lease_ms = match body.lease_ms {
        Some(ms) if !(LEASE_MS_RANGE.0..=LEASE_MS_RANGE.1).contains(&ms) => {
            return Err(ApiError::invalid_field(
                "lease_ms",
                "must be between 1000 and 43200000",
            ));
        }
        Some(ms) => ms,
        None => queues
            .registry
            .get(&queue)
            .await?
            .map_or(LEASE_MS_RANGE.0, |d| d.settings.lease_ms),
    };
    match queues.engine.extend(&queue, &id, &lease, lease_ms).await? {
        Transition::Done(mut job) => {
            job.lease = Some(lease.render());
            Ok(HttpResponse::Ok().json(job))
        }
        lost => answer(lost),
    }
}
