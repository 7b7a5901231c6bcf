//! Dead letters and stopped jobs: list, order-preserving redrive, and
//! retry / skip of a single job.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::jobs::{JobPage, JobPath, page_limit, path_job};
use super::queues::{QueuePath, path_queue};
use crate::auth::{Authorized, need};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::queue::Queues;
use crate::queue::engine::{ListFilter, Resolution, Resolve};
use crate::queue::model::Job;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only jobs with a larger `seq` (the previous page's `next`).
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    after: Option<u64>,
}

/// `POST /v1/queues/{queue}/dead/redrive` body.
#[derive(Serialize, ToSchema)]
pub struct Redriven {
    /// Dead jobs moved back to their lanes (at most 10000 per call).
    redriven: u64,
}

/// Dead jobs in `seq` order.
#[utoipa::path(get, path = "/v1/queues/{queue}/dead", operation_id = "list_dead", tag = "dead letters", security(("bearer" = [])),
    params(QueuePath, DeadQuery),
    responses(
        (status = 200, description = "One page", body = JobPage),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 422, description = "Unknown query parameter (`fields.query`), or invalid `limit`", body = ErrorBody),
        (status = 503, description = "Redis or MongoDB down", body = ErrorBody),
    ))]
pub async fn list(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
    query: web::Query<DeadQuery>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    let limit = page_limit(query.limit)?;
    if queues.registry.get(&queue).await?.is_none() {
        return Err(ApiError::not_found("no such queue"));
    }
    let filter = ListFilter {
        limit,
        after: query.after.unwrap_or(0),
        ..ListFilter::default()
    };
    let page = queues.engine.dead(&queue, &filter).await?;
    Ok(HttpResponse::Ok().json(JobPage {
        jobs: page.jobs,
        next: page.next,
    }))
}

/// Move dead jobs back to their lanes, each where its `seq` belongs.
#[utoipa::path(post, path = "/v1/queues/{queue}/dead/redrive", operation_id = "redrive_dead", tag = "dead letters", security(("bearer" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "How many were moved back", body = Redriven),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
        (status = 503, description = "Redis or MongoDB down", body = ErrorBody),
    ))]
pub async fn redrive(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &path)?;
    if queues.registry.get(&queue).await?.is_none() {
        return Err(ApiError::not_found("no such queue"));
    }
    let redriven = queues.engine.redrive(&queue).await?;
    log::info!(
        "redrove {redriven} dead job(s) in queue={}",
        queue.name.as_str()
    );
    Ok(HttpResponse::Ok().json(Redriven { redriven }))
}

async fn resolve(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<JobPath>,
    action: Resolve,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &path)?;
    match queues.engine.resolve(&queue, &id, action).await? {
        Resolution::Done(job) => {
            log::info!(
                "job_id={} resolved ({action:?}) state={}",
                job.id,
                job.state.as_str()
            );
            Ok(HttpResponse::Ok().json(job))
        }
        Resolution::NotFound => Err(ApiError::not_found("no such job")),
        Resolution::Conflict(job) => Err(ApiError::conflict(
            ErrorCode::NotStopped,
            format!(
                "a job that is {} cannot be {}",
                job.state.as_str(),
                match action {
                    Resolve::Retry => "retried (only blocked or dead jobs can)",
                    Resolve::Skip => "skipped (only blocked jobs can)",
                }
            ),
        )),
    }
}

/// Give a dead or blocked job a fresh set of attempts, in its `seq` place.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", operation_id = "retry_job", tag = "dead letters", security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "Queued again", body = Job),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`not_stopped`: only blocked or dead jobs can be retried", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn retry(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<JobPath>,
) -> Result<HttpResponse, ApiError> {
    resolve(queues, who, path, Resolve::Retry).await
}

/// Dead-letter a blocked job so its lane moves on.
#[utoipa::path(post, path = "/v1/jobs/{id}/skip", operation_id = "skip_job", tag = "dead letters", security(("bearer" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "Now `dead`; the lane continues", body = Job),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the scope this route needs, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`not_stopped`: only blocked jobs can be skipped", body = ErrorBody),
        (status = 503, description = "Redis down", body = ErrorBody),
    ))]
pub async fn skip(
    queues: web::Data<Queues>,
    who: Authorized<need::Manage>,
    path: web::Path<JobPath>,
) -> Result<HttpResponse, ApiError> {
    resolve(queues, who, path, Resolve::Skip).await
}
