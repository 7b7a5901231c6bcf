//! Queues and jobs.
//!
//! - [`engine`]: the queue engine; every job state transition is one atomic
//!   Lua script beside its module. The only writer of queue keys in Redis.
//! - [`producer`]: the queue-producer actor (group-committed publishes).
//! - [`worker`]: the supervised worker actor (push delivery, retries);
//!   [`ack_commit`]: its group commit of acks.
//! - [`reaper`]: the supervised lease reaper (expired leases back to lane heads).
//! - [`sampler`]: the supervised gauge sampler (live queues only).
//! - [`ingress`]: the per-tenant publish limit (a token bucket in Redis).
//! - [`schedules`]: cron schedules (definitions in MongoDB, due ticks in
//!   Redis); [`scheduler`]: the supervised actor that publishes their ticks.
//! - [`delivery`]: one signed push attempt and the SSRF guard.
//! - [`registry`]: queue definitions in MongoDB, cached in-process.
//! - [`notify`]: the process-wide wake subscription (pub/sub or sharded pub/sub).
//! - [`service`]: the long-polls the HTTP handlers call (claim-and-wait,
//!   get-and-wait), waiting on the wake hub.
//! - [`model`]: names, ids, settings and the job object.

pub mod ack_commit;
pub mod delivery;
pub mod engine;
pub mod ingress;
pub mod model;
pub mod notify;
pub mod producer;
pub mod reaper;
pub mod registry;
pub mod sampler;
pub mod scheduler;
pub mod schedules;
pub mod service;
pub mod worker;

use actix::Addr;

/// The queue handles the HTTP layer uses.
pub struct Queues {
    pub registry: registry::QueueRegistry,
    pub engine: engine::Engine,
    pub producer: Addr<producer::Producer>,
    pub hub: notify::WakeHub,
    /// SSRF switch (`delivery.allow_private_targets`).
    pub allow_private_targets: bool,
    /// Push timeout of a queue whose `delivery` does not name one.
    pub default_push_timeout_ms: u64,
    pub metrics: crate::metrics::JobMetrics,
}
