//! Integration tests: the real HTTP stack against real Redis and a real
//! MongoDB-protocol server. One binary, one module per area.

mod auth;
mod batch_ack;
mod cluster;
mod console;
mod crash;
mod edge;
mod faults;
mod flow;
mod health;
mod helpers;
mod hostile;
mod idle;
mod jobs;
mod keys;
mod lanes;
mod limits;
mod metrics;
mod model;
mod openapi;
mod outage;
mod process;
mod proxy;
mod pull;
mod push;
mod receiver;
mod schedules;
