//! Dead letters and stopped jobs: list, order-preserving redrive, and
//! retry / skip of a single job.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::jobs::{page_limit, path_job};
use super::queues::path_queue;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::queue::Queues;
use crate::queue::engine::{ListFilter, Resolution, Resolve};

/// Dead jobs moved back per redrive call at most.
pub const MAX_REDRIVE: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    limit: Option<usize>,
    after: Option<u64>,
}

pub async fn list(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
    query: web::Query<DeadQuery>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &name)?;
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "jobs": page.jobs, "next": page.next })))
}

pub async fn redrive(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &name)?;
    if queues.registry.get(&queue).await?.is_none() {
        return Err(ApiError::not_found("no such queue"));
    }
    let redriven = queues.engine.redrive(&queue, MAX_REDRIVE).await?;
    log::info!(
        "redrove {redriven} dead job(s) in queue={}",
        queue.name.as_str()
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({ "redriven": redriven })))
}

async fn resolve(
    queues: web::Data<Queues>,
    who: Authenticated,
    id: web::Path<String>,
    action: Resolve,
) -> Result<HttpResponse, ApiError> {
    let (queue, id) = path_job(&who, &id)?;
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
            "not_stopped",
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

pub async fn retry(
    queues: web::Data<Queues>,
    who: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    resolve(queues, who, id, Resolve::Retry).await
}

pub async fn skip(
    queues: web::Data<Queues>,
    who: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    resolve(queues, who, id, Resolve::Skip).await
}
