//! [`Client`]: one Orderly base URL and one bearer token.

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;
use crate::types::{Ack, Claim, Claimed, Job, Nack, Outcome, Publish};

/// Longest long-poll the server accepts (ms).
pub const MAX_WAIT_MS: u64 = 30_000;

/// Talks to one Orderly with one bearer token: a JWT from
/// [`Client::login`] or an API key (`ok_…`). Cheap to clone (the connection
/// pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token: String,
    timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
}

#[derive(serde::Deserialize)]
struct Jobs {
    jobs: Vec<Job>,
}

#[derive(serde::Deserialize)]
struct Results {
    results: Vec<Outcome>,
}

fn segment(raw: &str) -> String {
    // Queue names and job ids are `[a-z0-9_.-]`; anything else is escaped so
    // it cannot change the path.
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A publish answer: the job, or the `{"id", "queue", "state": "expired"}`
/// of a repeated idempotency key whose job is gone.
fn published(answer: Value) -> Result<Job, Error> {
    if answer["state"] == "expired" {
        let field = |name: &str| {
            answer[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::Decode(format!("expired answer without {name}: {answer}")))
        };
        return Err(Error::Expired {
            id: field("id")?,
            queue: field("queue")?,
        });
    }
    Job::deserialize(&answer).map_err(|e| Error::Decode(format!("{e}: {answer}")))
}

impl Client {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8080`) with `token`.
    pub fn new(base_url: &str, token: &str) -> Result<Self, Error> {
        // reqwest is built without a bundled TLS crypto provider (as the
        // server); install ring's unless the application chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .build()
            .map_err(Error::Connection)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            timeout: Duration::from_secs(10),
            retries: 4,
            retry_backoff: Duration::from_millis(200),
        })
    }

    /// How often a publish (single or batch) is retried after a `503` or a
    /// connection failure,
    /// and the first backoff (doubling each time).
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.retry_backoff = backoff;
        self
    }

    /// The timeout of one request (long-polls add their wait to it).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Creates an account; returns `{"id", "email", "created_at"}`.
    pub async fn register(base_url: &str, email: &str, password: &str) -> Result<Value, Error> {
        let anonymous = Client::new(base_url, "")?;
        let body = json!({"email": email, "password": password});
        anonymous
            .call(Method::POST, "/v1/auth/register", Some(&body), &[], None)
            .await
    }

    /// Logs in; returns a client holding the access token.
    pub async fn login(base_url: &str, email: &str, password: &str) -> Result<Client, Error> {
        let anonymous = Client::new(base_url, "")?;
        let body = json!({"email": email, "password": password});
        let answer: Value = anonymous
            .call(Method::POST, "/v1/auth/login", Some(&body), &[], None)
            .await?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| Error::Decode("login answer without access_token".into()))?;
        Ok(Client {
            token: token.to_owned(),
            ..anonymous
        })
    }

    /// Any API call: `body` as JSON, the answer decoded as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        headers: &[(&str, &str)],
        wait: Option<Duration>,
    ) -> Result<T, Error> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .timeout(self.timeout + wait.unwrap_or_default())
            .header("accept", "application/json");
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(Error::Connection)?;
        let status = response.status();
        let text = response.text().await.map_err(Error::Connection)?;
        if !status.is_success() {
            return Err(Error::from_answer(status.as_u16(), &text));
        }
        serde_json::from_str(&text).map_err(|e| Error::Decode(format!("{e}: {text}")))
    }

    /// Runs `attempt` until it succeeds, retrying 503s (and connection
    /// failures when `connection_retryable`) with exponential backoff.
    async fn retrying<T, F, Fut>(
        &self,
        connection_retryable: bool,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut delay = self.retry_backoff;
        for _ in 0..self.retries {
            match attempt().await {
                Err(err)
                    if err.status() == Some(503)
                        || (connection_retryable && matches!(err, Error::Connection(_))) =>
                {
                    log::warn!("retrying after: {err}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
        attempt().await
    }

    /// Creates or updates a queue with `settings` (as in the API).
    pub async fn put_queue(&self, queue: &str, settings: &Value) -> Result<Value, Error> {
        let path = format!("/v1/queues/{}", segment(queue));
        self.call(Method::PUT, &path, Some(settings), &[], None)
            .await
    }

    /// Publishes one job. Retried after a `503` or a connection failure
    /// under one `Idempotency-Key` (generated once here when not given), so
    /// a retry never enqueues the job twice. A repeat of a key answers the
    /// original job — or [`Error::Expired`] when that job has outlived its
    /// retention (nothing is enqueued either way).
    pub async fn publish(&self, queue: &str, job: Publish) -> Result<Job, Error> {
        let key = job
            .idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let path = format!("/v1/queues/{}/jobs", segment(queue));
        let headers = [("idempotency-key", key.as_str())];
        let answer: Value = self
            .retrying(true, || {
                self.call(Method::POST, &path, Some(&job), &headers, None)
            })
            .await?;
        published(answer)
    }

    /// Publishes up to 1000 jobs atomically, in order, under a fresh
    /// `Idempotency-Key` for the whole batch (see
    /// [`Client::publish_batch_with_key`]).
    pub async fn publish_batch(&self, queue: &str, jobs: &[Publish]) -> Result<Vec<Job>, Error> {
        let key = uuid::Uuid::new_v4().simple().to_string();
        self.publish_batch_with_key(queue, jobs, &key).await
    }

    /// Publishes up to 1000 jobs atomically, in order, with `key` as the
    /// batch's `Idempotency-Key` (job i is published under `<key>#<i>`
    /// unless it has its own `idempotency_key`). Retried after a `503` or a
    /// connection failure under that key, so a retry never enqueues a job
    /// twice: a repeat answers the original jobs.
    pub async fn publish_batch_with_key(
        &self,
        queue: &str,
        jobs: &[Publish],
        key: &str,
    ) -> Result<Vec<Job>, Error> {
        let path = format!("/v1/queues/{}/jobs/batch", segment(queue));
        let body = json!({ "jobs": jobs });
        let headers = [("idempotency-key", key)];
        let answer: Jobs = self
            .retrying(true, || {
                self.call(Method::POST, &path, Some(&body), &headers, None)
            })
            .await?;
        Ok(answer.jobs)
    }

    /// Reads a job; with `wait_ms` (≤ 30000), waits until it is terminal or
    /// the wait ends.
    pub async fn get_job(&self, id: &str, wait_ms: Option<u64>) -> Result<Job, Error> {
        let mut path = format!("/v1/jobs/{}", segment(id));
        if let Some(wait_ms) = wait_ms {
            path.push_str(&format!("?wait_ms={wait_ms}"));
        }
        let wait = wait_ms.map(Duration::from_millis);
        self.call(Method::GET, &path, None::<&Value>, &[], wait)
            .await
    }

    /// Reports the claim's outcomes (if any), then leases up to `max_jobs`
    /// jobs, long-polling up to `wait_ms`. With a `claim_id` the whole
    /// request is safe to repeat after a `503` or a connection failure: it
    /// answers the jobs and leases it already took.
    pub async fn claim(&self, queue: &str, claim: &Claim) -> Result<Claimed, Error> {
        let path = format!("/v1/queues/{}/claim", segment(queue));
        let wait = Duration::from_millis(claim.wait_ms);
        let mut claim = claim.clone();
        claim.max_jobs = claim.max_jobs.max(1);
        self.call(Method::POST, &path, Some(&claim), &[], Some(wait))
            .await
    }

    /// Batch ack/nack (≤ 1000 items): one outcome per item, acks first, in
    /// order. A stale lease is an outcome (`lease_lost`), not an error.
    pub async fn report(
        &self,
        queue: &str,
        acks: &[Ack],
        nacks: &[Nack],
    ) -> Result<Vec<Outcome>, Error> {
        let path = format!("/v1/queues/{}/ack", segment(queue));
        let body = json!({"acks": acks, "nacks": nacks});
        let answer: Results = self
            .call(Method::POST, &path, Some(&body), &[], None)
            .await?;
        Ok(answer.results)
    }

    /// Completes a leased job.
    pub async fn ack(&self, id: &str, lease: &str, result: Option<Value>) -> Result<Job, Error> {
        let path = format!("/v1/jobs/{}/ack", segment(id));
        let body = json!({"lease": lease, "result": result});
        self.call(Method::POST, &path, Some(&body), &[], None).await
    }

    /// Fails a leased job's attempt (retried after `retry_in_ms`, or the
    /// queue's backoff).
    pub async fn nack(
        &self,
        id: &str,
        lease: &str,
        error: Option<&str>,
        retry_in_ms: Option<u64>,
    ) -> Result<Job, Error> {
        let path = format!("/v1/jobs/{}/nack", segment(id));
        let mut body = json!({"lease": lease});
        if let Some(error) = error {
            body["error"] = json!(error);
        }
        if let Some(ms) = retry_in_ms {
            body["retry_in_ms"] = json!(ms);
        }
        self.call(Method::POST, &path, Some(&body), &[], None).await
    }

    /// Renews a lease for `lease_ms` (default: the queue's) from now;
    /// `lease_lost` when it is already gone.
    pub async fn extend(&self, id: &str, lease: &str, lease_ms: Option<u64>) -> Result<Job, Error> {
        let path = format!("/v1/jobs/{}/extend", segment(id));
        let mut body = json!({"lease": lease});
        if let Some(ms) = lease_ms {
            body["lease_ms"] = json!(ms);
        }
        self.call(Method::POST, &path, Some(&body), &[], None).await
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, published};
    use serde_json::json;

    #[test]
    fn an_expired_repeat_is_a_typed_error_and_a_job_is_a_job() {
        let expired = json!({"id": "0a.q", "queue": "q", "state": "expired"});
        match published(expired) {
            Err(Error::Expired { id, queue }) => {
                assert_eq!((id, queue), ("0a.q".into(), "q".into()))
            }
            other => panic!("{other:?}"),
        }
        let job = json!({"id": "0b.q", "queue": "q", "key": "", "seq": 1, "state": "queued",
            "payload": 1, "attempts": 0, "max_attempts": 5, "created_at": "2025-01-01T00:00:00.000Z"});
        assert_eq!(published(job).unwrap().id, "0b.q");
        let neither = published(json!({"id": "0c.q", "state": "queued"})).unwrap_err();
        assert_eq!(neither.code(), "unexpected_answer");
    }
}
