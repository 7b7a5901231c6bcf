//! Users, passwords and tokens.
//!
//! - [`actor`]: the auth actor, the only writer of the `users` collection; it
//!   owns registration and login.
//! - [`hasher`]: bcrypt on a bounded pool of dedicated threads; never on an
//!   async thread.
//! - [`token`]: HS256 JWT issue and verify, and the [`token::Authenticated`]
//!   extractor (verification is cheap and runs in the request).
//! - [`domain`]: parsed email and password types.
//! - [`users`]: the MongoDB user store.
//! - [`rate_limit`]: failed-login counters kept in Redis.

pub mod actor;
pub mod domain;
pub mod hasher;
pub mod rate_limit;
pub mod token;
pub mod users;

pub use actor::{AuthActor, AuthError, GetUser, Login, Register};
pub use token::{AccessToken, Authenticated, TokenKeys};
pub use users::User;
