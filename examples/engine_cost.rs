//! Redis time of the push path's chain script, alone on a Redis: publishes
//! `LANES × PER_LANE` jobs, claims every lane's head, then acks all leased
//! jobs in runs (one run = every lane's current job, as the worker's group
//! commit makes them) until none is left; prints `INFO commandstats` µs per
//! job for `fcall` and the commands per job.
//! Usage: REDIS_URL=redis://127.0.0.1:P cargo run --release --example engine_cost -- LANES PER_LANE
//! (`MAX_ACTIVE=N`: the queue's `max_active_lanes`. `PUBLISH_RUN=N`: measure
//! the publish script instead, the same jobs published in runs of N.)

use orderly::configuration::RedisSettings;
use orderly::queue::engine::{ChainAck, Engine, EngineConf, Mode, NewJob};
use orderly::queue::model::{JobId, QueueName, QueueRef};

fn commandstats(url: &str) -> (u64, u64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    let (mut calls, mut fcall_usec) = (0, 0);
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let field = |name: &str| -> u64 {
            rest.split([',', ':'])
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        if rest.starts_with("info:") {
            continue;
        }
        calls += field("calls=");
        if rest.starts_with("fcall") {
            fcall_usec += field("usec=");
        }
    }
    (calls, fcall_usec)
}

#[actix_web::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (lanes, per_lane) = (args[0], args[1]);
    let url = std::env::var("REDIS_URL").unwrap();
    let engine = Engine::connect(&RedisSettings {
        url: url.clone(),
        cluster_nodes: vec![],
        key_prefix: format!("cost-{}", uuid::Uuid::new_v4().simple()),
        slot_groups: 1,
        wait_replicas: 0,
        wait_timeout_ms: 100,
        connect_timeout_ms: 5_000,
        response_timeout_ms: 5_000,
    })
    .unwrap();
    let queue = QueueRef::new("owner", QueueName::parse("cost").unwrap());
    let conf = EngineConf {
        push: true,
        paused: false,
        on_exhausted: "dead_letter",
        retention_s: 600,
        rate_limit: None,
        max_active: std::env::var("MAX_ACTIVE")
            .ok()
            .and_then(|v| v.parse().ok()),
        version: 1,
    };
    engine.configure(&queue, &conf).await.unwrap();
    let pad: usize = std::env::var("PAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let jobs: Vec<NewJob> = (0..lanes * per_lane)
        .map(|i| NewJob {
            queue: queue.clone(),
            id: JobId::generate(&queue.name).id,
            key: format!("k{}", i % lanes),
            payload: format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(pad)),
            delay_ms: 0,
            max_attempts: 5,
            idempotency_key: None,
            priority: 0,
        })
        .collect();
    if let Some(run) = std::env::var("PUBLISH_RUN")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        // The publish path instead: every job published in runs of `run`.
        let (calls0, usec0) = commandstats(&url);
        for chunk in jobs.chunks(run) {
            engine.publish(chunk, 60).await;
        }
        let (calls1, usec1) = commandstats(&url);
        let n = jobs.len() as f64;
        println!(
            "publish, {lanes} lanes, runs of {run}: fcall µs/job {:.2}, µs/run {:.1}, commands/job {:.2}",
            (usec1 - usec0) as f64 / n,
            (usec1 - usec0) as f64 / n * run as f64,
            (calls1 - calls0) as f64 / n
        );
        return;
    }
    for chunk in jobs.chunks(1000) {
        engine.publish(chunk, 60).await;
    }
    let mut held = engine
        .claim(&queue, lanes as usize, 60_000, Mode::Push, None)
        .await
        .unwrap()
        .jobs;
    let (calls0, usec0) = commandstats(&url);
    let mut done = 0u64;
    let mut runs = 0u64;
    while !held.is_empty() {
        let acks: Vec<ChainAck> = held
            .iter()
            .map(|c| ChainAck {
                id: c.job.id.clone(),
                lease: c.lease.clone(),
                result: "null".into(),
                chain_token: uuid::Uuid::new_v4().simple().to_string(),
            })
            .collect();
        let answers = engine
            .ack_and_lease_next_many(&queue, &acks, 60_000)
            .await
            .unwrap();
        runs += 1;
        done += answers.iter().filter(|a| a.completed).count() as u64;
        held = answers.into_iter().filter_map(|a| a.next).collect();
    }
    let (calls1, usec1) = commandstats(&url);
    assert_eq!(done, lanes * per_lane, "every job acked once");
    println!(
        "lanes {lanes} per_lane {per_lane}: runs {runs}, fcall µs/job {:.2}, commands/job {:.2}",
        (usec1 - usec0) as f64 / done as f64,
        (calls1 - calls0) as f64 / done as f64
    );
}
