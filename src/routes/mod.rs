//! The HTTP edge: thin handlers that extract, parse into domain types, send
//! one actor message and map the reply to JSON. Route patterns are registered
//! here, in one place.

pub mod auth;
pub mod consumers;
pub mod dead;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod queues;

use actix_web::web;

use crate::error::ApiError;

/// Registers every route of the API; `/metrics` only when `expose_metrics`.
pub fn configure(cfg: &mut web::ServiceConfig, expose_metrics: bool) {
    if expose_metrics {
        cfg.route("/metrics", web::get().to(metrics::scrape));
    }
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope("/v1/auth")
                .route("/register", web::post().to(auth::register))
                .route("/login", web::post().to(auth::login))
                .route("/me", web::get().to(auth::me)),
        )
        .service(
            web::scope("/v1/queues")
                .route("", web::get().to(queues::list))
                .route("/{queue}", web::put().to(queues::put))
                .route("/{queue}", web::get().to(queues::get))
                .route("/{queue}", web::delete().to(queues::delete))
                .route("/{queue}/pause", web::post().to(queues::pause))
                .route("/{queue}/resume", web::post().to(queues::resume))
                .route("/{queue}/jobs", web::post().to(jobs::publish))
                .route("/{queue}/jobs", web::get().to(jobs::list))
                .route("/{queue}/jobs/batch", web::post().to(jobs::publish_batch))
                .route("/{queue}/claim", web::post().to(consumers::claim))
                .route("/{queue}/dead", web::get().to(dead::list))
                .route("/{queue}/dead/redrive", web::post().to(dead::redrive)),
        )
        .service(
            web::scope("/v1/jobs")
                .route("/{id}", web::get().to(jobs::get))
                .route("/{id}", web::delete().to(jobs::cancel))
                .route("/{id}/ack", web::post().to(consumers::ack))
                .route("/{id}/nack", web::post().to(consumers::nack))
                .route("/{id}/extend", web::post().to(consumers::extend))
                .route("/{id}/retry", web::post().to(dead::retry))
                .route("/{id}/skip", web::post().to(dead::skip)),
        );
}

/// Fallback for paths no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found("no such route"))
}
