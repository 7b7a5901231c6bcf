//! The Prometheus registry of one application instance.
//!
//! Each `Application` owns its own registry (tests build many apps in one
//! process). HTTP request counts and durations come from actix-web-prom,
//! labelled by route pattern, never by raw path; unmatched paths share one
//! label value. Label values are always bounded: no user, job or queue ids.

use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Namespace of every metric name: `orderly_…`.
pub const NAMESPACE: &str = "orderly";

/// Label value for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Metrics handles shared by the HTTP layer and the actors.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// The actix-web-prom middleware (request counts and durations).
    pub http: PrometheusMetrics,
    /// `orderly_http_requests_in_flight`.
    pub in_flight: IntGauge,
    pub jobs: JobMetrics,
}

/// Job counters and gauges (no labels: queue names are user data).
#[derive(Clone)]
pub struct JobMetrics {
    pub published: IntCounter,
    pub completed: IntCounter,
    pub retried: IntCounter,
    pub dead: IntCounter,
    /// Seconds from the start of an attempt to its outcome.
    pub processing: Histogram,
    /// Jobs waiting to start, across all queues (sampled).
    pub waiting: IntGauge,
    /// Age of the oldest unfinished job, across all queues (sampled).
    pub oldest_waiting_age: Gauge,
    /// Jobs currently leased (sampled).
    pub active_leases: IntGauge,
    /// Lanes stopped at a blocked head, across all queues (sampled).
    pub blocked_lanes: IntGauge,
    /// Lanes paused by their owners, across all queues (sampled).
    pub paused_lanes: IntGauge,
    /// Age of the oldest lane head, the largest over all queues (sampled).
    pub oldest_lane_head_age: Gauge,
    pub worker_restarts: IntCounter,
}

impl JobMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(format!("{NAMESPACE}_{name}"), help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(format!("{NAMESPACE}_{name}"), help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        }
        let processing = Histogram::with_opts(
            HistogramOpts::new(
                format!("{NAMESPACE}_job_processing_duration_seconds"),
                "Duration of job attempts, from start to outcome",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
        )?;
        registry.register(Box::new(processing.clone()))?;
        let oldest_waiting_age = Gauge::new(
            format!("{NAMESPACE}_oldest_waiting_job_age_seconds"),
            "Age of the oldest unfinished job across all queues",
        )?;
        registry.register(Box::new(oldest_waiting_age.clone()))?;
        let oldest_lane_head_age = Gauge::new(
            format!("{NAMESPACE}_oldest_lane_head_age_seconds"),
            "Age of the oldest lane head, the largest over all queues",
        )?;
        registry.register(Box::new(oldest_lane_head_age.clone()))?;
        Ok(Self {
            published: counter(registry, "jobs_published_total", "Jobs accepted by publish")?,
            completed: counter(registry, "jobs_completed_total", "Jobs completed")?,
            retried: counter(
                registry,
                "jobs_retried_total",
                "Failed attempts that will be retried",
            )?,
            dead: counter(
                registry,
                "jobs_dead_total",
                "Jobs dead-lettered or blocked after exhausting attempts",
            )?,
            processing,
            waiting: gauge(
                registry,
                "jobs_waiting",
                "Jobs waiting to start across all queues",
            )?,
            oldest_waiting_age,
            active_leases: gauge(registry, "active_leases", "Jobs currently leased")?,
            blocked_lanes: gauge(
                registry,
                "lanes_blocked",
                "Lanes stopped at a blocked head across all queues",
            )?,
            paused_lanes: gauge(
                registry,
                "lanes_paused",
                "Lanes paused by their owners across all queues",
            )?,
            oldest_lane_head_age,
            worker_restarts: counter(
                registry,
                "worker_restarts_total",
                "Restarts of the worker actor",
            )?,
        })
    }
}

impl Metrics {
    /// Builds a fresh registry.
    pub fn new() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let registry = Registry::new();
        let in_flight = IntGauge::new(
            format!("{NAMESPACE}_http_requests_in_flight"),
            "HTTP requests currently being handled",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        let http = PrometheusMetricsBuilder::new(NAMESPACE)
            .registry(registry.clone())
            .mask_unmatched_patterns(UNMATCHED_ROUTE)
            .build()?;
        Ok(Self {
            jobs: JobMetrics::register(&registry)?,
            http,
            registry,
            in_flight,
        })
    }

    /// The Prometheus text exposition of every metric in this registry.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}
