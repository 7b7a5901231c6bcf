//! bcrypt on a bounded pool of dedicated threads.
//!
//! [`Hasher`] is a `SyncArbiter` actor: each of its threads hashes one password
//! at a time, away from the async runtime. [`HashPool`] admits at most
//! `threads + queue` jobs at once; past that, callers get
//! [`HashError::Saturated`] immediately (the HTTP layer answers `503`) instead of
//! queueing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};

use super::domain::MAX_PASSWORD_BYTES;

/// Why a hash job did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hashing pool is saturated")]
    Saturated,
    #[error("the password hashing pool has stopped")]
    Stopped,
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
}

/// One bcrypt thread.
pub struct Hasher;

impl Actor for Hasher {
    type Context = SyncContext<Self>;
}

/// Hash a password with the given cost.
#[derive(Message)]
#[rtype(result = "Result<String, bcrypt::BcryptError>")]
struct Hash {
    password: String,
    cost: u32,
}

/// Check a password against a stored hash.
#[derive(Message)]
#[rtype(result = "Result<bool, bcrypt::BcryptError>")]
struct Verify {
    password: String,
    hash: Arc<str>,
}

/// bcrypt keys on 72 bytes: the password and a NUL terminator, cut at 72.
/// The crate's `non_truncating_*` functions count that terminator and so
/// refuse a password of exactly 72 bytes, every byte of which bcrypt uses
/// (only the terminator falls off). Up to [`MAX_PASSWORD_BYTES`] nothing of
/// the password is lost, so the truncating functions serve those; a longer
/// password is refused, never cut.
fn fits_bcrypt(password: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES
}

impl Handler<Hash> for Hasher {
    type Result = Result<String, bcrypt::BcryptError>;

    fn handle(&mut self, msg: Hash, _: &mut Self::Context) -> Self::Result {
        if !fits_bcrypt(&msg.password) {
            return Err(bcrypt::BcryptError::Truncation(msg.password.len()));
        }
        bcrypt::hash(msg.password, msg.cost)
    }
}

impl Handler<Verify> for Hasher {
    type Result = Result<bool, bcrypt::BcryptError>;

    fn handle(&mut self, msg: Verify, _: &mut Self::Context) -> Self::Result {
        if !fits_bcrypt(&msg.password) {
            return Ok(false);
        }
        bcrypt::verify(msg.password, &msg.hash)
    }
}

/// Bounded front door to the [`Hasher`] threads.
#[derive(Clone)]
pub struct HashPool {
    addr: Addr<Hasher>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    cost: u32,
}

/// Holds one admission slot; releases it on drop (also when the caller is cancelled).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashPool {
    /// Starts `threads` bcrypt threads; at most `queue` jobs wait beyond those.
    /// Must be called inside a running actix `System`.
    pub fn start(threads: usize, queue: usize, cost: u32) -> Self {
        Self {
            addr: SyncArbiter::start(threads, || Hasher),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: threads + queue,
            cost,
        }
    }

    fn admit(&self) -> Result<Slot, HashError> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.admitted.clone());
        if before >= self.capacity {
            return Err(HashError::Saturated);
        }
        Ok(slot)
    }

    /// bcrypt hash of `password` at the configured cost.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _slot = self.admit()?;
        let cost = self.cost;
        let hashed = self.addr.send(Hash { password, cost }).await;
        Ok(hashed.map_err(|_| HashError::Stopped)??)
    }

    /// Does `password` match `hash`? A malformed hash or over-long password is
    /// a mismatch, not an error.
    pub async fn verify(&self, password: String, hash: Arc<str>) -> Result<bool, HashError> {
        let _slot = self.admit()?;
        let verified = self.addr.send(Verify { password, hash }).await;
        Ok(verified.map_err(|_| HashError::Stopped)?.unwrap_or(false))
    }
}
