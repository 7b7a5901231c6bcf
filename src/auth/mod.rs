//! Users, passwords and tokens.
//!
//! - [`actor`]: the auth actor, the only writer of the `users` collection; it
//!   owns registration and login.
//! - [`hasher`]: bcrypt on a bounded pool of dedicated threads; never on an
//!   async thread.
//! - [`token`]: HS256 JWT issue and verify (cheap; runs in the request).
//! - [`keys`]: API keys (`ok_…`), their MongoDB store and verification cache.
//! - [`caller`]: the extractors that say who calls ([`Caller`]) and whether
//!   a route's scope allows it ([`Authorized`]).
//! - [`domain`]: parsed email and password types.
//! - [`users`]: the MongoDB user store.
//! - [`rate_limit`]: failed-login counters kept in Redis.

pub mod actor;
pub mod caller;
pub mod domain;
pub mod hasher;
pub mod keys;
pub mod rate_limit;
pub mod token;
pub mod users;

pub use actor::{AuthActor, AuthError, GetUser, Login, Register};
pub use caller::{Authenticated, Authorized, Caller, need};
pub use keys::{ApiKeys, Scope};
pub use token::{AccessToken, TokenKeys};
pub use users::User;
