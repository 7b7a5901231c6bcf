//! # Orderly
//!
//! A strictly ordered job queue service: one actix `System` holding the HTTP
//! layer and a few actors that talk by messages.
//!
//! A tour of the crate:
//!
//! - [`startup`] builds everything from [`configuration::Settings`] and binds
//!   the listener; `main.rs` only loads settings and calls it.
//! - [`routes`] is the HTTP edge: thin handlers that parse requests into domain
//!   types and send one message to an actor.
//! - [`http`] holds what every route shares: request ids, the JSON body
//!   extractor and the in-flight gauge; [`error`] is the one place where
//!   errors become HTTP statuses and stable `code` strings.
//! - [`auth`] is the auth actor (registration, login), the bounded bcrypt pool,
//!   JWT tokens and the login rate limiter.
//! - [`queue`] is the queues and jobs: the queue engine (one Lua script per
//!   job state transition, `queue::engine`), the producer actor (group-committed
//!   publishes), the supervised worker (push delivery), lease reaper and gauge
//!   sampler, the wake hub, and the queue registry (definitions in MongoDB,
//!   cached in-process and mirrored into Redis).
//! - [`storage`] opens the Redis (one server or a cluster) and MongoDB
//!   connections and probes them.
//! - [`metrics`] owns the per-application Prometheus registry.
//! - [`openapi`] generates the OpenAPI 3.1 document served at `/openapi.json`.
//!
//! Redis holds jobs and queue state; MongoDB holds users and queue
//! definitions. See `README.md` for the API, `docs/architecture.md` for the
//! Redis layout and `config/` for every setting.

pub mod auth;
pub mod configuration;
pub mod error;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod routes;
pub mod startup;
pub mod storage;
