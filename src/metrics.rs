//! The Prometheus registry of one application instance.
//!
//! Each `Application` owns its own registry (tests build many apps in one
//! process). HTTP request counts and durations come from actix-web-prom,
//! labelled by route pattern, never by raw path; unmatched paths share one
//! label value. Label values are always bounded: no user, job or queue ids.

use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use prometheus::{IntGauge, Registry};

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
