//! Jobs: publish, read (with long-poll), list and cancel.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::queues::path_queue;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::http::ApiJson;
use crate::queue::Queues;
use crate::queue::engine::{CancelOutcome, ListFilter, NewJob, Published};
use crate::queue::model::{
    Job, JobId, JobState, MAX_DELAY_MS, QueueRef, parse_lane_key, rfc3339_ms,
};
use crate::queue::producer::Publish;

/// Longest `wait_ms` accepted by long-polls.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Largest page of a job listing.
pub const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    payload: Box<RawValue>,
    key: Option<String>,
    delay_ms: Option<u64>,
}

/// The caller's job named by `raw`, as (queue, id); `404` for ids that cannot exist.
fn path_job(who: &Authenticated, raw: &str) -> Result<(QueueRef, String), ApiError> {
    let id = JobId::parse(raw).ok_or_else(|| ApiError::not_found("no such job"))?;
    Ok((QueueRef::new(&who.user_id, id.queue), id.id))
}

/// Validates one publish item into a job for `queue`.
pub fn new_job(queue: &QueueRef, body: PublishBody, max_attempts: u32) -> Result<NewJob, ApiError> {
    let key = parse_lane_key(body.key).map_err(|reason| ApiError::invalid_field("key", reason))?;
    let delay_ms = body.delay_ms.unwrap_or(0);
    if delay_ms > MAX_DELAY_MS {
        return Err(ApiError::invalid_field(
            "delay_ms",
            format!("must be at most {MAX_DELAY_MS}"),
        ));
    }
    Ok(NewJob {
        queue: queue.clone(),
        id: JobId::generate(&queue.name).id,
        key,
        payload: body.payload.get().to_owned(),
        delay_ms,
        max_attempts,
    })
}

/// The job object of a freshly published job.
pub fn published_job(job: NewJob, published: Published) -> Job {
    let available = published.created_at_ms + job.delay_ms;
    let delayed = job.delay_ms > 0;
    Job {
        id: job.id,
        queue: job.queue.name.as_str().to_owned(),
        key: job.key,
        seq: published.seq,
        state: if delayed {
            JobState::Delayed
        } else {
            JobState::Queued
        },
        payload: RawValue::from_string(job.payload).unwrap_or_else(|_| null()),
        attempts: 0,
        max_attempts: job.max_attempts,
        result: None,
        last_error: None,
        created_at: rfc3339_ms(published.created_at_ms),
        started_at: None,
        finished_at: None,
        available_at: delayed.then(|| rfc3339_ms(available)),
        lease: None,
        lease_expires_at: None,
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

pub async fn publish(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
    ApiJson(body): ApiJson<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &name)?;
    let definition = queues.registry.get_or_create(&queue).await?;
    let job = new_job(&queue, body, definition.settings.max_attempts)?;
    let published = queues.producer.send(Publish(vec![job.clone()])).await??;
    let published = published
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("publish returned no job"))?;
    log::info!("job_id={} published seq={}", job.id, published.seq);
    Ok(HttpResponse::Accepted().json(published_job(job, published)))
}

#[derive(Deserialize)]
pub struct WaitQuery {
    wait_ms: Option<u64>,
}

pub async fn get(
    queues: web::Data<Queues>,
    who: Authenticated,
    id: web::Path<String>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &id)?;
    let wait_ms = query.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid_field(
            "wait_ms",
            format!("must be at most {MAX_WAIT_MS}"),
        ));
    }
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let job = queues
            .engine
            .get(&queue, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such job"))?;
        if job.state.is_terminal() || Instant::now() >= deadline {
            return Ok(HttpResponse::Ok().json(job));
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    key: Option<String>,
    limit: Option<usize>,
    after: Option<u64>,
}

pub async fn list(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &name)?;
    let query = query.into_inner();
    let state = match query.state.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(JobState::parse(raw).ok_or_else(|| {
            ApiError::invalid_field("state", "must be a job state (queued, delayed, active, …)")
        })?),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let filter = ListFilter {
        state,
        key: query.key,
        after: query.after.unwrap_or(0),
        limit,
    };
    let page = queues.engine.list(&queue, &filter).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "jobs": page.jobs, "next": page.next })))
}

pub async fn cancel(
    queues: web::Data<Queues>,
    who: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &id)?;
    match queues.engine.cancel(&queue, &id).await? {
        CancelOutcome::Cancelled(job) => {
            log::info!("job_id={} cancelled", job.id);
            Ok(HttpResponse::Ok().json(job))
        }
        CancelOutcome::NotFound => Err(ApiError::not_found("no such job")),
        CancelOutcome::NotCancellable(job) => Err(ApiError::conflict(
            "not_cancellable",
            format!("a job that is {} cannot be cancelled", job.state.as_str()),
        )),
    }
}
