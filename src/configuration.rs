//! Layered settings: `config/default.toml`, then `config/<ORDERLY_ENV>.toml`,
//! then `ORDERLY__SECTION__KEY` environment variables.
//!
//! This module only reads and checks settings; it never connects to anything.
//! [`Settings::validate`] holds the rules the server refuses to start without.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Marker carried by the example JWT secret in `config/default.toml`.
pub const EXAMPLE_SECRET_MARKER: &str = "INSECURE-dev-only-example";

/// Shortest accepted JWT secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The deployment profile, from `ORDERLY_ENV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Test,
    Production,
}

impl Profile {
    /// Reads `ORDERLY_ENV`; unset means `dev`.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var("ORDERLY_ENV") {
            Ok(value) => value.parse(),
            Err(_) => Ok(Profile::Dev),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Test => "test",
            Profile::Production => "production",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "dev" | "development" | "local" => Ok(Profile::Dev),
            "test" => Ok(Profile::Test),
            "production" | "prod" => Ok(Profile::Production),
            other => Err(ConfigError::Invalid(format!(
                "ORDERLY_ENV must be dev, test or production, not {other:?}"
            ))),
        }
    }
}

/// Why settings could not be loaded or were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Every setting of the service. See the README for each key.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Filled from `ORDERLY_ENV`, not from files.
    #[serde(skip, default = "default_profile")]
    pub profile: Profile,
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub mongodb: MongoSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    /// Per-tenant ingress limits; the section may be omitted (unlimited).
    #[serde(default)]
    pub limits: LimitSettings,
    pub worker: WorkerSettings,
    pub queues: QueueDefaults,
    pub delivery: DeliverySettings,
    pub metrics: MetricsSettings,
}

fn default_profile() -> Profile {
    Profile::Dev
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    /// `0` binds a free port; the application reports the real one.
    pub port: u16,
    /// HTTP worker threads; `0` means one per core.
    pub workers: usize,
    pub body_limit_bytes: usize,
    pub shutdown_grace_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: String,
    /// Redis Cluster seed nodes (`redis://host:port`); when any is given the
    /// cluster client is used and `url` is ignored. From the environment as
    /// one comma-separated string.
    #[serde(default, deserialize_with = "list_or_commas")]
    pub cluster_nodes: Vec<String>,
    pub key_prefix: String,
    /// Queues are spread over this many slot groups (each one hash slot with
    /// its own index keys); `0` picks 1 on one server and 64 on a cluster.
    /// Fixed for the life of the data: Orderly refuses to start against
    /// Redis data written with another number.
    pub slot_groups: u32,
    /// After each publish, wait (Redis `WAIT`) until this many replicas have
    /// the job, at most `wait_timeout_ms`: narrows what a failover can lose.
    /// `0` (default): no wait.
    #[serde(default)]
    pub wait_replicas: u32,
    #[serde(default = "default_wait_timeout_ms")]
    pub wait_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
}

fn default_wait_timeout_ms() -> u64 {
    100
}

impl RedisSettings {
    /// Slot groups in use: `slot_groups`, or when it is `0`, 1 on one server
    /// (every queue's index in one slot, as cheap as it gets) and 64 on a
    /// cluster (enough to spread over many masters).
    pub fn slot_groups(&self) -> u32 {
        match (self.slot_groups, self.cluster_nodes.is_empty()) {
            (0, true) => 1,
            (0, false) => 64,
            (n, _) => n,
        }
    }
}

/// A list given as a TOML array or as one comma-separated string.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Raw::Many(v) => v,
    })
}

#[derive(Debug, Clone, Deserialize)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
    pub server_selection_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub jwt_secret: String,
    pub jwt_issuer: String,
    pub token_lifetime_s: u64,
    pub bcrypt_cost: u32,
    pub hash_threads: usize,
    pub hash_queue: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub login_failures_per_email: u32,
    pub login_failures_per_ip: u32,
    pub login_window_s: u64,
}

/// How fast one tenant (a user, with all their API keys) may publish, over
/// all processes: a token bucket of `publish_burst` jobs (`0`: one second's
/// worth) refilled at `publish_per_second`. `publish_per_second = 0` (the
/// default) means unlimited and costs nothing.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LimitSettings {
    #[serde(default)]
    pub publish_per_second: u32,
    #[serde(default)]
    pub publish_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub concurrency: usize,
    /// Lease of a push delivery; renewed while the delivery runs.
    pub lease_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueDefaults {
    pub lease_ms: u64,
    pub retention_s: u64,
    pub max_attempts: u32,
    pub idempotency_window_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeliverySettings {
    pub timeout_ms: u64,
    pub allow_private_targets: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    pub enabled: bool,
}

impl Settings {
    /// Loads the settings the binary runs with: profile from `ORDERLY_ENV`,
    /// files from `ORDERLY_CONFIG_DIR` (default `./config`), then the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let profile = Profile::from_env()?;
        let dir = std::env::var_os("ORDERLY_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"));
        Self::load(profile, &dir, true)
    }

    /// Loads `default.toml` and `<profile>.toml` from `dir`, plus
    /// `ORDERLY__…` variables when `with_env` is set, and validates the result.
    pub fn load(profile: Profile, dir: &Path, with_env: bool) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from(dir.join("default.toml")))
            .add_source(
                config::File::from(dir.join(format!("{}.toml", profile.as_str()))).required(false),
            );
        if with_env {
            builder = builder.add_source(
                config::Environment::with_prefix("ORDERLY")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.profile = profile;
        settings.validate()?;
        Ok(settings)
    }

    /// The rules the server refuses to start without.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let secret = &self.auth.jwt_secret;
        if secret.trim().is_empty() {
            return Err(ConfigError::Invalid("auth.jwt_secret is empty".into()));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::Invalid(format!(
                "auth.jwt_secret must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        if self.profile == Profile::Production && secret.contains(EXAMPLE_SECRET_MARKER) {
            return Err(ConfigError::Invalid(
                "auth.jwt_secret is the dev/test example; set ORDERLY__AUTH__JWT_SECRET".into(),
            ));
        }
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            return Err(ConfigError::Invalid(
                "auth.bcrypt_cost must be between 4 and 31".into(),
            ));
        }
        if self.auth.hash_threads == 0 {
            return Err(ConfigError::Invalid(
                "auth.hash_threads must be >= 1".into(),
            ));
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::Invalid(
                "redis.key_prefix must be non-empty and contain no braces".into(),
            ));
        }
        if self.worker.concurrency == 0 || self.worker.lease_ms < 300 {
            return Err(ConfigError::Invalid(
                "worker.concurrency must be >= 1 and worker.lease_ms >= 300".into(),
            ));
        }
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError::Invalid(
                "server.body_limit_bytes must be > 0".into(),
            ));
        }
        self.validate_ranges()
    }

    /// Defaults a queue or a token takes: the ranges the API enforces on the
    /// same settings (a queue created by its first publish would otherwise
    /// carry a value its own `PUT` refuses, e.g. a lease that expires as it
    /// is issued), and at least a second for windows and lifetimes.
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        use crate::queue::model::{
            LEASE_MS_RANGE, MAX_ATTEMPTS_LIMIT, PUSH_TIMEOUT_MS_RANGE, RETENTION_S_RANGE,
        };
        let q = &self.queues;
        let ranges = [
            (
                "queues.max_attempts",
                u64::from(q.max_attempts),
                (1, u64::from(MAX_ATTEMPTS_LIMIT)),
            ),
            ("queues.lease_ms", q.lease_ms, LEASE_MS_RANGE),
            ("queues.retention_s", q.retention_s, RETENTION_S_RANGE),
            (
                "queues.idempotency_window_s",
                q.idempotency_window_s,
                (1, RETENTION_S_RANGE.1),
            ),
            (
                "delivery.timeout_ms",
                self.delivery.timeout_ms,
                PUSH_TIMEOUT_MS_RANGE,
            ),
            (
                "auth.token_lifetime_s",
                self.auth.token_lifetime_s,
                (1, 366 * 24 * 3600),
            ),
            // Values that start a service nobody can use: every login
            // refused (0 failures allowed; a window of 0 turns the limit
            // off and stays allowed), a pool that takes no password,
            // Redis or MongoDB calls that time out as they are sent.
            (
                "rate_limit.login_failures_per_email",
                u64::from(self.rate_limit.login_failures_per_email),
                (1, u64::from(u32::MAX)),
            ),
            (
                "rate_limit.login_failures_per_ip",
                u64::from(self.rate_limit.login_failures_per_ip),
                (1, u64::from(u32::MAX)),
            ),
            ("auth.hash_queue", self.auth.hash_queue as u64, (1, 1 << 20)),
            (
                "redis.connect_timeout_ms",
                self.redis.connect_timeout_ms,
                (1, 3_600_000),
            ),
            (
                "redis.response_timeout_ms",
                self.redis.response_timeout_ms,
                (1, 3_600_000),
            ),
            (
                "mongodb.server_selection_timeout_ms",
                self.mongodb.server_selection_timeout_ms,
                (1, 3_600_000),
            ),
        ];
        if self.auth.jwt_issuer.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "auth.jwt_issuer must not be empty".into(),
            ));
        }
        for (name, value, (low, high)) in ranges {
            if !(low..=high).contains(&value) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between {low} and {high} (it is {value})"
                )));
            }
        }
        Ok(())
    }
}

impl RedisSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }
}

impl MongoSettings {
    pub fn server_selection_timeout(&self) -> Duration {
        Duration::from_millis(self.server_selection_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    #[test]
    fn test_profile_loads_with_cheap_hashing() {
        let settings = Settings::load(Profile::Test, &config_dir(), false).unwrap();
        assert_eq!(settings.auth.bcrypt_cost, 4);
        assert_eq!(settings.server.body_limit_bytes, 1024 * 1024);
        assert!(settings.delivery.allow_private_targets);
    }

    #[test]
    fn production_refuses_the_example_secret() {
        let err = Settings::load(Profile::Production, &config_dir(), false).unwrap_err();
        assert!(err.to_string().contains("example"), "{err}");
    }

    /// The placeholder a compose deployment copies (`deploy/orderly.env.example`)
    /// is refused in production like the config's own example.
    #[test]
    fn production_refuses_the_deployment_examples_placeholder() {
        let example = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/orderly.env.example"),
        )
        .unwrap();
        let secret = example
            .lines()
            .find_map(|line| line.strip_prefix("ORDERLY__AUTH__JWT_SECRET="))
            .expect("the example sets the secret");
        let mut settings = Settings::load(Profile::Dev, &config_dir(), false).unwrap();
        settings.profile = Profile::Production;
        settings.auth.jwt_secret = secret.to_owned();
        settings.delivery.allow_private_targets = false;
        let err = settings.validate().unwrap_err();
        assert!(err.to_string().contains("example"), "{err}");
    }

    #[test]
    fn production_accepts_a_real_secret_and_blocks_private_targets() {
        let mut settings = Settings::load(Profile::Dev, &config_dir(), false).unwrap();
        settings.profile = Profile::Production;
        settings.auth.jwt_secret = "k".repeat(40);
        settings.delivery.allow_private_targets = false;
        assert!(settings.validate().is_ok());
        let prod = config::Config::builder()
            .add_source(config::File::from(config_dir().join("production.toml")))
            .build()
            .unwrap();
        assert!(!prod.get_bool("delivery.allow_private_targets").unwrap());
    }

    #[test]
    fn defaults_the_api_would_refuse_are_refused_at_start() {
        let base = Settings::load(Profile::Dev, &config_dir(), false).unwrap();
        type Change = fn(&mut Settings);
        let cases: [(&str, Change); 13] = [
            ("queues.max_attempts", |s| s.queues.max_attempts = 0),
            ("queues.max_attempts", |s| s.queues.max_attempts = 101),
            ("queues.lease_ms", |s| s.queues.lease_ms = 0),
            ("queues.retention_s", |s| s.queues.retention_s = 0),
            ("queues.idempotency_window_s", |s| {
                s.queues.idempotency_window_s = 0
            }),
            ("delivery.timeout_ms", |s| s.delivery.timeout_ms = 0),
            ("auth.token_lifetime_s", |s| s.auth.token_lifetime_s = 0),
            ("rate_limit.login_failures_per_email", |s| {
                s.rate_limit.login_failures_per_email = 0
            }),
            ("rate_limit.login_failures_per_ip", |s| {
                s.rate_limit.login_failures_per_ip = 0
            }),
            ("auth.hash_queue", |s| s.auth.hash_queue = 0),
            ("redis.response_timeout_ms", |s| {
                s.redis.response_timeout_ms = 0
            }),
            ("mongodb.server_selection_timeout_ms", |s| {
                s.mongodb.server_selection_timeout_ms = 0
            }),
            ("auth.jwt_issuer", |s| s.auth.jwt_issuer = " ".into()),
        ];
        for (name, change) in cases {
            let mut settings = base.clone();
            change(&mut settings);
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
        assert!(base.validate().is_ok());
    }

    #[test]
    fn short_and_empty_secrets_are_refused() {
        let mut settings = Settings::load(Profile::Dev, &config_dir(), false).unwrap();
        settings.auth.jwt_secret = "x".repeat(MIN_SECRET_BYTES - 1);
        assert!(settings.validate().unwrap_err().to_string().contains("32"));
        settings.auth.jwt_secret = "   ".into();
        assert!(
            settings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
