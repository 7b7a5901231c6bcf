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
        let mut pipe = redis::pipe();
        for (key, _) in &keys {
            pipe.get(key).ttl(key);
        }
        // Replies alternate: count (nil when absent), then its TTL in seconds.
        let replies: Vec<Option<i64>> = pipe.query_async(&mut self.redis.clone()).await?;
        let windows = replies.chunks(2).map(|pair| {
            (
                pair[0].unwrap_or(0),
                pair.get(1).copied().flatten().unwrap_or(1),
            )
        });
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
        let mut pipe = redis::pipe();
        let mut count = |key: String| {
            pipe.incr(&key, 1).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(window).arg("NX").ignore();
        };
        count(self.email_key(email));
        if let Some(ip) = ip {
            count(self.ip_key(ip));
        }
        pipe.query_async::<()>(&mut self.redis.clone()).await
    }

    /// Forgets the email's failures after a successful login.
    pub async fn reset(&self, email: &str) -> redis::RedisResult<()> {
        redis::cmd("DEL")
            .arg(self.email_key(email))
            .query_async::<()>(&mut self.redis.clone())
            .await
    }
}
