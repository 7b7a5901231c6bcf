//! Orderly's benchmark: drives a running Orderly (release build, started by
//! `scripts/bench.sh`) through every target of PRODUCT.md §5, measures this
//! machine's ceilings in the same run (`redis-benchmark`, and a trivial HTTP
//! endpoint under the same load generator and connection count), and prints
//! each figure with its target, ceiling and ratio; the same as JSON in
//! `target/bench/results.json`.
//!
//! Correctness is checked inside the run: every published job must be
//! accounted for and each lane's deliveries must arrive in `seq` order. A run
//! that loses or reorders a job exits non-zero, whatever its speed.
//!
//! Every row also records what it cost: Redis `INFO commandstats` deltas
//! divided by the row's jobs (commands run inside scripts included), and the
//! CPU time Orderly, redis-server and the bench itself used during the row.
//!
//! Usage: `bench --url http://127.0.0.1:8080 --redis-port 6379 --pid <orderly pid>
//!         [--seconds 5] [--connections 50] [--soak-seconds 0]
//!         [--only ceilings,publish,batch,push1,push64,pull,latency,idle,memory]`
//! `--only` runs just the named scenarios (for profiling one path); ratios
//! need `ceilings` in the list.
//!
//! On a Redis Cluster (`scripts/bench.sh --cluster`) `--url`, `--pid` and
//! `--redis-port` take comma-separated lists: requests go round-robin to the
//! Orderly processes, and every row's cost also lists each master's (shard's)
//! Redis commands and script time per job, which is what shows whether the
//! per-shard cost of a job depends on the number of shards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

struct Args {
    url: String,
    /// Every Orderly process (round-robin); `url` is the first.
    urls: Vec<String>,
    /// Every Redis (cluster master); `redis_port` is the first.
    redis_ports: Vec<u16>,
    redis_port: u16,
    /// Every Orderly process; `pid` is the first.
    pids: Vec<u32>,
    pid: u32,
    seconds: u64,
    connections: usize,
    soak_seconds: u64,
    /// Scenarios to run; empty = all.
    only: Vec<String>,
}

impl Args {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        urls: Vec::new(),
        redis_ports: Vec::new(),
        redis_port: 6379,
        pids: Vec::new(),
        pid: 0,
        seconds: 5,
        connections: 50,
        soak_seconds: 0,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => a.urls = value.split(',').map(str::to_owned).collect(),
            "--redis-port" => {
                a.redis_ports = value.split(',').map(|p| p.parse().expect("port")).collect()
            }
            "--pid" => a.pids = value.split(',').map(|p| p.parse().expect("pid")).collect(),
            "--seconds" => a.seconds = value.parse().expect("seconds"),
            "--connections" => a.connections = value.parse().expect("connections"),
            "--soak-seconds" => a.soak_seconds = value.parse().expect("seconds"),
            "--only" => a.only = value.split(',').map(str::to_owned).collect(),
            other => panic!("unknown flag {other}"),
        }
    }
    a.url = a.urls.first().cloned().unwrap_or(a.url);
    a.redis_port = a.redis_ports.first().copied().unwrap_or(a.redis_port);
    a.pid = a.pids.first().copied().unwrap_or(a.pid);
    if a.urls.is_empty() {
        a.urls.push(a.url.clone());
    }
    if a.redis_ports.is_empty() {
        a.redis_ports.push(a.redis_port);
    }
    if a.pids.is_empty() {
        a.pids.push(a.pid);
    }
    a
}

/// Latency samples in microseconds.
#[derive(Default, Clone)]
struct Latencies(Vec<u32>);

impl Latencies {
    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] as f64 / 1000.0
    }

    fn summary(&self) -> Value {
        json!({"p50_ms": self.pct(0.50), "p90_ms": self.pct(0.90), "p99_ms": self.pct(0.99), "max_ms": self.pct(1.0)})
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Closed-loop load: `connections` workers repeat `request` for `seconds`.
async fn closed_loop<F, Fut>(connections: usize, seconds: u64, request: F) -> (u64, Latencies, u64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..connections {
        let (request, stop, counter, errors) = (
            request.clone(),
            stop.clone(),
            counter.clone(),
            errors.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                if request(n).await {
                    lat.push(started.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Latencies::default();
    for h in handles {
        all.0.extend(h.await.unwrap());
    }
    let ok = all.0.len() as u64;
    (ok, all, errors.load(Ordering::Relaxed))
}

/// A local push receiver: records (queue, key, seq) in arrival order.
struct Receiver {
    seen: Mutex<Vec<(String, String, u64, Instant)>>,
    /// Signalled on every delivery, so waiting for one burns no CPU (a
    /// spinning waiter would take a core from Orderly on this 2-core box).
    arrived: tokio::sync::Notify,
}

/// Reads the body, as a real receiver does: actix-web closes a keep-alive
/// connection whose request body was left unread, which would make every push
/// pay a new TCP connection.
async fn receive(req: HttpRequest, _body: web::Bytes, state: web::Data<Receiver>) -> HttpResponse {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let seq = header("orderly-seq").parse().unwrap_or(0);
    state.seen.lock().unwrap().push((
        header("orderly-queue"),
        header("orderly-key"),
        seq,
        Instant::now(),
    ));
    state.arrived.notify_one();
    HttpResponse::Ok().finish()
}

async fn trivial() -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": true}))
}

/// Starts the receiver and the trivial endpoint on their own thread; returns the port.
fn start_server(receiver: web::Data<Receiver>) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(receiver.clone())
                    .route("/trivial", web::post().to(trivial))
                    .default_service(web::to(receive))
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .unwrap();
            tx.send(server.addrs()[0].port()).unwrap();
            server.run().await
        })
    });
    rx.recv().unwrap()
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.to_owned())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// LPUSH/s of `redis-benchmark` (`--cluster`: over every master).
fn redis_benchmark(port: u16, clients: u32, cluster: bool) -> f64 {
    let out = std::process::Command::new("redis-benchmark")
        .args(if cluster { &["--cluster"][..] } else { &[][..] })
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "lpush",
            "-n",
            "200000",
            "-c",
            &clients.to_string(),
            "-P",
            "1",
            "-q",
            "--csv",
        ])
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("LPUSH"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or(0.0)
}

/// What a row cost: Redis commands (from `INFO commandstats`) and CPU time of
/// Orderly, redis-server and this bench, sampled before and after the row.
struct Probe {
    /// Every Redis (cluster master) whose commands are counted.
    redis_ports: Vec<u16>,
    /// (name, pid) of each process whose CPU time is recorded.
    pids: Vec<(String, u32)>,
    /// Orderly's processes: their peak resident memory is read, and reset
    /// (`clear_refs` 5), by every sample, so each row reports its own peak.
    orderly_pids: Vec<u32>,
    /// The highest peak (kB) any sample read: the whole run's peak.
    run_peak_kb: std::sync::atomic::AtomicU64,
}

struct Sample {
    /// Calls per command, over every Redis.
    commands: HashMap<String, u64>,
    /// Microseconds Redis spent in script calls (fcall, evalsha and eval, with the
    /// commands they ran), over every Redis.
    script_usec: u64,
    /// Per Redis (shard): total calls and script microseconds.
    shards: Vec<(u64, u64)>,
    cpu_ticks: Vec<u64>,
    /// Machine-wide (busy, total) ticks from /proc/stat: other load shows here.
    machine: (u64, u64),
    /// The largest peak resident memory (kB) of an Orderly process since the
    /// previous sample.
    peak_rss_kb: u64,
    at: Instant,
}

impl Probe {
    fn new(redis_ports: &[u16], orderly_pids: &[u32]) -> Self {
        let suffix = |kind: &str, i: usize, n: usize| {
            if n == 1 {
                kind.to_owned()
            } else {
                format!("{kind}{}", i + 1)
            }
        };
        let mut pids: Vec<(String, u32)> = orderly_pids
            .iter()
            .enumerate()
            .map(|(i, pid)| (suffix("orderly", i, orderly_pids.len()), *pid))
            .collect();
        for (i, port) in redis_ports.iter().enumerate() {
            let info = redis_cli(*port, &["INFO", "server"]);
            let redis_pid = info
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            pids.push((suffix("redis", i, redis_ports.len()), redis_pid));
        }
        pids.push(("bench".to_owned(), std::process::id()));
        let probe = Self {
            redis_ports: redis_ports.to_vec(),
            pids,
            orderly_pids: orderly_pids.to_vec(),
            run_peak_kb: std::sync::atomic::AtomicU64::new(0),
        };
        // The peak so far (start-up) counts for the run, not for the first row.
        probe.peak_since_last_sample_kb();
        probe
    }

    /// The largest VmHWM of Orderly's processes since the previous call,
    /// which resets them (writing 5 to `/proc/<pid>/clear_refs` sets a
    /// process's peak to its current resident memory), so each row's figure
    /// is its own. Every reading also counts toward the run's peak.
    fn peak_since_last_sample_kb(&self) -> u64 {
        let mut peak = 0;
        for pid in &self.orderly_pids {
            let kb = (peak_rss_mb(*pid) * 1024.0) as u64;
            peak = peak.max(kb);
            // Without the reset (an older kernel) each figure is the peak
            // so far: still an upper bound of the row's.
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
        self.run_peak_kb
            .fetch_max(peak, std::sync::atomic::Ordering::Relaxed);
        peak
    }

    /// The whole run's peak resident memory of an Orderly process (MB).
    fn run_peak_rss_mb(&self) -> f64 {
        self.peak_since_last_sample_kb();
        self.run_peak_kb.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    }

    fn sample(&self) -> Sample {
        let mut commands = HashMap::new();
        let mut script_usec = 0;
        let mut shards = Vec::new();
        for port in &self.redis_ports {
            let (calls, usec) = Self::sample_one(*port, &mut commands);
            script_usec += usec;
            shards.push((calls, usec));
        }
        let cpu_ticks = self.pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
        Sample {
            commands,
            script_usec,
            shards,
            cpu_ticks,
            machine: machine_ticks(),
            peak_rss_kb: self.peak_since_last_sample_kb(),
            at: Instant::now(),
        }
    }

    /// Adds one Redis's calls per command to `commands`; returns its total
    /// calls and script microseconds.
    fn sample_one(port: u16, commands: &mut HashMap<String, u64>) -> (u64, u64) {
        let (mut total, mut script_usec) = (0, 0);
        for line in redis_cli(port, &["INFO", "commandstats"]).lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            *commands.entry(name.to_owned()).or_default() += calls;
            total += calls;
            if name == "evalsha" || name == "eval" || name == "fcall" {
                script_usec += rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("usec="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        (total, script_usec)
    }

    /// Commands per job (by command, largest first, and in total) and the
    /// share of one core each process used between `before` and now.
    fn cost(&self, before: &Sample, jobs: u64) -> Value {
        let after = self.sample();
        let mut per_job: Vec<(String, f64)> = after
            .commands
            .iter()
            .map(|(name, calls)| {
                let delta = calls - before.commands.get(name).copied().unwrap_or(0);
                (name.clone(), delta as f64 / jobs.max(1) as f64)
            })
            .filter(|(_, n)| *n >= 0.005)
            .collect();
        per_job.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Commands a script runs are counted under their own names, and the
        // script call itself under fcall (evalsha/eval for the few EVAL scripts):
        // the total counts both.
        let total: f64 = per_job.iter().map(|(_, n)| n).sum();
        let wall = after.at.duration_since(before.at).as_secs_f64();
        let ticks_per_s = 100.0;
        let cores: serde_json::Map<String, Value> = self
            .pids
            .iter()
            .zip(after.cpu_ticks.iter().zip(&before.cpu_ticks))
            .map(|((name, _), (a, b))| {
                let share = (a - b) as f64 / ticks_per_s / wall;
                (name.clone(), json!((share * 100.0).round() / 100.0))
            })
            .collect();
        let round = |x: f64| (x * 100.0).round() / 100.0;
        let (busy, all) = (
            after.machine.0 - before.machine.0,
            after.machine.1 - before.machine.1,
        );
        let cores_busy = busy as f64 / all.max(1) as f64 * num_cpus();
        let per_shard: Vec<Value> = self
            .redis_ports
            .iter()
            .zip(after.shards.iter().zip(&before.shards))
            .map(|(port, ((calls, usec), (calls0, usec0)))| {
                json!({
                    "port": port,
                    "commands_per_job": round((calls - calls0) as f64 / jobs.max(1) as f64),
                    "script_usec_per_job": round((usec - usec0) as f64 / jobs.max(1) as f64),
                })
            })
            .collect();
        json!({
            "redis_shards": per_shard,
            "redis_commands_per_job": round(total),
            "redis_script_usec_per_job": round((after.script_usec - before.script_usec) as f64 / jobs.max(1) as f64),
            "redis_per_job": per_job.iter().map(|(n, c)| json!([n, round(*c)])).collect::<Vec<_>>(),
            "cpu_cores": cores,
            "machine_cores_busy": round(cores_busy),
            "orderly_peak_rss_mb": round(after.peak_rss_kb as f64 / 1024.0),
        })
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A field of Redis's `INFO persistence`.
fn persistence_field(port: u16, field: &str) -> u64 {
    info_field(port, "persistence", field)
}

/// A numeric field of one section of Redis's `INFO`.
fn info_field(port: u16, section: &str, field: &str) -> u64 {
    redis_cli(port, &["INFO", section])
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Completed AOF rewrites so far (`aof_rewrites` in Redis 7).
fn aof_rewrites(port: u16) -> u64 {
    persistence_field(port, "aof_rewrites")
}

/// Starts an AOF rewrite and waits (at most 60 s) until none is running or
/// scheduled; returns how long that took, in seconds.
async fn aof_rewrite_settled(port: u16) -> f64 {
    let start = Instant::now();
    redis_cli(port, &["BGREWRITEAOF"]);
    while start.elapsed() < Duration::from_secs(60)
        && (persistence_field(port, "aof_rewrite_in_progress") == 1
            || persistence_field(port, "aof_rewrite_scheduled") == 1)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (start.elapsed().as_secs_f64() * 100.0).round() / 100.0
}

/// Orderly's own duration histogram of `POST /v1/queues/{queue}/jobs`
/// (cumulative count per bucket bound), from its /metrics.
async fn publish_buckets(ctx: &Ctx) -> Vec<(String, f64)> {
    let text = match ctx.http.get(format!("{}/metrics", ctx.url)).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| {
            l.starts_with("orderly_http_requests_duration_seconds_bucket{")
                && l.contains(r#"endpoint="/v1/queues/{queue}/jobs""#)
                && l.contains(r#"method="POST""#)
                && l.contains(r#"status="202""#)
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_owned();
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

/// Share of the requests between two histogram samples that took at most
/// each bucket's bound: where the time went, as Orderly saw it.
fn server_side(before: &[(String, f64)], after: &[(String, f64)]) -> Value {
    let old = |le: &str| {
        before
            .iter()
            .find(|(l, _)| l == le)
            .map_or(0.0, |(_, c)| *c)
    };
    let total = after
        .iter()
        .find(|(l, _)| l == "+Inf")
        .map_or(0.0, |(_, c)| c - old("+Inf"));
    let shares: serde_json::Map<String, Value> = after
        .iter()
        .map(|(le, c)| {
            let share = (c - old(le)) / total.max(1.0);
            (le.clone(), json!((share * 10000.0).round() / 10000.0))
        })
        .collect();
    json!({"requests": total, "share_at_or_under_le": shares})
}

/// (busy, total) CPU ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    // idle and iowait are fields 4 and 5.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn num_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// utime + stime of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

struct Ctx {
    http: reqwest::Client,
    url: String,
    /// Every Orderly process; requests go round-robin.
    urls: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
    token: String,
}

impl Ctx {
    /// The Orderly process the next request goes to.
    fn base(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.urls[i % self.urls.len()]
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base()))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base()))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn wait_completed(&self, queue: &str, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let q = self.get(&format!("/v1/queues/{queue}")).await;
            if q["stats"]["completed"].as_u64() == Some(n) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// Checks the receiver's log for one queue: all `expected` jobs, each lane in seq order.
fn check_order(receiver: &Receiver, queue: &str, expected: u64) -> Result<(), String> {
    let seen = receiver.seen.lock().unwrap();
    let mut lanes: HashMap<&str, u64> = HashMap::new();
    let mut count = 0;
    for (q, key, seq, _) in seen.iter().filter(|(q, ..)| q == queue) {
        let _ = q;
        count += 1;
        let last = lanes.entry(key.as_str()).or_insert(0);
        if *seq <= *last {
            return Err(format!("{queue}: lane {key} got seq {seq} after {last}"));
        }
        *last = *seq;
    }
    if count != expected {
        return Err(format!("{queue}: {count} deliveries, expected {expected}"));
    }
    Ok(())
}

/// The memory row's text field: with it a job's payload is about 120 bytes
/// of JSON, a typical small event.
const MEMORY_TEXT: &str =
    "order 7 shipped from the north warehouse; invoice and tracking number follow by mail";

/// The payload of job `i` of the memory scenario.
fn memory_payload(i: u64) -> Value {
    json!({"user": format!("user-{:04}", i % 1000), "text": MEMORY_TEXT, "i": i})
}

/// Creates the pull queue `queue` (without consumers it keeps its backlog).
async fn create_pull_queue(ctx: &Ctx, queue: &str) -> Result<(), String> {
    let status = ctx
        .http
        .put(format!("{}/v1/queues/{queue}", ctx.url))
        .bearer_auth(&ctx.token)
        .json(&json!({"delivery": {"mode": "pull"}}))
        .send()
        .await
        .map_err(|e| format!("{queue}: create: {e}"))?
        .status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{queue}: create answered {status}"))
    }
}

/// Publishes jobs `0..total` of [`memory_payload`] into `queue`, spread over
/// `lanes` lane keys, 1,000 per batch request from `connections` concurrent
/// tasks; returns the requests not answered 202.
async fn publish_backlog(
    ctx: &Arc<Ctx>,
    queue: &str,
    total: u64,
    lanes: u64,
    connections: usize,
) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let path = format!("/v1/queues/{queue}/jobs/batch");
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (c, next, path) = (ctx.clone(), next.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            loop {
                let start = next.fetch_add(1000, Ordering::Relaxed);
                if start >= total {
                    return errors;
                }
                let jobs: Vec<Value> = (start..(start + 1000).min(total))
                    .map(
                        |i| json!({"payload": memory_payload(i), "key": format!("k{}", i % lanes)}),
                    )
                    .collect();
                if c.post(&path, &json!({"jobs": jobs}))
                    .await
                    .status()
                    .as_u16()
                    != 202
                {
                    errors += 1;
                }
            }
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    errors
}

/// Latency of `n` sequential single-job claims on each of `queues`, after
/// `warmup` unrecorded ones. The queues take turns, claim by claim, so load
/// on the machine that comes and goes weighs on all of them alike. Each
/// claim carries the ack of the job the queue's previous claim returned
/// (§7.3), as a one-job consumer would, so a sample is one ack-and-claim
/// round trip; the last jobs are acked on their own.
async fn claim_latencies(
    ctx: &Ctx,
    queues: &[&str],
    warmup: usize,
    n: usize,
) -> Result<Vec<Latencies>, String> {
    let mut lats = vec![Latencies::default(); queues.len()];
    let mut acks: Vec<Vec<Value>> = vec![Vec::new(); queues.len()];
    let acked =
        |r: &Value, acks: &[Value]| acks.is_empty() || r["results"][0]["status"] == "completed";
    for i in 0..warmup + n {
        for (q, queue) in queues.iter().enumerate() {
            let started = Instant::now();
            let r: Value = ctx
                .post(
                    &format!("/v1/queues/{queue}/claim"),
                    &json!({"max_jobs": 1, "acks": acks[q]}),
                )
                .await
                .json()
                .await
                .map_err(|e| format!("{queue}: claim {i}: {e}"))?;
            if i >= warmup {
                lats[q].0.push(started.elapsed().as_micros() as u32);
            }
            if !acked(&r, &acks[q]) {
                return Err(format!("{queue}: claim {i} did not complete its ack: {r}"));
            }
            let job = &r["jobs"][0];
            if job.is_null() {
                return Err(format!("{queue}: claim {i} returned no job"));
            }
            acks[q] = vec![json!({"id": job["id"], "lease": job["lease"]})];
        }
    }
    for (queue, acks) in queues.iter().zip(&acks) {
        let r: Value = ctx
            .post(&format!("/v1/queues/{queue}/ack"), &json!({"acks": acks}))
            .await
            .json()
            .await
            .map_err(|e| format!("{queue}: last ack: {e}"))?;
        if !acked(&r, acks) {
            return Err(format!("{queue}: the last ack did not complete: {r}"));
        }
    }
    Ok(lats)
}

/// The physical limit of one lane: per job one push to the receiver and
/// one Redis call that acks it and leases the next, nothing else. Measured
/// as exactly that chain, 2,000 times (after 200 to warm up), by one task
/// on a single-threaded runtime as Orderly's worker runs: a `reqwest` POST
/// of a job-sized body to the bench's receiver (its trivial route, one
/// keep-alive connection), then an engine ack-and-lease-next on a one-lane
/// push queue of its own (key prefix `bench-limit-<pid>`). Answers the
/// median µs of each half (the mean is dominated by the few round trips
/// that catch a sleeping vCPU).
fn one_lane_round_trips_us(receiver_port: u16, redis_port: u16) -> (f64, f64) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(one_lane_chain(receiver_port, redis_port))
    })
    .join()
    .unwrap()
}

async fn one_lane_chain(receiver_port: u16, redis_port: u16) -> (f64, f64) {
    use orderly::queue::engine::{Engine, EngineConf, Mode, NewJob};
    use orderly::queue::model::{QueueName, QueueRef};
    let settings = orderly::configuration::RedisSettings {
        url: format!("redis://127.0.0.1:{redis_port}"),
        cluster_nodes: Vec::new(),
        key_prefix: format!("bench-limit-{}", std::process::id()),
        slot_groups: 0,
        wait_replicas: 0,
        wait_timeout_ms: 100,
        connect_timeout_ms: 2000,
        response_timeout_ms: 2000,
    };
    let engine = Engine::connect(&settings).expect("engine");
    engine.check_layout().await.expect("layout");
    let queue = QueueRef::new("bench", QueueName::parse("limit").unwrap());
    let conf = EngineConf {
        push: true,
        paused: false,
        on_exhausted: "dead_letter",
        retention_s: 60,
        rate_limit: None,
        max_active: None,
        version: 1,
    };
    engine.configure(&queue, &conf).await.expect("configure");
    let (n, warm) = (2000, 200);
    let jobs: Vec<NewJob> = (0..=n + warm)
        .map(|i| NewJob {
            queue: queue.clone(),
            id: orderly::queue::model::JobId::generate(&queue.name).id,
            key: String::new(),
            payload: json!({"i": i}).to_string(),
            delay_ms: 0,
            max_attempts: 3,
            idempotency_key: None,
            priority: 0,
        })
        .collect();
    for chunk in jobs.chunks(1000) {
        engine.publish(chunk, 60).await;
    }
    let batch = engine
        .claim(&queue, 1, 30_000, Mode::Push, None)
        .await
        .expect("claim");
    let mut held = batch.jobs.into_iter().next().expect("a job");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{receiver_port}/trivial");
    let (mut push_times, mut redis_times) = (Vec::new(), Vec::new());
    for i in 0..n + warm {
        let t0 = Instant::now();
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(held.job.payload.get().to_owned())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let t1 = Instant::now();
        let token = format!("t{i}");
        let acked = engine
            .ack_and_lease_next(&queue, &held.job.id, &held.lease, "null", 30_000, &token)
            .await
            .expect("ack");
        held = acked.next.expect("the lane's next job");
        if i >= warm {
            redis_times.push(t1.elapsed());
            push_times.push(t1 - t0);
        }
    }
    let _ = engine.delete_queue(&queue).await;
    let median = |mut d: Vec<Duration>| {
        d.sort();
        d[d.len() / 2].as_secs_f64() * 1e6
    };
    (median(push_times), median(redis_times))
}

/// Redis `used_memory`, summed over every Redis (cluster master).
fn used_memory(ports: &[u16]) -> u64 {
    ports
        .iter()
        .map(|&p| info_field(p, "memory", "used_memory"))
        .sum()
}

/// Every key of `queue` (found by SCAN on each Redis: `…:q:<owner>:<queue>:<suffix>`)
/// with its type, encoding, entries and exact `MEMORY USAGE` (`SAMPLES 0`
/// walks the whole key), each also divided by `jobs`; largest first.
fn queue_key_usage(ports: &[u16], queue: &str, jobs: u64) -> Vec<Value> {
    let pattern = format!("*:q:*:{queue}:*");
    let mut keys = Vec::new();
    for &port in ports {
        for key in redis_cli(port, &["--scan", "--pattern", &pattern]).lines() {
            let suffix = key
                .rsplit_once(&format!(":{queue}:"))
                .map_or(key, |(_, s)| s);
            let kind = redis_cli(port, &["TYPE", key]).trim().to_owned();
            let entries = match kind.as_str() {
                "hash" => redis_cli(port, &["HLEN", key]),
                "zset" => redis_cli(port, &["ZCARD", key]),
                _ => String::new(),
            };
            let bytes: u64 = redis_cli(port, &["MEMORY", "USAGE", key, "SAMPLES", "0"])
                .trim()
                .parse()
                .unwrap_or(0);
            keys.push(json!({
                "key": format!("Q:{suffix}"),
                "type": kind,
                "encoding": redis_cli(port, &["OBJECT", "ENCODING", key]).trim(),
                "entries": entries.trim().parse::<u64>().ok(),
                "bytes": bytes,
                "bytes_per_job": (bytes as f64 / jobs as f64 * 10.0).round() / 10.0,
            }));
        }
    }
    keys.sort_by_key(|k| std::cmp::Reverse(k["bytes"].as_u64()));
    keys
}

/// The memory scenario: Redis bytes per queued job of a 500,000-job backlog
/// (64 lanes, ~120-byte payloads) beyond its payload, with each key's share;
/// then single-job claim latency on that backlog against a 1,000-job one.
/// Its queues are deleted at the end, so it leaves no backlog behind.
async fn memory_rows(ctx: &Arc<Ctx>, a: &Args, probe: &Probe) -> Result<Vec<Value>, String> {
    const JOBS: u64 = 500_000;
    const LANES: u64 = 64;
    const SMALL: u64 = 1_000;
    const WARMUP: usize = 20;
    const CLAIMS: usize = 300;
    let (big, small) = ("bench-memory", "bench-memory-1k");
    let started = Instant::now();

    create_pull_queue(ctx, small).await?;
    if publish_backlog(ctx, small, SMALL, LANES, 1).await > 0 {
        return Err(format!("{small}: a batch publish failed"));
    }

    create_pull_queue(ctx, big).await?;
    let cost_before = probe.sample();
    let before = used_memory(&a.redis_ports);
    let publish_started = Instant::now();
    let errors = publish_backlog(ctx, big, JOBS, LANES, 4).await;
    let publish_s = publish_started.elapsed().as_secs_f64();
    let after = used_memory(&a.redis_ports);
    let cost = probe.cost(&cost_before, JOBS);
    if errors > 0 {
        return Err(format!("{big}: {errors} batch publishes failed"));
    }
    let waiting = ctx.get(&format!("/v1/queues/{big}")).await["stats"]["waiting"].as_u64();
    if waiting != Some(JOBS) {
        return Err(format!("{big}: {JOBS} published but {waiting:?} waiting"));
    }
    // Orderly stores each payload's JSON text exactly as sent (compact).
    let payload_bytes: usize = (0..JOBS).map(|i| memory_payload(i).to_string().len()).sum();
    let per_job = |bytes: f64| (bytes / JOBS as f64 * 10.0).round() / 10.0;
    let bytes_per_job = per_job(after.saturating_sub(before) as f64);
    let payload_per_job = per_job(payload_bytes as f64);
    let overhead = ((bytes_per_job - payload_per_job) * 10.0).round() / 10.0;
    let breakdown_started = Instant::now();
    let keys = queue_key_usage(&a.redis_ports, big, JOBS);
    let breakdown_s = breakdown_started.elapsed().as_secs_f64();
    let keys_bytes: u64 = keys.iter().filter_map(|k| k["bytes"].as_u64()).sum();

    // The publish grew the AOF past its auto-rewrite size: a rewrite forking
    // mid-measurement would stall Redis.
    aof_rewrite_settled(a.redis_port).await;
    let lats = claim_latencies(ctx, &[small, big], WARMUP, CLAIMS).await?;
    let (lat_small, lat_big) = (&lats[0], &lats[1]);
    for queue in [big, small] {
        ctx.http
            .delete(format!("{}/v1/queues/{queue}", ctx.url))
            .bearer_auth(&ctx.token)
            .send()
            .await
            .map_err(|e| format!("{queue}: delete: {e}"))?;
    }
    let scenario_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let p50_ratio = lat_big.pct(0.5) / lat_small.pct(0.5);
    Ok(vec![
        json!({"what": "Redis bytes/queued job beyond payload", "value": overhead, "unit": "B/job", "target": 400, "ceiling": null, "ratio": null, "errors": 0,
               "memory": {"jobs": JOBS, "lanes": LANES, "used_memory_before": before, "used_memory_after": after,
                          "bytes_per_job": bytes_per_job, "payload_bytes_per_job": payload_per_job, "overhead_per_job": overhead,
                          // MEMORY USAGE counts a dictEntry as its 24 bytes; jemalloc gives it 32.
                          "keys_bytes_per_job": per_job(keys_bytes as f64), "keys": keys,
                          "publish_s": round2(publish_s), "breakdown_s": round2(breakdown_s), "scenario_s": scenario_s},
               "cost": cost}),
        json!({"what": "claim p50 at 500k / at 1k backlog", "value": p50_ratio, "unit": "x", "target": 1.3, "ceiling": null, "ratio": null, "errors": 0,
               "latency": lat_big.summary(), "latency_1k": lat_small.summary(),
               "claims": CLAIMS, "warmup_claims": WARMUP, "lanes": LANES,
               "method": "sequential claims, max_jobs 1, the two queues in turn, each claim carrying the ack of the job its queue's previous claim returned (one ack-and-claim round trip per sample)"}),
    ])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let http = client();
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let creds = json!({"email": email, "password": "bench-password"});
    http.post(format!("{}/v1/auth/register", a.url))
        .json(&creds)
        .send()
        .await
        .unwrap();
    let login: Value = http
        .post(format!("{}/v1/auth/login", a.url))
        .json(&creds)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ctx = Arc::new(Ctx {
        http: http.clone(),
        url: a.url.clone(),
        urls: a.urls.clone(),
        next: std::sync::atomic::AtomicUsize::new(0),
        token: login["access_token"].as_str().expect("token").to_owned(),
    });
    let receiver = web::Data::new(Receiver {
        seen: Mutex::new(Vec::new()),
        arrived: tokio::sync::Notify::new(),
    });
    let port = start_server(receiver.clone());
    let hook = format!("http://127.0.0.1:{port}/hook");
    let mut failures: Vec<String> = Vec::new();
    let mut rows: Vec<Value> = Vec::new();
    let secs = a.seconds;

    let probe = Probe::new(&a.redis_ports, &a.pids);

    // Ceilings (NaN when not measured: the ratios become null).
    let (mut redis_c50, mut redis_c1, mut trivial_rps) = (f64::NAN, f64::NAN, f64::NAN);
    if a.runs("ceilings") {
        let cluster = a.redis_ports.len() > 1;
        redis_c50 = redis_benchmark(a.redis_port, 50, cluster);
        redis_c1 = redis_benchmark(a.redis_port, 1, cluster);
        let trivial_url = format!("http://127.0.0.1:{port}/trivial");
        let h = http.clone();
        let (trivial_n, _, _) = closed_loop(a.connections, secs, move |_| {
            let (h, u) = (h.clone(), trivial_url.clone());
            async move {
                h.post(&u)
                    .json(&json!({"payload": 1}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        trivial_rps = trivial_n as f64 / secs as f64;
    }

    // 1. Publish, one job per request.
    if a.runs("publish") {
        let before = probe.sample();
        let c = ctx.clone();
        let (n, lat, errors) = closed_loop(a.connections, secs, move |i| {
            let c = c.clone();
            async move {
                let body = json!({"payload": {"i": i}, "key": format!("k{}", i % 64)});
                c.post("/v1/queues/bench-publish/jobs", &body)
                    .await
                    .status()
                    .as_u16()
                    == 202
            }
        })
        .await;
        let publish_rps = n as f64 / secs as f64;
        rows.push(json!({"what": "publish, 1 job/request", "value": publish_rps, "unit": "jobs/s", "target": 30000, "ceiling": trivial_rps, "ratio": publish_rps / trivial_rps, "latency": lat.summary(), "errors": errors, "cost": probe.cost(&before, n)}));
        let stats = ctx.get("/v1/queues/bench-publish").await;
        if stats["stats"]["waiting"].as_u64() != Some(n) {
            failures.push(format!(
                "publish: {n} accepted but {} waiting",
                stats["stats"]["waiting"]
            ));
        }
    }

    // 2. Batch publish (1000 per request).
    if a.runs("batch") {
        // The rows before grew the AOF towards its auto-rewrite size: their
        // rewrite is done first, as before the latency row, so this row pays
        // only for rewrites its own writes cause (counted below).
        let settled_in = if a.redis_ports.len() == 1 {
            aof_rewrite_settled(a.redis_port).await
        } else {
            0.0
        };
        let rewrites_before = aof_rewrites(a.redis_port);
        let before = probe.sample();
        let c = ctx.clone();
        let batch: Arc<Value> = Arc::new(
            json!({"jobs": (0..1000).map(|i| json!({"payload": {"i": i}, "key": format!("k{}", i % 64)})).collect::<Vec<_>>()}),
        );
        let (n, lat, errors) = closed_loop(4, secs, move |_| {
            let (c, batch) = (c.clone(), batch.clone());
            async move {
                c.post("/v1/queues/bench-batch/jobs/batch", &batch)
                    .await
                    .status()
                    .as_u16()
                    == 202
            }
        })
        .await;
        let batch_jobs = n as f64 * 1000.0 / secs as f64;
        rows.push(json!({"what": "batch publish (1000/request)", "aof_rewrite_before_row_s": settled_in, "aof_rewrites_during_row": aof_rewrites(a.redis_port) - rewrites_before, "value": batch_jobs, "unit": "jobs/s", "target": 300000, "ceiling": redis_c50, "ratio": batch_jobs / redis_c50, "latency": lat.summary(), "errors": errors, "cost": probe.cost(&before, n * 1000)}));
    }

    // 3/4. Ordered push processing, 1 lane and 64 lanes.
    for (scenario, queue, lanes, total, target) in [
        ("push1", "bench-push-1", 1u64, 20_000u64, 5000.0),
        ("push64", "bench-push-64", 64, 60_000, 25000.0),
    ] {
        if !a.runs(scenario) {
            continue;
        }
        ctx.http
            .put(format!("{}/v1/queues/{queue}", a.url))
            .bearer_auth(&ctx.token)
            .json(&json!({"delivery": {"mode": "push", "url": hook, "timeout_ms": 10000}}))
            .send()
            .await
            .unwrap();
        ctx.post(&format!("/v1/queues/{queue}/pause"), &json!({}))
            .await;
        for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
            let jobs: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"payload": {"i": i}, "key": format!("k{}", i % lanes)}))
                .collect();
            ctx.post(
                &format!("/v1/queues/{queue}/jobs/batch"),
                &json!({"jobs": jobs}),
            )
            .await;
        }
        let before = probe.sample();
        let started = Instant::now();
        ctx.post(&format!("/v1/queues/{queue}/resume"), &json!({}))
            .await;
        let done = ctx
            .wait_completed(queue, total, Duration::from_secs(300))
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        if !done {
            failures.push(format!("{queue}: not all {total} jobs completed"));
        }
        if let Err(e) = check_order(&receiver, queue, total) {
            failures.push(e);
        }
        let rate = total as f64 / elapsed;
        rows.push(json!({"what": format!("ordered push, {lanes} lane(s)"), "value": rate, "unit": "jobs/s", "target": target, "ceiling": redis_c1, "ratio": rate / redis_c1, "errors": 0, "cost": probe.cost(&before, total)}));
        // One lane is a chain of round trips: per job one push to the
        // receiver, then one Redis call that acks it and leases the next.
        // Both measured alone, back to back, as the worker makes them.
        if lanes == 1 && a.redis_ports.len() == 1 {
            let (receiver_us, redis_us) = one_lane_round_trips_us(port, a.redis_port);
            let limit = 1e6 / (receiver_us + redis_us);
            println!(
                "push 1 lane physical limit: receiver round trip {receiver_us:.1} µs + Redis ack-and-lease round trip {redis_us:.1} µs = {limit:.0} jobs/s; the row is {:.2} of it",
                rate / limit
            );
            rows.push(json!({"what": "push 1 lane: ratio to its physical limit", "value": rate / limit, "unit": "x", "target": 0.8, "ceiling": limit, "ratio": rate / limit, "errors": 0, "limit": {"receiver_round_trip_us": receiver_us, "redis_round_trip_us": redis_us, "jobs_per_s": limit}}));
        }
    }

    // 5. Pull consumers over HTTP, 64 lanes.
    if a.runs("pull") {
        let total = 30_000u64;
        for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
            let jobs: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"payload": {"i": i}, "key": format!("k{}", i % 64)}))
                .collect();
            ctx.post("/v1/queues/bench-pull/jobs/batch", &json!({"jobs": jobs}))
                .await;
        }
        let acked = Arc::new(AtomicU64::new(0));
        // When the last job was acked (consumers still waiting in a claim
        // then do not count).
        let done_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let order: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let disorder = Arc::new(AtomicBool::new(false));
        let before = probe.sample();
        let started = Instant::now();
        let mut consumers = Vec::new();
        // A consumer pool sized to the queue: 8 consumers of 8 lanes each
        // can hold all 64 lanes, none of them idle for long (16 of 16 made
        // 256 slots compete for 64 lanes: 14.6–19.5k jobs/s, more spread).
        let consumers_n: usize = std::env::var("PULL_CONSUMERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        let max_jobs: usize = std::env::var("PULL_MAX_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        // Claims made, µs they took in all, jobs they returned.
        let claim_stats: Arc<(AtomicU64, AtomicU64, AtomicU64)> = Arc::default();
        for _ in 0..consumers_n {
            let (c, acked, order, disorder, done_at, claim_stats) = (
                ctx.clone(),
                acked.clone(),
                order.clone(),
                disorder.clone(),
                done_at.clone(),
                claim_stats.clone(),
            );
            consumers.push(tokio::spawn(async move {
                let completed = |r: &Value| {
                    r["results"].as_array().map_or(0, |rs| {
                        rs.iter().filter(|x| x["status"] == "completed").count() as u64
                    })
                };
                let count = |n: u64| {
                    if n > 0 && acked.fetch_add(n, Ordering::Relaxed) + n >= total {
                        done_at.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                };
                // Batch outcomes (§7.3): each claim carries the acks of the
                // jobs the previous one returned — one request per batch.
                let mut pending: Vec<Value> = Vec::new();
                while acked.load(Ordering::Relaxed) < total {
                    let body = json!({"wait_ms": 1000, "max_jobs": max_jobs, "acks": pending});
                    let sent = Instant::now();
                    let r: Value = c
                        .post("/v1/queues/bench-pull/claim", &body)
                        .await
                        .json()
                        .await
                        .unwrap();
                    let took = sent.elapsed().as_micros() as u64;
                    let got = r["jobs"].as_array().map_or(0, |j| j.len() as u64);
                    claim_stats.0.fetch_add(1, Ordering::Relaxed);
                    claim_stats.1.fetch_add(took, Ordering::Relaxed);
                    claim_stats.2.fetch_add(got, Ordering::Relaxed);
                    count(completed(&r));
                    pending = Vec::new();
                    for job in r["jobs"].as_array().cloned().unwrap_or_default() {
                        let (key, seq) = (
                            job["key"].as_str().unwrap().to_owned(),
                            job["seq"].as_u64().unwrap(),
                        );
                        {
                            let mut o = order.lock().unwrap();
                            let last = o.entry(key).or_insert(0);
                            if seq <= *last {
                                disorder.store(true, Ordering::Relaxed);
                            }
                            *last = seq;
                        }
                        pending.push(json!({"id": job["id"], "lease": job["lease"]}));
                    }
                    if !pending.is_empty()
                        && acked.load(Ordering::Relaxed) + pending.len() as u64 >= total
                    {
                        // The last jobs: nothing is left to claim.
                        let acks = json!({"acks": std::mem::take(&mut pending)});
                        let r: Value = c
                            .post("/v1/queues/bench-pull/ack", &acks)
                            .await
                            .json()
                            .await
                            .unwrap();
                        count(completed(&r));
                    }
                }
                if !pending.is_empty() {
                    c.post("/v1/queues/bench-pull/ack", &json!({"acks": pending}))
                        .await;
                }
            }));
        }
        // The clock stops when Orderly counts the last completion (polled
        // like the push rows): a consumer learns of its last acks only when
        // its claim returns, and that claim may wait for jobs that no longer
        // come, up to its `wait_ms`.
        let all_completed = ctx
            .wait_completed("bench-pull", total, Duration::from_secs(300))
            .await;
        let completed_at = Instant::now();
        if !all_completed {
            failures.push("bench-pull: not all jobs completed".into());
        }
        for cns in consumers {
            cns.await.unwrap();
        }
        let finished = done_at
            .lock()
            .unwrap()
            .map_or(completed_at, |at| at.min(completed_at));
        let rate = total as f64 / (finished - started).as_secs_f64();
        if disorder.load(Ordering::Relaxed) {
            failures.push("bench-pull: a lane was consumed out of seq order".into());
        }
        let claims = claim_stats.0.load(Ordering::Relaxed).max(1);
        let claim_mean_us = claim_stats.1.load(Ordering::Relaxed) as f64 / claims as f64;
        let jobs_per_claim = claim_stats.2.load(Ordering::Relaxed) as f64 / claims as f64;
        // As Orderly saw them: the claim route's request durations.
        let metrics = match ctx.http.get(format!("{}/metrics", ctx.url)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let claim_metric = |suffix: &str| -> f64 {
            metrics
                .lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        "orderly_http_requests_duration_seconds_{suffix}{{"
                    )) && l.contains(r#"endpoint="/v1/queues/{queue}/claim""#)
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let server_claim_us = claim_metric("sum") * 1e6 / claim_metric("count").max(1.0);
        println!(
            "pull: {consumers_n} consumers, max_jobs {max_jobs}: {claims} claims, {jobs_per_claim:.1} jobs per claim, a claim (with its acks) took {claim_mean_us:.0} µs on average at the consumer, {server_claim_us:.0} µs inside Orderly (both including the last claims, which wait up to wait_ms for jobs that no longer come)"
        );
        rows.push(json!({"what": "pull consumers over HTTP, 64 lanes (batch ack)", "consumers": consumers_n, "max_jobs": max_jobs, "claims": claims, "jobs_per_claim": jobs_per_claim, "claim_mean_us": claim_mean_us, "value": rate, "unit": "jobs/s", "target": 15000, "ceiling": trivial_rps, "ratio": rate / trivial_rps, "errors": 0, "cost": probe.cost(&before, total)}));
    }

    // 6. Publish latency at a fixed 5,000 req/s (open loop).
    if a.runs("latency") {
        // The earlier rows grow the AOF past Redis's auto-rewrite threshold;
        // a rewrite forking mid-row stalls Redis (one run: a 12 ms fork, p99
        // 8.4 ms). Compact it first, so the row measures publishing; the row
        // records whether a rewrite still overlapped it.
        let settled_in = aof_rewrite_settled(a.redis_port).await;
        let rewrites_before = aof_rewrites(a.redis_port);
        // Redis's own record of its stalls (AOF writes, fsync, slow commands)
        // of 1 ms or more during this row, to tell them from Orderly's.
        redis_cli(
            a.redis_port,
            &["CONFIG", "SET", "latency-monitor-threshold", "1"],
        );
        redis_cli(a.redis_port, &["LATENCY", "RESET"]);
        let server_before = publish_buckets(&ctx).await;
        let before = probe.sample();
        let mut lat = Latencies::default();
        let mut handles = Vec::new();
        let rate = 5000u64;
        let start = Instant::now();
        for i in 0..rate * secs {
            let due = start + Duration::from_micros(i * 1_000_000 / rate);
            tokio::time::sleep_until(due.into()).await;
            let c = ctx.clone();
            handles.push(tokio::spawn(async move {
                let t = Instant::now();
                let ok = c
                    .post("/v1/queues/bench-latency/jobs", &json!({"payload": i}))
                    .await
                    .status()
                    .as_u16()
                    == 202;
                (ok, t.elapsed().as_micros() as u32)
            }));
        }
        let mut errors = 0;
        // Requests sent after the first second: the row without the queue's
        // implicit creation (its first publishes) at the start.
        let mut settled = Latencies::default();
        let mut slowest: Vec<(u32, usize)> = Vec::new();
        for (i, h) in handles.into_iter().enumerate() {
            let (ok, us) = h.await.unwrap();
            if ok {
                lat.0.push(us);
                slowest.push((us, i));
                if i as u64 >= rate {
                    settled.0.push(us);
                }
            } else {
                errors += 1
            }
        }
        slowest.sort_unstable_by(|a, b| b.cmp(a));
        let slowest_sent_at_ms: Vec<u64> = slowest
            .iter()
            .take(20)
            .map(|(_, i)| *i as u64 * 1000 / rate)
            .collect();
        rows.push(json!({"what": "publish latency p99 at 5,000 req/s", "value": lat.pct(0.99), "unit": "ms", "target": 5, "ceiling": null, "ratio": null, "latency": lat.summary(), "errors": errors, "after_first_second": settled.summary(), "slowest_20_sent_at_ms": slowest_sent_at_ms, "cost": probe.cost(&before, rate * secs), "server_side": server_side(&server_before, &publish_buckets(&ctx).await), "redis_latency_latest": redis_cli(a.redis_port, &["LATENCY", "LATEST"]).split_whitespace().collect::<Vec<_>>().join(" "), "aof_rewrite_before_row_s": settled_in, "aof_rewrites_during_row": aof_rewrites(a.redis_port) - rewrites_before}));
    }

    // 7. Publish → delivery start, idle system.
    if a.runs("idle") {
        let before = probe.sample();
        ctx.http
            .put(format!("{}/v1/queues/bench-idle", a.url))
            .bearer_auth(&ctx.token)
            .json(&json!({"delivery": {"mode": "push", "url": hook}}))
            .send()
            .await
            .unwrap();
        let mut lat = Latencies::default();
        for i in 0..200u64 {
            let before = receiver.seen.lock().unwrap().len();
            let t = Instant::now();
            ctx.post("/v1/queues/bench-idle/jobs", &json!({"payload": i}))
                .await;
            loop {
                if let Some((.., at)) = receiver.seen.lock().unwrap().get(before) {
                    lat.0.push(at.duration_since(t).as_micros() as u32);
                    break;
                }
                let _ =
                    tokio::time::timeout(Duration::from_millis(50), receiver.arrived.notified())
                        .await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rows.push(json!({"what": "publish → delivery start, idle, p50", "value": lat.pct(0.5), "unit": "ms", "target": 2, "ceiling": null, "ratio": null, "latency": lat.summary(), "errors": 0, "cost": probe.cost(&before, 200)}));
    }

    // Soak (optional): mixed load, RSS sampled.
    let mut soak = Value::Null;
    if a.soak_seconds > 0 {
        let mut samples = Vec::new();
        let c = ctx.clone();
        let load = tokio::spawn(closed_loop(16, a.soak_seconds, move |i| {
            let c = c.clone();
            async move {
                let q = if i % 2 == 0 {
                    "bench-idle"
                } else {
                    "bench-soak-pull"
                };
                c.post(
                    &format!("/v1/queues/{q}/jobs"),
                    &json!({"payload": i, "key": format!("k{}", i % 32)}),
                )
                .await
                .status()
                .as_u16()
                    == 202
            }
        }));
        // Pull consumers drain the pull half of the soak load.
        let stop_pull = Arc::new(AtomicBool::new(false));
        let pulled = Arc::new(AtomicU64::new(0));
        let mut pullers = Vec::new();
        for _ in 0..4 {
            let (c, stop, pulled) = (ctx.clone(), stop_pull.clone(), pulled.clone());
            pullers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r: Value = c
                        .post(
                            "/v1/queues/bench-soak-pull/claim",
                            &json!({"wait_ms": 500, "max_jobs": 16}),
                        )
                        .await
                        .json()
                        .await
                        .unwrap_or(Value::Null);
                    for job in r["jobs"].as_array().cloned().unwrap_or_default() {
                        let id = job["id"].as_str().unwrap_or_default();
                        if c.post(
                            &format!("/v1/jobs/{id}/ack"),
                            &json!({"lease": job["lease"]}),
                        )
                        .await
                        .status()
                        .is_success()
                        {
                            pulled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let t0 = Instant::now();
        while t0.elapsed().as_secs() < a.soak_seconds {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let rss = std::fs::read_to_string(format!("/proc/{}/status", a.pid))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                });
            samples.push(rss.unwrap_or(0.0) / 1024.0);
        }
        let (n, _, errors) = load.await.unwrap();
        // Let the consumers drain what is left, then stop them.
        let drain_until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < drain_until {
            let q = ctx.get("/v1/queues/bench-soak-pull").await;
            let p = ctx.get("/v1/queues/bench-idle").await;
            let idle = |v: &Value| v["stats"]["waiting"] == 0 && v["stats"]["active"] == 0;
            if idle(&q) && idle(&p) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop_pull.store(true, Ordering::Relaxed);
        for p in pullers {
            let _ = p.await;
        }
        let pull_stats = ctx.get("/v1/queues/bench-soak-pull").await["stats"].clone();
        let push_stats = ctx.get("/v1/queues/bench-idle").await["stats"].clone();
        // Every accepted publish must be accounted for: completed, or still
        // in its queue (a backlog the consumers had not drained yet).
        let count = |v: &Value, f: &str| v[f].as_u64().unwrap_or(0);
        let accounted = ["completed", "waiting", "active", "delayed", "dead"]
            .iter()
            .map(|f| count(&pull_stats, f) + count(&push_stats, f))
            .sum::<u64>();
        if accounted != n + 200 {
            failures.push(format!(
                "soak: {n} publishes accepted (+200 earlier), {accounted} accounted for"
            ));
        }
        let warm = samples.get(2).copied().unwrap_or(0.0);
        let last = samples.last().copied().unwrap_or(0.0);
        let growth = if warm > 0.0 {
            (last - warm) / warm * 100.0
        } else {
            0.0
        };
        if growth >= 10.0 {
            failures.push(format!("soak: RSS grew {growth:.1} % after warm-up"));
        }
        soak = json!({"seconds": a.soak_seconds, "publishes": n, "errors": errors,
                      "pulled": pulled.load(Ordering::Relaxed), "pull_stats": pull_stats,
                      "push_stats": push_stats, "rss_mb": samples,
                      "rss_growth_after_warmup_pct": growth});
    }

    // Last: its 500,000-job backlog and the AOF it writes would weigh on the
    // rows after it.
    if a.runs("memory") {
        match memory_rows(&ctx, &a, &probe).await {
            Ok(r) => rows.extend(r),
            Err(e) => failures.push(format!("memory: {e}")),
        }
    }

    let rss = probe.run_peak_rss_mb();
    rows.push(json!({"what": "peak resident memory (VmHWM)", "value": rss, "unit": "MB", "target": 100, "ceiling": null, "ratio": null, "errors": 0}));
    println!(
        "\nceilings: redis-benchmark LPUSH -c 50: {redis_c50:.0} req/s, -c 1: {redis_c1:.0} req/s; trivial HTTP endpoint ({} connections): {trivial_rps:.0} req/s\n",
        a.connections
    );
    println!(
        "{:<40} {:>12} {:>8} {:>10} {:>12} {:>8}",
        "figure", "value", "unit", "target", "ceiling", "ratio"
    );
    for r in &rows {
        let num = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "{:<40} {:>12} {:>8} {:>10} {:>12} {:>8}",
            r["what"].as_str().unwrap(),
            num(&r["value"]),
            r["unit"].as_str().unwrap(),
            num(&r["target"]),
            num(&r["ceiling"]),
            num(&r["ratio"])
        );
        if !r["latency"].is_null() {
            println!("{:<40} {}", "", r["latency"]);
        }
        if !r["cost"].is_null() {
            println!("{:<40} {}", "", r["cost"]);
        }
        if let Some(m) = r.get("memory") {
            println!(
                "{:<40} {} B/job = payload {} + overhead {}; used_memory {} → {}; {} s to publish, {} s for the whole scenario",
                "",
                m["bytes_per_job"],
                m["payload_bytes_per_job"],
                m["overhead_per_job"],
                m["used_memory_before"],
                m["used_memory_after"],
                m["publish_s"],
                m["scenario_s"]
            );
            println!(
                "{:<40} MEMORY USAGE per job, {} B/job over all keys:",
                "", m["keys_bytes_per_job"]
            );
            for k in m["keys"].as_array().into_iter().flatten() {
                println!(
                    "{:<40}   {:<5} {:>10} B/job  {} ({}), {} entries",
                    "",
                    k["key"].as_str().unwrap_or("?"),
                    k["bytes_per_job"],
                    k["type"].as_str().unwrap_or("?"),
                    k["encoding"].as_str().unwrap_or("?"),
                    k["entries"]
                );
            }
        }
        if !r["latency_1k"].is_null() {
            println!(
                "{:<40} at 1k backlog (the line above: 500k): {}",
                "", r["latency_1k"]
            );
        }
        if !r["after_first_second"].is_null() {
            println!(
                "{:<40} sent after the first second: {}; the 20 slowest were sent at ms {}",
                "", r["after_first_second"], r["slowest_20_sent_at_ms"]
            );
        }
        if !r["server_side"].is_null() {
            println!(
                "{:<40} Orderly's own duration histogram (share of requests at or under le seconds): {}",
                "", r["server_side"]
            );
        }
        if let Some(stalls) = r["redis_latency_latest"].as_str() {
            println!(
                "{:<40} redis LATENCY LATEST (event, at, last ms, max ms): {stalls}",
                ""
            );
        }
    }
    if !soak.is_null() {
        println!("\nsoak: {soak}");
    }
    let results = json!({"ceilings": {"redis_lpush_c50": redis_c50, "redis_lpush_c1": redis_c1, "trivial_http_rps": trivial_rps}, "rows": rows, "soak": soak, "failures": failures});
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write(
        "target/bench/results.json",
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    if !failures.is_empty() {
        eprintln!("\nCORRECTNESS FAILURES:\n  {}", failures.join("\n  "));
        std::process::exit(1);
    }
    println!("\ncorrectness: every published job accounted for, every lane in seq order");
}
