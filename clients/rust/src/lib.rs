//! Client for Orderly, a strictly ordered job queue service.
//!
//! - [`Client`]: typed publish and batch publish (each retried under one
//!   idempotency key), get (with long-poll), claim (repeatable under a
//!   `claim_id`), ack / nack / extend and batch outcomes. Authenticates with any bearer token: a JWT from
//!   [`Client::login`] or an API key (`ok_…`).
//! - [`Consumer`]: the pull loop — long-poll claim, run a handler on each
//!   claimed job while a heartbeat task extends every lease it holds (jobs
//!   waiting their turn and finished ones not reported yet too), report
//!   outcomes in batches riding on the next claim.
//! - [`verify_signature`]: checks a push delivery's `Orderly-Signature`.
//!
//! ```no_run
//! # async fn example() -> Result<(), orderly_client::Error> {
//! use orderly_client::{Client, Publish};
//! let client = Client::new("http://127.0.0.1:8080", "ok_…")?;
//! let job = client
//!     .publish("emails", Publish::new(serde_json::json!({"to": "ann@example.com"})).key("ann"))
//!     .await?;
//! println!("{} is {:?}", job.id, job.state);
//! # Ok(()) }
//! ```

mod client;
mod consumer;
mod error;
mod signature;
mod types;

pub use client::Client;
pub use consumer::{Consumer, HandlerError, StopHandle};
pub use error::Error;
pub use signature::{sign, verify_signature, verify_signature_at};
pub use types::{Ack, Claim, Claimed, Job, JobState, Nack, Outcome, OutcomeStatus, Publish};
