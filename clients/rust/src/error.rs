//! The one error type of the client: an API error answer (with its stable
//! `code`), a transport failure, or an answer that is not what the API
//! promises.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error: branch on `code`, never on `message`.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        /// For `422 validation_failed`: each bad field and why.
        fields: BTreeMap<String, String>,
    },
    /// The server could not be reached, or the exchange broke off.
    #[error("connection failed: {0}")]
    Connection(#[source] reqwest::Error),
    /// A success answer that is not the JSON the API promises.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// Bad input caught before any request was sent.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A publish repeated an `Idempotency-Key` whose original job has
    /// outlived its retention: the server answered `200 {"id", "queue",
    /// "state": "expired"}`. Nothing was enqueued (the key was used before),
    /// and the original job `id` can no longer be read.
    #[error("job {id} of queue {queue} was published under this idempotency key and has expired")]
    Expired { id: String, queue: String },
}

impl Error {
    /// The API error code (`"lease_lost"`, `"not_found"`, …), or
    /// `"connection_failed"` / `"unexpected_answer"` / `"invalid_argument"`,
    /// or `"expired"` for [`Error::Expired`].
    pub fn code(&self) -> &str {
        match self {
            Error::Api { code, .. } => code,
            Error::Connection(_) => "connection_failed",
            Error::Decode(_) => "unexpected_answer",
            Error::Invalid(_) => "invalid_argument",
            Error::Expired { .. } => "expired",
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for `409 lease_lost`.
    pub fn is_lease_lost(&self) -> bool {
        self.code() == "lease_lost"
    }

    /// True for [`Error::Expired`]: a repeated idempotent publish whose
    /// original job is gone. Nothing was enqueued, and nothing will be under
    /// that key — usually the caller's work is already done.
    pub fn is_expired(&self) -> bool {
        matches!(self, Error::Expired { .. })
    }

    /// True for `503 outcome_unknown`: the publish reached Redis but its
    /// reply was lost, so the job(s) may have been enqueued. Repeat it with
    /// the same idempotency key(s) to get the original job(s), never a
    /// duplicate (`publish` and `publish_batch` do so by themselves).
    pub fn is_outcome_unknown(&self) -> bool {
        self.status() == Some(503) && self.code() == "outcome_unknown"
    }

    /// Worth retrying: `503` or the server could not be reached.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Connection(_)) || self.status() == Some(503)
    }

    /// The error of a non-2xx answer with body `text`.
    pub(crate) fn from_answer(status: u16, text: &str) -> Error {
        #[derive(Deserialize)]
        struct Envelope {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: String,
            message: String,
            request_id: Option<String>,
            #[serde(default)]
            fields: BTreeMap<String, String>,
        }
        match serde_json::from_str::<Envelope>(text) {
            Ok(Envelope { error }) => Error::Api {
                status,
                code: error.code,
                message: error.message,
                request_id: error.request_id,
                fields: error.fields,
            },
            Err(_) => Error::Api {
                status,
                code: format!("http_{status}"),
                message: text.chars().take(200).collect(),
                request_id: None,
                fields: BTreeMap::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn outcome_unknown_is_a_transient_503_of_its_own() {
        let body = r#"{"error":{"code":"outcome_unknown","message":"may have been enqueued"}}"#;
        let unknown = Error::from_answer(503, body);
        assert!(unknown.is_outcome_unknown() && unknown.is_transient());
        let down = Error::from_answer(503, r#"{"error":{"code":"unavailable","message":"down"}}"#);
        assert!(!down.is_outcome_unknown() && down.is_transient());
    }
}
