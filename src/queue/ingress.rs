//! The ingress limit per tenant (`limits.publish_per_second` /
//! `limits.publish_burst`): a token bucket in Redis per owner, shared by every
//! Orderly process, that publish and batch publish take their jobs from.
//!
//! Key: `<prefix>:ingress:{<owner>}`, a hash `{t, at}` (tokens left and when
//! that was counted, by the Redis server clock). One key per tenant, so
//! tenants never wait on each other's state and a Redis Cluster spreads them
//! over its shards; each check is ONE `EVALSHA` of `ingress.lua` touching that
//! one key. With the limit off (`publish_per_second = 0`) no Redis command
//! is sent at all. It never enqueues or refuses jobs itself: the handlers
//! turn a [`Admission`] into `429`/`422` before publishing.

use std::sync::Arc;

use prometheus::{IntCounter, Registry};
use redis::Script;

use super::engine::RedisConn;
use crate::configuration::LimitSettings;

/// What the bucket said about a request of `n` jobs.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The jobs were taken from the bucket (or there is no limit).
    Admitted,
    /// Not enough tokens now; this many seconds (≥ 1) until there are.
    Wait { retry_after_s: u64 },
    /// More jobs than the bucket ever holds: no wait makes them fit.
    OverCapacity { capacity: u32 },
}

#[derive(Clone)]
pub struct IngressLimiter {
    bucket: Option<Arc<Bucket>>,
    /// `orderly_jobs_rate_limited_total`: jobs refused by the limit.
    refused: IntCounter,
}

struct Bucket {
    redis: RedisConn,
    prefix: String,
    per_second: u32,
    capacity: u32,
    script: Script,
}

impl IngressLimiter {
    /// A limiter for `limits`, its counter registered in `registry`.
    pub fn new(
        redis: RedisConn,
        key_prefix: &str,
        limits: &LimitSettings,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let refused = IntCounter::new(
            format!("{}_jobs_rate_limited_total", crate::metrics::NAMESPACE),
            "Jobs refused (429/422) by the per-tenant publish limit",
        )?;
        registry.register(Box::new(refused.clone()))?;
        let bucket = (limits.publish_per_second > 0).then(|| {
            Arc::new(Bucket {
                redis,
                prefix: format!("{key_prefix}:ingress"),
                per_second: limits.publish_per_second,
                capacity: Self::capacity(limits),
                script: Script::new(include_str!("ingress.lua")),
            })
        });
        Ok(Self { bucket, refused })
    }

    /// The bucket's size: `publish_burst`, or one second's worth when 0.
    pub fn capacity(limits: &LimitSettings) -> u32 {
        match limits.publish_burst {
            0 => limits.publish_per_second,
            burst => burst,
        }
    }

    /// Takes `jobs` tokens from `owner`'s bucket if it holds them all.
    pub async fn admit(&self, owner: &str, jobs: usize) -> redis::RedisResult<Admission> {
        let Some(bucket) = &self.bucket else {
            return Ok(Admission::Admitted);
        };
        let wait_ms: i64 = bucket
            .script
            .key(format!("{}:{{{owner}}}", bucket.prefix))
            .arg(bucket.per_second)
            .arg(bucket.capacity)
            .arg(jobs)
            .invoke_async(&mut bucket.redis.clone())
            .await?;
        if wait_ms != 0 {
            self.refused.inc_by(jobs as u64);
        }
        Ok(match wait_ms {
            0 => Admission::Admitted,
            ms if ms < 0 => Admission::OverCapacity {
                capacity: bucket.capacity,
            },
            ms => Admission::Wait {
                retry_after_s: (ms as u64).div_ceil(1000).max(1),
            },
        })
    }
}
