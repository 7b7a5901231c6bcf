//! `/v1/queues/*`: queue definitions, pause/resume and stats.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::http::ApiJson;
use crate::queue::Queues;
use crate::queue::delivery::check_target;
use crate::queue::engine::RawStats;
use crate::queue::model::{Backoff, Delivery, OnExhausted, QueueRef, QueueSettings};
use crate::queue::registry::{QueueDefinition, queue_ref};

/// The caller's queue named in the path; `404` for a name that cannot exist.
pub fn path_queue(who: &Authenticated, raw: &str) -> Result<QueueRef, ApiError> {
    queue_ref(&who.user_id, raw).map_err(|_| ApiError::not_found("no such queue"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryBody {
    mode: String,
    url: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    delivery: Option<DeliveryBody>,
    max_attempts: Option<u32>,
    backoff: Option<Backoff>,
    on_exhausted: Option<OnExhausted>,
    lease_ms: Option<u64>,
    retention_s: Option<u64>,
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
            backoff: self.backoff.unwrap_or(defaults.backoff),
            on_exhausted: self.on_exhausted.unwrap_or(defaults.on_exhausted),
            lease_ms: self.lease_ms.unwrap_or(defaults.lease_ms),
            retention_s: self.retention_s.unwrap_or(defaults.retention_s),
        };
        settings.validate().map_err(ApiError::validation)?;
        Ok(settings)
    }
}

/// Queue counts as the API shows them.
#[derive(Serialize)]
pub struct StatsView {
    waiting: u64,
    delayed: u64,
    active: u64,
    blocked: u64,
    completed: u64,
    dead: u64,
    cancelled: u64,
    retried: u64,
    oldest_waiting_age_ms: u64,
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
        }
    }
}

/// The queue object.
#[derive(Serialize)]
pub struct QueueView<'a> {
    name: &'a str,
    #[serde(flatten)]
    settings: &'a QueueSettings,
    paused: bool,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<StatsView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_secret: Option<String>,
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

pub async fn put(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
    ApiJson(body): ApiJson<SettingsBody>,
) -> Result<HttpResponse, ApiError> {
    let queue =
        queue_ref(&who.user_id, &name).map_err(|reason| ApiError::invalid_field("name", reason))?;
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

pub async fn list(queues: web::Data<Queues>, who: Authenticated) -> Result<HttpResponse, ApiError> {
    let definitions = queues.registry.list(&who.user_id).await?;
    let views: Vec<QueueView> = definitions.iter().map(QueueView::of).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "queues": views })))
}

pub async fn get(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &name)?;
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

pub async fn delete(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &name)?;
    if !queues.registry.delete(&queue).await? {
        return Err(ApiError::not_found("no such queue"));
    }
    Ok(HttpResponse::NoContent().finish())
}

async fn set_paused(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    let queue = path_queue(&who, &name)?;
    let definition = queues
        .registry
        .set_paused(&queue, paused)
        .await?
        .ok_or_else(|| ApiError::not_found("no such queue"))?;
    Ok(HttpResponse::Ok().json(QueueView::of(&definition)))
}

pub async fn pause(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(queues, who, name, true).await
}

pub async fn resume(
    queues: web::Data<Queues>,
    who: Authenticated,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(queues, who, name, false).await
}
