//! Queue and job domain types: names, lane keys, job ids, queue settings and
//! the job object the API returns. Parsing lives here (parse, don't validate);
//! nothing here does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// Longest accepted ordering key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest accepted `delay_ms` (30 days).
pub const MAX_DELAY_MS: u64 = 30 * 24 * 3600 * 1000;

/// A queue name: `^[a-z0-9][a-z0-9_.-]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct QueueName(String);

impl QueueName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = raw.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
        if first_ok && rest_ok && bytes.len() <= 64 {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must match ^[a-z0-9][a-z0-9_.-]{0,63}$".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The queue of one owner: the unit every Redis key of a queue is tagged with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueRef {
    pub owner: String,
    pub name: QueueName,
}

impl QueueRef {
    pub fn new(owner: &str, name: QueueName) -> Self {
        Self {
            owner: owner.to_owned(),
            name,
        }
    }

    /// `<owner>:<queue>`, the Redis Cluster hash tag of the queue's keys.
    pub fn tag(&self) -> String {
        format!("{}:{}", self.owner, self.name.as_str())
    }

    /// Parses a tag produced by [`QueueRef::tag`].
    pub fn from_tag(tag: &str) -> Option<Self> {
        let (owner, name) = tag.split_once(':')?;
        Some(Self::new(owner, QueueName::parse(name).ok()?))
    }
}

/// An ordering key (lane), `""` by default, at most 128 characters.
pub fn parse_lane_key(raw: Option<String>) -> Result<String, String> {
    let key = raw.unwrap_or_default();
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(format!("must be at most {MAX_KEY_CHARS} characters"));
    }
    Ok(key)
}

/// A job id: 32 hex digits (a UUIDv7, so ids sort by creation) then `.` and
/// the queue name. The queue part lets any route find the job's keys from the
/// id alone; the owner always comes from the caller's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId {
    pub id: String,
    pub queue: QueueName,
}

impl JobId {
    pub fn generate(queue: &QueueName) -> Self {
        let uuid = uuid::Uuid::now_v7().simple().to_string();
        Self {
            id: format!("{uuid}.{}", queue.as_str()),
            queue: queue.clone(),
        }
    }

    /// `None` for anything that is not an id this service could have issued.
    pub fn parse(raw: &str) -> Option<Self> {
        let (uuid, queue) = raw.split_at_checked(32)?;
        let queue = queue.strip_prefix('.')?;
        if !uuid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return None;
        }
        Some(Self {
            id: raw.to_owned(),
            queue: QueueName::parse(queue).ok()?,
        })
    }
}

/// How a queue's jobs reach their consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Delivery {
    /// Consumers claim jobs over HTTP.
    Pull,
    /// The worker POSTs each job to `url`.
    Push {
        url: String,
        #[serde(default = "default_push_timeout_ms")]
        timeout_ms: u64,
    },
}

fn default_push_timeout_ms() -> u64 {
    10_000
}

impl Delivery {
    pub fn is_push(&self) -> bool {
        matches!(self, Delivery::Push { .. })
    }
}

/// What happens when a job runs out of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// The job becomes `dead` and its lane continues.
    DeadLetter,
    /// The lane stops at the job (state `blocked`) until it is retried or skipped.
    Block,
}

impl OnExhausted {
    pub fn as_str(self) -> &'static str {
        match self {
            OnExhausted::DeadLetter => "dead_letter",
            OnExhausted::Block => "block",
        }
    }
}

/// Exponential backoff between attempts: the delay before the attempt after
/// `n` failed ones is `min(initial_ms × 2^(n-1), max_ms)` with "equal jitter"
/// (half fixed, half random), computed by the engine's `fail` script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

/// Flow control: at most `per_second` lane heads start per second, over all
/// processes, with bursts of up to `burst` (a token bucket in Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A queue's settings, as stored and as returned (without `stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueSettings {
    pub delivery: Delivery,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub on_exhausted: OnExhausted,
    pub lease_ms: u64,
    pub retention_s: u64,
    /// Lane heads started per second (push and pull); `null`: unlimited.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// At most this many lane heads leased at once; `null`: unlimited.
    #[serde(default)]
    pub max_active_lanes: Option<u32>,
}

/// Limits on queue settings, documented in the README.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Largest `rate_limit.per_second`, `rate_limit.burst` and `max_active_lanes`.
pub const FLOW_LIMIT: u32 = 100_000;
pub const LEASE_MS_RANGE: (u64, u64) = (1_000, 12 * 3600 * 1000);
pub const PUSH_TIMEOUT_MS_RANGE: (u64, u64) = (100, 300_000);
/// `retention_s`: a second to 90 days.
pub const RETENTION_S_RANGE: (u64, u64) = (1, 90 * 24 * 3600);

impl QueueSettings {
    /// Field-by-field checks; the URL's SSRF check is done by the caller.
    pub fn validate(&self) -> Result<(), BTreeMap<String, String>> {
        let mut fields = BTreeMap::new();
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            fields.insert(
                "max_attempts".into(),
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
            );
        }
        // No `initial_ms <= max_ms` rule: `max_ms` caps every delay anyway,
        // and a rule across two fields cannot be stated in the OpenAPI schema.
        for (field, ms) in [
            ("backoff.initial_ms", self.backoff.initial_ms),
            ("backoff.max_ms", self.backoff.max_ms),
        ] {
            if !(1..=24 * 3600 * 1000).contains(&ms) {
                fields.insert(
                    field.into(),
                    "must be between 1 and 86400000 (1 day)".into(),
                );
            }
        }
        if !(LEASE_MS_RANGE.0..=LEASE_MS_RANGE.1).contains(&self.lease_ms) {
            fields.insert(
                "lease_ms".into(),
                "must be between 1000 and 43200000".into(),
            );
        }
        if !(RETENTION_S_RANGE.0..=RETENTION_S_RANGE.1).contains(&self.retention_s) {
            fields.insert("retention_s".into(), "must be between 1 and 7776000".into());
        }
        if let Delivery::Push { url, timeout_ms } = &self.delivery {
            if !(PUSH_TIMEOUT_MS_RANGE.0..=PUSH_TIMEOUT_MS_RANGE.1).contains(timeout_ms) {
                fields.insert(
                    "delivery.timeout_ms".into(),
                    "must be between 100 and 300000".into(),
                );
            }
            match url::Url::parse(url) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
                {
                    if !parsed.username().is_empty() || parsed.password().is_some() {
                        fields.insert("delivery.url".into(), "must not carry credentials".into());
                    }
                }
                _ => {
                    fields.insert(
                        "delivery.url".into(),
                        "must be an absolute http(s) URL".into(),
                    );
                }
            }
        }
        if let Some(limit) = self.rate_limit {
            for (field, n) in [
                ("rate_limit.per_second", limit.per_second),
                ("rate_limit.burst", limit.burst),
            ] {
                if !(1..=FLOW_LIMIT).contains(&n) {
                    fields.insert(field.into(), format!("must be between 1 and {FLOW_LIMIT}"));
                }
            }
        }
        if self
            .max_active_lanes
            .is_some_and(|n| !(1..=FLOW_LIMIT).contains(&n))
        {
            fields.insert(
                "max_active_lanes".into(),
                format!("must be between 1 and {FLOW_LIMIT}"),
            );
        }
        if fields.is_empty() {
            Ok(())
        } else {
            Err(fields)
        }
    }
}

/// A job's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Delayed,
    Active,
    Retrying,
    Blocked,
    Completed,
    Dead,
    Cancelled,
}

impl JobState {
    pub fn parse(raw: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(raw.to_owned())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Retrying => "retrying",
            JobState::Blocked => "blocked",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Completed, dead and cancelled jobs never change again (until redrive).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }
}

/// The job object of the API. `payload` and `result` are kept as the exact
/// JSON text they were stored as.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub queue: String,
    /// The ordering lane (`""` when published without a key).
    pub key: String,
    /// Position in the queue; a lane's jobs run in `seq` order.
    pub seq: u64,
    pub state: JobState,
    /// The JSON value it was published with, byte for byte.
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    pub attempts: u32,
    pub max_attempts: u32,
    /// What the consumer acknowledged it with (push: the response body if JSON).
    #[schema(value_type = Option<Value>)]
    pub result: Option<Box<RawValue>>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub available_at: Option<String>,
    /// Pull jobs returned by claim: the lease to ack, nack or extend with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub lease_expires_at: Option<String>,
    /// Replies to an ack or nack: what that lease's outcome was
    /// (`completed`, `retrying`, `dead` or `blocked`) — also when the call
    /// repeats one whose reply was lost, by which time `state` may have
    /// moved on (the job retried and claimed again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<JobState>,
}

/// Where a lane stands, as the lanes listing shows it (stuck states first in
/// its order: `blocked`, then the oldest heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LaneState {
    /// Its head may start now.
    Ready,
    /// Its head may start later (`delay_ms`, a release or a `Retry-After`).
    Delayed,
    /// Its head is leased (being delivered or held by a consumer).
    Active,
    /// Its head failed and waits for its backoff.
    Retrying,
    /// Its head ran out of attempts (`on_exhausted: block`): retry or skip it.
    Blocked,
    /// Paused (`…/lanes/{key}/pause`): its head does not start.
    Paused,
}

impl LaneState {
    pub fn parse(raw: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(raw.to_owned())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LaneState::Ready => "ready",
            LaneState::Delayed => "delayed",
            LaneState::Active => "active",
            LaneState::Retrying => "retrying",
            LaneState::Blocked => "blocked",
            LaneState::Paused => "paused",
        }
    }
}

/// A lane's head job, in brief.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LaneHead {
    pub id: String,
    pub seq: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the head may start (`null` while it is leased or blocked).
    #[schema(format = DateTime)]
    pub available_at: Option<String>,
    /// The head's publish `priority` (0–9), which is the lane's.
    #[schema(minimum = 0, maximum = 9)]
    pub priority: u8,
}

/// A lane with unfinished jobs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Lane {
    /// The ordering key (`""`: the default lane).
    pub key: String,
    pub state: LaneState,
    /// Unfinished jobs in the lane, the head included.
    pub length: u64,
    pub head: LaneHead,
    /// How long ago the head was published.
    pub head_age_ms: u64,
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_pattern() {
        for ok in ["a", "emails", "0", "a.b-c_d", &"x".repeat(64)] {
            assert!(QueueName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            ".a",
            "a b",
            "a:b",
            "a{b}",
            "é",
            &"x".repeat(65),
        ] {
            assert!(QueueName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_ids_round_trip_and_reject_forgeries() {
        let queue = QueueName::parse("emails").unwrap();
        let id = JobId::generate(&queue);
        assert_eq!(JobId::parse(&id.id), Some(id.clone()));
        assert!(JobId::parse("nope").is_none());
        assert!(JobId::parse(&id.id.replace(".emails", ".EMAILS")).is_none());
        assert!(JobId::parse(&format!("{}x", &id.id[..31])).is_none());
    }

    #[test]
    fn lane_keys_are_limited_to_128_characters() {
        assert_eq!(parse_lane_key(None).unwrap(), "");
        assert!(parse_lane_key(Some("é".repeat(128))).is_ok());
        assert!(parse_lane_key(Some("k".repeat(129))).is_err());
    }
}
