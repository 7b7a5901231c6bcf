//! Batch outcomes (§7.3): one request completes or fails many leased jobs of
//! a pull queue, and `claim` can carry the same `acks` / `nacks` before it
//! leases more. All items go to Redis in one script run (`outcomes.lua`;
//! for `claim`, the claim's own run, before it leases: `apply_outcomes` in
//! lib.lua), each through the same lease-holder transitions as the single `ack` /
//! `nack` routes; a stale lease or an unknown id is an item's status, never
//! an error of the whole request. Items are validated before any is applied,
//! so a `422` changes nothing.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::consumers::{NACK_ERROR, check_retry_in, parse_lease, pull_queue, queue_backoff};
use super::queues::{QueuePath, path_queue};
use crate::auth::{Authorized, need};
use crate::error::{ApiError, ErrorBody};
use crate::http::ApiJson;
use crate::http::json::integer;
use crate::queue::Queues;
use crate::queue::engine::{Failure, Lease, Outcome as EngineOutcome, OutcomeKind, Reported};
use crate::queue::model::{Job, JobId, JobState, QueueRef};

/// Most outcomes (acks and nacks together) in one request.
pub const MAX_OUTCOMES: usize = 1000;

/// Complete one leased job.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckItem {
    /// The job id from the claim.
    id: String,
    /// The `lease` from the claim.
    #[schema(pattern = "^[0-9]{1,19}\\.[!-~]{1,64}$")]
    lease: String,
    /// Any JSON value, stored as the job's `result`.
    #[schema(value_type = Option<Value>)]
    result: Option<Box<RawValue>>,
}

/// Fail one leased job's attempt.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackItem {
    /// The job id from the claim.
    id: String,
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

/// Outcomes of leased jobs of this queue: at most 1000 items, acks and
/// nacks together.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomesBody {
    /// Jobs to complete, applied first, in order.
    #[serde(default)]
    #[schema(max_items = 1000)]
    acks: Vec<AckItem>,
    /// Jobs to fail, applied after the acks, in order.
    #[serde(default)]
    #[schema(max_items = 1000)]
    nacks: Vec<NackItem>,
}

/// What became of one reported job.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Completed,
    Retrying,
    Dead,
    Blocked,
    /// The lease is stale or expired; the job was not changed.
    LeaseLost,
    /// No such job in this queue.
    NotFound,
}

/// One item's outcome.
#[derive(Serialize, ToSchema)]
pub struct Outcome {
    pub id: String,
    pub status: OutcomeStatus,
}

/// Outcomes in request order: the acks, then the nacks.
#[derive(Serialize, ToSchema)]
pub struct OutcomeList {
    pub results: Vec<Outcome>,
}

/// The reply of `claim`.
#[derive(Serialize, ToSchema)]
pub struct ClaimReply {
    pub jobs: Vec<Job>,
    /// Outcomes of the request's `acks` then `nacks`; only when it had any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Outcome>>,
}

/// One validated item.
enum Item {
    Ack(Option<Box<RawValue>>),
    Nack {
        error: Option<String>,
        retry_in_ms: Option<u64>,
    },
}

/// A validated item with the job it names; `job` is `None` for ids that
/// cannot name a job of this queue.
struct Parsed {
    raw_id: String,
    job: Option<String>,
    lease: Lease,
    item: Item,
}

/// The job id if `raw` can name a job of `queue`.
fn job_of(queue: &QueueRef, raw: &str) -> Option<String> {
    JobId::parse(raw)
        .filter(|id| id.queue == queue.name)
        .map(|id| id.id)
}

/// Validates every item (`422` naming the first bad field), acks first.
fn parse(
    queue: &QueueRef,
    acks: Vec<AckItem>,
    nacks: Vec<NackItem>,
) -> Result<Vec<Parsed>, ApiError> {
    if acks.len() + nacks.len() > MAX_OUTCOMES {
        return Err(ApiError::invalid_field(
            "acks",
            format!("acks and nacks together must hold at most {MAX_OUTCOMES} items"),
        ));
    }
    let mut parsed = Vec::with_capacity(acks.len() + nacks.len());
    for (n, ack) in acks.into_iter().enumerate() {
        parsed.push(Parsed {
            job: job_of(queue, &ack.id),
            lease: parse_lease(&format!("acks[{n}].lease"), &ack.lease)?,
            raw_id: ack.id,
            item: Item::Ack(ack.result),
        });
    }
    for (n, nack) in nacks.into_iter().enumerate() {
        check_retry_in(&format!("nacks[{n}].retry_in_ms"), nack.retry_in_ms)?;
        parsed.push(Parsed {
            job: job_of(queue, &nack.id),
            lease: parse_lease(&format!("nacks[{n}].lease"), &nack.lease)?,
            raw_id: nack.id,
            item: Item::Nack {
                error: nack.error,
                retry_in_ms: nack.retry_in_ms,
            },
        });
    }
    Ok(parsed)
}

fn status(reported: Reported) -> OutcomeStatus {
    match reported.settled() {
        Reported::Completed => OutcomeStatus::Completed,
        Reported::Retrying => OutcomeStatus::Retrying,
        Reported::Dead => OutcomeStatus::Dead,
        Reported::Blocked => OutcomeStatus::Blocked,
        Reported::LeaseLost => OutcomeStatus::LeaseLost,
        Reported::NotFound | Reported::Repeated(_) => OutcomeStatus::NotFound,
    }
}

/// Validated outcomes ready for the engine: `items` holds those that can
/// name a job of the queue, in order (acks, then nacks).
pub struct Prepared {
    parsed: Vec<Parsed>,
    pub items: Vec<EngineOutcome>,
}

/// Validates the outcomes (`422` naming the first bad field) and makes the
/// engine's items of them.
pub async fn prepare(
    queues: &Queues,
    queue: &QueueRef,
    acks: Vec<AckItem>,
    nacks: Vec<NackItem>,
) -> Result<Prepared, ApiError> {
    let parsed = parse(queue, acks, nacks)?;
    // The queue's backoff, for nacks without `retry_in_ms`.
    let needs_backoff = parsed.iter().any(|p| {
        matches!(
            p.item,
            Item::Nack {
                retry_in_ms: None,
                ..
            }
        )
    });
    let backoff = if needs_backoff {
        queue_backoff(queues, queue).await?
    } else {
        Failure::Permanent
    };
    let mut items = Vec::with_capacity(parsed.len());
    for p in &parsed {
        let Some(id) = &p.job else { continue };
        let kind = match &p.item {
            Item::Ack(result) => OutcomeKind::Ack {
                result: result.as_deref().map_or("null", RawValue::get).to_owned(),
            },
            Item::Nack { error, retry_in_ms } => OutcomeKind::Nack {
                error: error.clone().unwrap_or_else(|| NACK_ERROR.into()),
                failure: retry_in_ms.map_or(backoff, |in_ms| Failure::Retry { in_ms }),
            },
        };
        items.push(EngineOutcome {
            id: id.clone(),
            lease: p.lease.clone(),
            kind,
        });
    }
    Ok(Prepared { parsed, items })
}

/// One result per outcome given, from what the engine reported for the
/// prepared items (ids that name no job of the queue are `not_found`);
/// counts the transitions.
pub fn results(queues: &Queues, prepared: &Prepared, reported: Vec<Reported>) -> Vec<Outcome> {
    let mut reported = reported.into_iter();
    let mut results = Vec::with_capacity(prepared.parsed.len());
    for p in &prepared.parsed {
        let reported = match p.job {
            None => Reported::NotFound,
            Some(_) => reported.next().unwrap_or(Reported::NotFound),
        };
        let status = status(reported);
        // A repeat changed nothing: it was counted when it happened.
        let counted = !matches!(reported, Reported::Repeated(_));
        let state = match status {
            _ if !counted => None,
            OutcomeStatus::Completed => Some(JobState::Completed),
            OutcomeStatus::Retrying => Some(JobState::Retrying),
            OutcomeStatus::Dead => Some(JobState::Dead),
            OutcomeStatus::Blocked => Some(JobState::Blocked),
            OutcomeStatus::LeaseLost | OutcomeStatus::NotFound => None,
        };
        if let Some(state) = state {
            // One line per job transition, as a single ack or nack logs it.
            log::info!("job_id={} state={}", p.raw_id, state.as_str());
            queues.metrics.record(state);
            super::consumers::observe_attempt(queues, &p.lease);
        }
        results.push(Outcome {
            id: p.raw_id.clone(),
            status,
        });
    }
    results
}

/// Applies the outcomes in order (acks, then nacks) in one engine run and
/// returns one status per item.
pub async fn report(
    queues: &Queues,
    queue: &QueueRef,
    acks: Vec<AckItem>,
    nacks: Vec<NackItem>,
) -> Result<Vec<Outcome>, ApiError> {
    let prepared = prepare(queues, queue, acks, nacks).await?;
    let reported = if prepared.items.is_empty() {
        Vec::new()
    } else {
        queues
            .engine
            .report_outcomes(queue, &prepared.items)
            .await?
    };
    Ok(results(queues, &prepared, reported))
}

/// Report the outcomes of many leased jobs of a pull queue at once.
#[utoipa::path(post, path = "/v1/queues/{queue}/ack", operation_id = "report_outcomes", tag = "consumers", security(("bearer" = [])),
    params(QueuePath), request_body = OutcomesBody,
    responses(
        (status = 200, description = "One status per item, acks first, in request order", body = OutcomeList),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 409, description = "`not_a_pull_queue`", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "More than 1000 items, a lease this service never issued or `retry_in_ms` out of range", body = ErrorBody),
        (status = 503, description = "Redis or MongoDB down", body = ErrorBody),
    ))]
pub async fn outcomes(
    queues: web::Data<Queues>,
    who: Authorized<need::Consume>,
    path: web::Path<QueuePath>,
    ApiJson(body): ApiJson<OutcomesBody>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    pull_queue(&queues, &queue).await?;
    let results = report(&queues, &queue, body.acks, body.nacks).await?;
    Ok(HttpResponse::Ok().json(OutcomeList { results }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_other_queues_name_no_job() {
        let queue = QueueRef::new("owner", crate::queue::model::QueueName::parse("a").unwrap());
        let other = JobId::generate(&crate::queue::model::QueueName::parse("b").unwrap());
        assert_eq!(job_of(&queue, &other.id), None);
        let own = JobId::generate(&queue.name);
        assert_eq!(job_of(&queue, &own.id), Some(own.id.clone()));
        assert_eq!(job_of(&queue, "not-an-id"), None);
    }
}
