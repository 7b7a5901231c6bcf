//! Integration tests: the real HTTP stack against real Redis and a real
//! MongoDB-protocol server. One binary, one module per area.

mod auth;
mod edge;
mod health;
mod helpers;
mod jobs;
mod metrics;
mod pull;
mod push;
mod receiver;
