//! Wiring: builds every actor and the HTTP server from [`Settings`].
//!
//! [`Application::build`] must run inside an actix `System` (the binary's
//! `main`, or an `#[actix_web::test]`). It binds the listener itself, so tests
//! pass port `0` and read the real one from [`Application::port`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Supervisor};
use actix_web::dev::{Server, ServerHandle, ServiceRequest};
use actix_web::middleware::{Condition, Logger, from_fn};
use actix_web::{App, HttpMessage, HttpServer, web};
use mongodb::Database;

use crate::auth::hasher::HashPool;
use crate::auth::rate_limit::LoginLimiter;
use crate::auth::users::UserStore;
use crate::auth::{ApiKeys, AuthActor, TokenKeys};
use crate::configuration::{ConfigError, Settings};
use crate::error::ApiError;
use crate::http::in_flight::{self, InFlight};
use crate::http::{RequestId, request_id};
use crate::metrics::Metrics;
use crate::queue::Queues;
use crate::queue::ack_commit::AckCommit;
use crate::queue::delivery::Pusher;
use crate::queue::engine::{Engine, RedisConn};
use crate::queue::ingress::IngressLimiter;
use crate::queue::notify::WakeHub;
use crate::queue::producer::Producer;
use crate::queue::registry::QueueRegistry;
use crate::queue::schedules::Schedules;
use crate::queue::worker::{Drain, Worker, WorkerDeps};
use crate::queue::{reaper, sampler, scheduler};
use crate::{routes, storage};

/// One access-log line per request, tagged with the request id.
const ACCESS_LOG: &str = "%a \"%r\" %s %b %Dms request_id=%{request_id}xi";
/// Where the access log goes (actix's default target, named so the level
/// check at startup and the Logger agree).
const ACCESS_LOG_TARGET: &str = "actix_web::middleware::logger";

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Handles to the backing stores, for readiness probes.
pub struct Dependencies {
    pub redis: RedisConn,
    pub mongo: Database,
}

/// A built, bound, not yet awaited Orderly server.
pub struct Application {
    port: u16,
    server: Server,
    worker: Addr<Worker>,
    grace: Duration,
    /// Held for as long as the application runs: a supervised actor is only
    /// restarted after it stops while someone still holds its address.
    _background: Background,
}

/// The addresses of the supervised background actors.
struct Background {
    _reaper: Addr<reaper::Reaper>,
    _sampler: Addr<sampler::Sampler>,
    _scheduler: Addr<scheduler::Scheduler>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.validate()?;
        // First: a port in use is refused before any actor starts.
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))?;
        let redis = storage::redis_connection(&settings.redis)?;
        let mongo = storage::mongo_database(&settings.mongodb).await?;
        let metrics = Metrics::new().map_err(|e| StartupError::Other(e.to_string()))?;

        let auth_settings = &settings.auth;
        let hasher = HashPool::start(
            auth_settings.hash_threads,
            auth_settings.hash_queue,
            auth_settings.bcrypt_cost,
        );
        let dummy_hash = hasher
            .hash(uuid::Uuid::new_v4().to_string())
            .await
            .map_err(|e| StartupError::Other(format!("cannot compute the dummy hash: {e}")))?;
        let tokens = Arc::new(TokenKeys::new(auth_settings));
        let limiter = LoginLimiter::new(
            redis.clone(),
            &settings.redis.key_prefix,
            settings.rate_limit.clone(),
        );
        let auth = AuthActor::new(
            UserStore::new(&mongo),
            hasher,
            tokens.clone(),
            limiter,
            dummy_hash,
        )
        .start();

        let engine = Engine::new(
            redis.clone(),
            &settings.redis.key_prefix,
            settings.redis.slot_groups(),
        )
        .with_replica_wait(crate::queue::engine::ReplicaWait {
            replicas: settings.redis.wait_replicas,
            timeout_ms: settings.redis.wait_timeout_ms,
        });
        // Data written with another number of slot groups would be looked
        // for in the wrong slots: refuse to start (when Redis answers now;
        // otherwise the first start that reaches it records the number).
        match engine.check_layout().await {
            Err(crate::queue::engine::EngineError::Unexpected(why)) => {
                return Err(StartupError::Other(why));
            }
            Err(err) => log::warn!("redis layout not checked yet: {err}"),
            Ok(()) => {}
        }
        let policy = storage::redis_maxmemory_policy(redis.clone(), Duration::from_secs(1)).await;
        if let Some(warning) = policy.as_deref().and_then(storage::eviction_warning) {
            log::warn!("{warning}");
        }
        let registry = QueueRegistry::new(&mongo, engine.clone(), settings.queues.clone());
        let producer = Producer::new(
            engine.clone(),
            metrics.jobs.published.clone(),
            settings.queues.idempotency_window_s,
        )
        .start();
        let pusher = Pusher::new(settings.delivery.allow_private_targets)
            .map_err(|e| StartupError::Other(format!("http client: {e}")))?;
        let worker_deps = Arc::new(WorkerDeps {
            acks: AckCommit::new(engine.clone(), settings.worker.lease_ms),
            engine: engine.clone(),
            registry: registry.clone(),
            pusher,
            metrics: metrics.jobs.clone(),
            lease_ms: settings.worker.lease_ms,
            waiting_queues: Default::default(),
            unreadable: Default::default(),
        });
        let concurrency = settings.worker.concurrency;
        let worker = Supervisor::start(move |_| Worker::new(worker_deps, concurrency));
        let reaper = reaper::start(engine.clone(), metrics.jobs.clone());
        let sampler = sampler::start(engine.clone(), metrics.jobs.clone());
        let hub = WakeHub::start(&settings.redis, engine.wake_channels())?;
        hub.forward_to(worker.clone().recipient());
        // A settings change by any process reaches every process at once,
        // not only when its cached copy (5 s) is refreshed.
        let cached = registry.clone();
        hub.on_settings_changed(move |tag, version| cached.outdated(tag, version));
        let queues = web::Data::new(Queues {
            registry,
            engine,
            producer,
            hub,
            allow_private_targets: settings.delivery.allow_private_targets,
            default_push_timeout_ms: settings.delivery.timeout_ms,
            metrics: metrics.jobs.clone(),
        });
        let schedules = Schedules::new(&mongo, redis.clone(), &settings.redis.key_prefix);
        let ticks = scheduler::TickMetrics::register(&metrics.registry)
            .map_err(|e| StartupError::Other(e.to_string()))?;
        let scheduler = scheduler::start(schedules.clone(), queues.clone().into_inner(), ticks);
        let background = Background {
            _reaper: reaper,
            _sampler: sampler,
            _scheduler: scheduler,
        };
        let schedules = web::Data::new(schedules);
        let ingress = IngressLimiter::new(
            redis.clone(),
            &settings.redis.key_prefix,
            &settings.limits,
            &metrics.registry,
        )
        .map_err(|e| StartupError::Other(e.to_string()))?;
        let ingress = web::Data::new(ingress);

        let port = listener.local_addr()?.port();

        let auth = web::Data::new(auth);
        let tokens = web::Data::from(tokens);
        let api_keys = web::Data::new(ApiKeys::new(&mongo));
        let deps = web::Data::new(Dependencies { redis, mongo });
        let in_flight_gauge = web::Data::new(InFlight(metrics.in_flight.clone()));
        let prometheus = metrics.http.clone();
        let metrics_data = web::Data::new(metrics.clone());
        let expose_metrics = settings.metrics.enabled;
        let body_limit = settings.server.body_limit_bytes;

        // The access log only where its level is logged: actix's Logger
        // renders each line's fields (the peer address, the request line)
        // when the request arrives, whether or not the line is then
        // filtered out — ~3.5 % of Orderly's CPU in the `wrk` publish row
        // with RUST_LOG=warn.
        let access_log = log::log_enabled!(target: ACCESS_LOG_TARGET, log::Level::Info);
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(Condition::new(
                    access_log,
                    Logger::new(ACCESS_LOG)
                        .log_target(ACCESS_LOG_TARGET)
                        .custom_request_replace("request_id", log_request_id),
                ))
                .wrap(from_fn(in_flight::middleware))
                .wrap(prometheus.clone())
                .wrap(from_fn(crate::http::method::middleware))
                .wrap(from_fn(request_id::middleware))
                .app_data(web::PayloadConfig::new(body_limit))
                // A query string that does not parse is a `422` naming
                // `query`, decided here rather than by `request_id`'s
                // rendering: the request metrics and the access log, which
                // wrap the handler inside that middleware, then record the
                // status the client gets (they recorded the extractor's 400).
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(|err, _| ApiError::from_query(&err).into()),
                )
                .app_data(auth.clone())
                .app_data(tokens.clone())
                .app_data(api_keys.clone())
                .app_data(deps.clone())
                .app_data(in_flight_gauge.clone())
                .app_data(metrics_data.clone())
                .app_data(queues.clone())
                .app_data(schedules.clone())
                .app_data(ingress.clone())
                .configure(|cfg| routes::configure(cfg, expose_metrics))
                .default_service(web::to(routes::not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_grace_s);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.run();
        Ok(Self {
            port,
            server,
            worker,
            grace: Duration::from_secs(settings.server.shutdown_grace_s),
            _background: background,
        })
    }

    /// The port actually bound (meaningful when the settings asked for `0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server (gracefully with `stop(true)`).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The supervised worker actor (tests use it to inject a crash).
    pub fn worker(&self) -> Addr<Worker> {
        self.worker.clone()
    }

    /// Serves until the server is stopped through [`Application::handle`].
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run(std::future::pending()).await
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: stop
    /// accepting connections, let in-flight requests and deliveries finish
    /// within the grace period, release the leases of deliveries still running.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = std::pin::pin!(self.server);
        tokio::select! {
            stopped = &mut server => return stopped,
            () = shutdown => {}
        }
        log::info!(
            "shutting down: draining requests and deliveries (grace {:?})",
            self.grace
        );
        // The server future must keep being polled for the stop to complete.
        actix_web::rt::spawn(handle.stop(true));
        let drain = self.worker.send(Drain { grace: self.grace });
        let (released, stopped) = futures_util::join!(drain, server);
        if let Ok(released) = released {
            log::info!("shutdown complete; {released} lease(s) released");
        }
        stopped
    }
}

fn log_request_id(req: &ServiceRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default()
}
