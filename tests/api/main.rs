//! Integration tests: the real HTTP stack against real Redis and a real
//! MongoDB-protocol server. One binary, one module per area.

mod auth;
mod batch_ack;
mod cluster;
mod console;
mod crash;
mod edge;
mod flow;
mod health;
mod helpers;
mod hostile;
mod idle;
mod jobs;
mod keys;
mod lanes;
mod metrics;
mod model;
mod openapi;
mod outage;
mod process;
mod pull;
mod push;
mod receiver;
