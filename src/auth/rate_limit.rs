//! Failed-login counters in Redis, per email and per client IP, in fixed
//! windows that start at the first failure.
//!
//! Keys: `<prefix>:auth:fail:email:<email>` and `<prefix>:auth:fail:ip:<ip>`,
//! plain counters with a TTL. A success clears the email's counter. The check
//! and the count are separate round trips, so a burst of concurrent guesses may
//! overshoot the limit by at most the burst size once; every later attempt in
//! the window is refused.

use std::net::IpAddr;

use crate::queue::engine::RedisConn;

use crate::configuration::RateLimitSettings;

/// What a check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; the window ends in this many seconds.
    Limited {
        retry_after_s: u64,
    },
}

#[derive(Clone)]
pub struct LoginLimiter {
    redis: RedisConn,
    prefix: String,
    settings: RateLimitSettings,
}

impl LoginLimiter {
    pub fn new(redis: RedisConn, key_prefix: &str, settings: RateLimitSettings) -> Self {
        Self {
            redis,
            prefix: format!("{key_prefix}:auth:fail"),
            settings,
        }
    }

    fn email_key(&self, email: &str) -> String {
        format!("{}:email:{email}", self.prefix)
    }

    fn ip_key(&self, ip: IpAddr) -> String {
        format!("{}:ip:{ip}", self.prefix)
    }

    /// Is another attempt allowed for this email from this address?
    pub async fn check(&self, email: &str, ip: Option<IpAddr>) -> redis::RedisResult<Verdict> {
        let mut keys = vec![(
            self.email_key(email),
            self.settings.login_failures_per_email,
        )];
        if let Some(ip) = ip {
            keys.push((self.ip_key(ip), self.settings.login_failures_per_ip));
        }
        // One pipeline per key (a Redis Cluster refuses pipelines across
        // slots), sent concurrently: the count (nil when absent), its TTL.
        let reads = keys.iter().map(|(key, _)| {
            let mut redis = self.redis.clone();
            let mut pipe = redis::pipe();
            pipe.get(key).ttl(key);
            async move {
                pipe.query_async::<(Option<i64>, Option<i64>)>(&mut redis)
                    .await
            }
        });
        let replies = futures_util::future::try_join_all(reads).await?;
        let windows = replies
            .into_iter()
            .map(|(count, ttl)| (count.unwrap_or(0), ttl.unwrap_or(1)));
        let retry_after_s = keys
            .iter()
            .zip(windows)
            .filter(|((_, max), (count, _))| *count >= i64::from(*max))
            .map(|(_, (_, ttl))| ttl.max(1) as u64)
            .max();
        Ok(match retry_after_s {
            Some(retry_after_s) => Verdict::Limited { retry_after_s },
            None => Verdict::Allowed,
        })
    }

    /// Counts one failed attempt against the email and the address.
    pub async fn record_failure(&self, email: &str, ip: Option<IpAddr>) -> redis::RedisResult<()> {
        let window = self.settings.login_window_s as i64;
        let keys = std::iter::once(self.email_key(email)).chain(ip.map(|ip| self.ip_key(ip)));
        // One pipeline per key: a Redis Cluster refuses them across slots.
        let writes = keys.map(|key| {
            let mut redis = self.redis.clone();
            let mut pipe = redis::pipe();
            pipe.incr(&key, 1).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(window).arg("NX").ignore();
            async move { pipe.query_async::<()>(&mut redis).await }
        });
        futures_util::future::try_join_all(writes).await.map(drop)
    }

    /// Forgets the email's failures after a successful login.
    pub async fn reset(&self, email: &str) -> redis::RedisResult<()> {
        redis::cmd("DEL")
            .arg(self.email_key(email))
            .query_async::<()>(&mut self.redis.clone())
            .await
    }
}
