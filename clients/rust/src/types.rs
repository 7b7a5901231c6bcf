//! The API's objects as Rust types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A state this version of the client does not know.
    #[serde(other)]
    Unknown,
}

/// A job object. `lease` and `lease_expires_at` are set on claimed jobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Job {
    pub id: String,
    pub queue: String,
    pub key: String,
    pub seq: u64,
    pub state: JobState,
    pub payload: Value,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub last_error: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub available_at: Option<String>,
    #[serde(default)]
    pub lease: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<String>,
    /// Set in an ack's or nack's reply: what that lease's outcome was (also
    /// when the call repeated one whose reply was lost).
    #[serde(default)]
    pub outcome: Option<String>,
}

/// One job to publish:
/// `Publish::new(payload).key("ann").delay_ms(500).priority(5)`.
#[derive(Debug, Clone, Serialize)]
pub struct Publish {
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Publish at most once under this key. [`crate::Client::publish`]
    /// sends it as the `Idempotency-Key` header (generated once per call
    /// when `None`); in a batch it is this job's own key, taking precedence
    /// over the batch's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// 0–9 (the server's default 0; `422 validation_failed` outside): among
    /// lanes whose heads may start, a head with a higher priority starts
    /// first. Within a lane the order never changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

impl Publish {
    pub fn new(payload: Value) -> Self {
        Self {
            payload,
            key: None,
            delay_ms: None,
            idempotency_key: None,
            priority: None,
        }
    }

    /// The ordering lane.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Do not start before this many ms.
    pub fn delay_ms(mut self, delay_ms: u64) -> Self {
        self.delay_ms = Some(delay_ms);
        self
    }

    /// Publish at most once under this key (within the server's window).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Start before lower-priority lane heads (0–9, default 0). A lane's
    /// priority is its head's: a job never overtakes its own lane.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
}

/// Completes a leased job.
#[derive(Debug, Clone, Serialize)]
pub struct Ack {
    pub id: String,
    pub lease: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Fails a leased job's attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    pub id: String,
    pub lease: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// What a claim asks for; outcomes are reported before jobs are leased.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Claim {
    /// Long-poll up to this many ms (≤ 30000).
    pub wait_ms: u64,
    /// Up to this many jobs, each of a different lane (1–100; 0 means 1).
    pub max_jobs: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acks: Vec<Ack>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nacks: Vec<Nack>,
    /// 1–64 visible ASCII characters (e.g. [`Claim::new_id`]): while the
    /// leases it took live, repeating the claim with it answers the same
    /// jobs and leases (and its acks / nacks the outcomes they already
    /// produced), so a claim whose reply was lost can be repeated without
    /// stranding a lane.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<String>,
}

impl Claim {
    /// A fresh `claim_id` (32 hex characters).
    pub fn new_id() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// What became of one reported ack or nack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Completed,
    Retrying,
    Dead,
    Blocked,
    /// The lease was stale or expired: nothing changed.
    LeaseLost,
    NotFound,
    #[serde(other)]
    Unknown,
}

/// One item's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub status: OutcomeStatus,
}

/// The reply of a claim.
#[derive(Debug, Clone, Deserialize)]
pub struct Claimed {
    pub jobs: Vec<Job>,
    /// The outcomes of the claim's acks then nacks, in order.
    #[serde(default)]
    pub results: Vec<Outcome>,
}
