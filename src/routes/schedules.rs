//! `/v1/queues/{queue}/schedules/*`: cron schedules that publish a job to
//! their queue at each tick ("manage" scope for API keys).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::queues::{QueuePath, path_queue};
use crate::auth::{Authorized, Caller, need};
use crate::error::{ApiError, ErrorBody};
use crate::http::ApiJson;
use crate::queue::Queues;
use crate::queue::model::rfc3339_ms;
use crate::queue::model::{QueueName, QueueRef, parse_lane_key};
use crate::queue::schedules::{Calendar, CatchUp, RunState, Schedule, Schedules};

/// The `{queue}` and `{name}` path parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SchedulePath {
    /// Queue name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    #[param(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    queue: String,
    /// Schedule name, with the same rules as a queue name.
    #[param(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    name: String,
}

impl SchedulePath {
    fn queue(&self) -> QueuePath {
        QueuePath::named(&self.queue)
    }
}

/// A schedule's definition.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Cron pattern: 5 fields (`minute hour day-of-month month day-of-week`)
    /// or 6 with seconds first (`*/10 * * * * *`). Ranges, steps, lists,
    /// names (`MON`, `JAN`), `L`, `#` and `W` are understood.
    #[schema(example = "*/5 * * * *")]
    cron: String,
    /// IANA time zone the pattern is read in (default `UTC`).
    #[schema(example = "Europe/Berlin")]
    timezone: Option<String>,
    /// The payload of every job the schedule publishes.
    #[schema(value_type = Value)]
    payload: Box<RawValue>,
    /// The jobs' ordering lane (≤ 128 characters; default `""`).
    #[schema(max_length = 128)]
    key: Option<String>,
    /// Ticks missed while no Orderly process ran: `none` (default) skips
    /// them, `one` publishes one job for them at start.
    catch_up: Option<CatchUp>,
    /// A paused schedule publishes nothing (default `false`).
    paused: Option<bool>,
}

/// A schedule, with its next and last run.
#[derive(Serialize, ToSchema)]
pub struct ScheduleView {
    name: String,
    queue: String,
    cron: String,
    timezone: String,
    #[schema(value_type = Value)]
    payload: Box<RawValue>,
    key: String,
    catch_up: CatchUp,
    paused: bool,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// When the next job is due; `null` while paused.
    #[schema(format = DateTime)]
    next_run_at: Option<String>,
    /// The tick of the last published job; `null` before the first.
    #[schema(format = DateTime)]
    last_run_at: Option<String>,
    /// The id of the last published job.
    last_job_id: Option<String>,
}

impl ScheduleView {
    fn of(schedule: Schedule, state: RunState) -> Self {
        let rfc3339 = |ms: i64| rfc3339_ms(ms.max(0) as u64);
        let time = |at: mongodb::bson::DateTime| rfc3339(at.timestamp_millis());
        Self {
            payload: RawValue::from_string(schedule.payload)
                .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON")),
            created_at: time(schedule.created_at),
            updated_at: time(schedule.updated_at),
            name: schedule.name,
            queue: schedule.queue,
            cron: schedule.cron,
            timezone: schedule.timezone,
            key: schedule.key,
            catch_up: schedule.catch_up,
            paused: schedule.paused,
            next_run_at: state.next_run_ms.filter(|_| !schedule.paused).map(rfc3339),
            last_run_at: state.last_run_ms.map(rfc3339),
            last_job_id: state.last_job_id,
        }
    }
}

/// `GET /v1/queues/{queue}/schedules` body.
#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    schedules: Vec<ScheduleView>,
}

/// The caller's existing queue named in the path; `404` otherwise.
async fn existing_queue(
    queues: &Queues,
    who: &Caller,
    path: &QueuePath,
) -> Result<QueueRef, ApiError> {
    let queue = path_queue(who, path)?;
    queues
        .registry
        .get(&queue)
        .await?
        .ok_or_else(|| ApiError::not_found("no such queue"))?;
    Ok(queue)
}

/// Views of `schedules` with their run states (one Redis round trip).
async fn views(store: &Schedules, schedules: Vec<Schedule>) -> Result<Vec<ScheduleView>, ApiError> {
    let ids: Vec<&str> = schedules.iter().map(|s| s.id.as_str()).collect();
    let states = store.run_states(&ids).await?;
    Ok(schedules
        .into_iter()
        .zip(states)
        .map(|(schedule, state)| ScheduleView::of(schedule, state))
        .collect())
}

/// Create or replace a schedule.
#[utoipa::path(put, path = "/v1/queues/{queue}/schedules/{name}", operation_id = "put_schedule", tag = "schedules", security(("bearer" = [])),
    params(SchedulePath), request_body = ScheduleBody,
    responses(
        (status = 201, description = "Created", body = ScheduleView),
        (status = 200, description = "Replaced (its last run is kept; the next tick is computed anew)", body = ScheduleView),
        (status = 400, description = "Malformed JSON (an unknown field is a `422`)", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the `manage` scope, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue (of this user)", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Invalid `cron`, `timezone`, `key`, `catch_up` or `name`, per field", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn put(
    queues: web::Data<Queues>,
    store: web::Data<Schedules>,
    who: Authorized<need::Manage>,
    path: web::Path<SchedulePath>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> Result<HttpResponse, ApiError> {
    let name =
        QueueName::parse(&path.name).map_err(|reason| ApiError::invalid_field("name", reason))?;
    let timezone = body.timezone.unwrap_or_else(|| "UTC".to_owned());
    let calendar = Calendar::parse(&body.cron, &timezone).map_err(ApiError::validation)?;
    let key = parse_lane_key(body.key).map_err(|reason| ApiError::invalid_field("key", reason))?;
    let queue = existing_queue(&queues, &who, &path.queue()).await?;
    let now = mongodb::bson::DateTime::now();
    let schedule = Schedule {
        id: Schedule::id_of(&queue, name.as_str()),
        owner: queue.owner.clone(),
        queue: queue.name.as_str().to_owned(),
        name: name.as_str().to_owned(),
        cron: body.cron.trim().to_owned(),
        timezone,
        payload: body.payload.get().to_owned(),
        key,
        catch_up: body.catch_up.unwrap_or_default(),
        paused: body.paused.unwrap_or(false),
        created_at: now,
        updated_at: now,
    };
    let (schedule, created) = store.put(schedule, &calendar).await?;
    log::info!("schedule {} put cron={:?}", schedule.id, schedule.cron);
    let view = views(&store, vec![schedule]).await?.pop();
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(view))
}

/// The queue's schedules, by name.
#[utoipa::path(get, path = "/v1/queues/{queue}/schedules", operation_id = "list_schedules", tag = "schedules", security(("bearer" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "Every schedule of the queue, with next and last runs", body = ScheduleList),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the `manage` scope, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue (of this user)", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn list(
    queues: web::Data<Queues>,
    store: web::Data<Schedules>,
    who: Authorized<need::Manage>,
    path: web::Path<QueuePath>,
) -> Result<HttpResponse, ApiError> {
    let queue = existing_queue(&queues, &who, &path).await?;
    let schedules = views(&store, store.list(&queue).await?).await?;
    Ok(HttpResponse::Ok().json(ScheduleList { schedules }))
}

/// One schedule, with its next and last run.
#[utoipa::path(get, path = "/v1/queues/{queue}/schedules/{name}", operation_id = "get_schedule", tag = "schedules", security(("bearer" = [])),
    params(SchedulePath),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the `manage` scope, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue or schedule (of this user)", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn get(
    queues: web::Data<Queues>,
    store: web::Data<Schedules>,
    who: Authorized<need::Manage>,
    path: web::Path<SchedulePath>,
) -> Result<HttpResponse, ApiError> {
    let queue = existing_queue(&queues, &who, &path.queue()).await?;
    let schedule = store
        .get(&queue, &path.name)
        .await?
        .ok_or_else(|| ApiError::not_found("no such schedule"))?;
    Ok(HttpResponse::Ok().json(views(&store, vec![schedule]).await?.pop()))
}

/// Delete a schedule: it publishes nothing more (jobs it published stay).
#[utoipa::path(delete, path = "/v1/queues/{queue}/schedules/{name}", operation_id = "delete_schedule", tag = "schedules", security(("bearer" = [])),
    params(SchedulePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: an API key without the `manage` scope, or not for this queue", body = ErrorBody),
        (status = 404, description = "No such queue or schedule (of this user)", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis down", body = ErrorBody),
    ))]
pub async fn delete(
    queues: web::Data<Queues>,
    store: web::Data<Schedules>,
    who: Authorized<need::Manage>,
    path: web::Path<SchedulePath>,
) -> Result<HttpResponse, ApiError> {
    let queue = existing_queue(&queues, &who, &path.queue()).await?;
    if !store.delete(&queue, &path.name).await? {
        return Err(ApiError::not_found("no such schedule"));
    }
    log::info!("schedule {} deleted", Schedule::id_of(&queue, &path.name));
    Ok(HttpResponse::NoContent().finish())
}
