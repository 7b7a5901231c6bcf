//! Orderly on a real local Redis Cluster (issue "Engine v2", PRODUCT.md §7.1).
//!
//! scripts/test.sh runs the push, pull, job and crash modules a second time
//! with every app on a shared 3-master cluster (`ORDERLY_TEST_CLUSTER_NODES`),
//! plus this module: queues really spread over every master, and a master
//! failover on a cluster of its own (3 masters, 3 replicas) that Orderly
//! survives. The failover test measures what asynchronous replication lost
//! or repeated and prints it; `docs/architecture.md` records the figures.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orderly::queue::engine::Engine;
use orderly::queue::model::{QueueName, QueueRef};
use serde_json::json;

use crate::helpers::{
    TempDir, TestApp, cluster_nodes, eventually, spawn_app_with, wait_until_redis_answers,
};
use crate::receiver::{Receiver, assert_lanes_in_order};

/// The shared cluster of the cluster run; fails loudly outside it.
fn shared_cluster() -> Vec<String> {
    let nodes = cluster_nodes();
    assert!(
        !nodes.is_empty(),
        "ORDERLY_TEST_CLUSTER_NODES is not set: run the cluster tests through scripts/test.sh"
    );
    nodes
}

/// `host:port` of every master, from `CLUSTER NODES` of a seed node.
async fn masters(seed: &str) -> Vec<String> {
    let client = redis::Client::open(seed).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .unwrap();
    nodes
        .lines()
        .filter(|line| line.contains("master") && !line.contains("fail"))
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|addr| addr.split('@').next().map(str::to_owned))
        .collect()
}

/// Keys of `prefix` stored on one node.
async fn keys_on(node: &str, prefix: &str) -> usize {
    let client = redis::Client::open(format!("redis://{node}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.len()
}

async fn publish_lanes(app: &TestApp, token: &str, queue: &str, lanes: usize, per_lane: usize) {
    let jobs: Vec<_> = (0..lanes * per_lane)
        .map(|n| json!({"payload": n, "key": format!("k{}", n % lanes)}))
        .collect();
    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/queues/{queue}/jobs/batch"),
            token,
            Some(&json!({ "jobs": jobs })),
        )
        .await;
    assert_eq!(response.status(), 202);
}

#[actix_web::test]
async fn queues_spread_over_every_master_and_each_keeps_lane_order() {
    let nodes = shared_cluster();
    let app = spawn_app_with(|_| {}).await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::ok();
    let queues: Vec<String> = (0..12).map(|i| format!("spread-{i}")).collect();
    for queue in &queues {
        app.push_queue(&user.token, queue, &receiver.url, json!({}))
            .await;
        publish_lanes(&app, &user.token, queue, 3, 10).await;
    }
    for queue in &queues {
        app.wait_for_completed(&user.token, queue, 30, Duration::from_secs(60))
            .await;
    }
    let seen = receiver.seen();
    assert_eq!(seen.len(), 12 * 30, "every job delivered exactly once");
    assert_lanes_in_order(&seen);
    assert_eq!(receiver.max_open_per_lane(), 1);

    let masters = masters(&nodes[0]).await;
    assert_eq!(masters.len(), 3, "{masters:?}");
    for master in &masters {
        let keys = keys_on(master, &app.settings.redis.key_prefix).await;
        assert!(keys > 0, "no queue of the test lives on master {master}");
    }
}

/// A Redis Cluster of its own: 3 masters with one replica each.
struct TestCluster {
    nodes: Vec<(u16, Child)>,
    killed: Vec<u16>,
    _dir: TempDir,
}

impl TestCluster {
    async fn start() -> Self {
        let dir = TempDir::new();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = cluster_port();
            let node_dir = dir.0.join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-replica-validity-factor", "0"])
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test.sh installs it)");
            nodes.push((port, child));
        }
        for (port, _) in &nodes {
            wait_until_redis_answers(&format!("redis://127.0.0.1:{port}")).await;
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self {
            nodes,
            killed: Vec::new(),
            _dir: dir,
        };
        cluster.wait_ok().await;
        cluster.wait_replicas_synced().await;
        cluster
    }

    /// Waits until every replica has a live link to its master (a replica
    /// that never synced cannot be promoted).
    async fn wait_replicas_synced(&self) {
        for (port, _) in &self.nodes {
            let url = format!("redis://127.0.0.1:{port}");
            eventually(Duration::from_secs(30), "replica in sync", || async {
                let client = redis::Client::open(url.as_str()).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (info.contains("role:master") || info.contains("master_link_status:up"))
                    .then_some(())
            })
            .await;
        }
    }

    fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    fn live_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(port, _)| !self.killed.contains(port))
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// Waits until every live node reports `cluster_state:ok`.
    async fn wait_ok(&self) {
        for (port, _) in &self.nodes {
            if self.killed.contains(port) {
                continue;
            }
            let url = format!("redis://127.0.0.1:{port}");
            eventually(Duration::from_secs(30), "cluster_state:ok", || async {
                let client = redis::Client::open(url.as_str()).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                info.contains("cluster_state:ok").then_some(())
            })
            .await;
        }
    }

    /// `kill -9` of the node on `port`.
    fn kill(&mut self, port: u16) {
        let (_, child) = self.nodes.iter_mut().find(|(p, _)| *p == port).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        self.killed.push(port);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// The master serving the slot of `queue`'s keys.
async fn master_of(cluster: &TestCluster, engine: &Engine, queue: &QueueRef) -> u16 {
    master_of_key(cluster, &format!("{}m", engine.queue_base(queue))).await
}

/// The master serving the slot of `key` (a key or a shard channel).
async fn master_of_key(cluster: &TestCluster, key: &str) -> u16 {
    let client = redis::Client::open(cluster.live_urls()[0].as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .unwrap();
    for range in slots {
        let redis::Value::Array(items) = range else {
            continue;
        };
        let (Some(redis::Value::Int(from)), Some(redis::Value::Int(to))) =
            (items.first(), items.get(1))
        else {
            continue;
        };
        if (*from..=*to).contains(&i64::from(slot))
            && let Some(redis::Value::Array(master)) = items.get(2)
            && let Some(redis::Value::Int(port)) = master.get(1)
        {
            return *port as u16;
        }
    }
    panic!("no master serves slot {slot}");
}

/// Waits until the replica of the master on `port` has acknowledged every
/// write the master applied so far: a write to `key` (a key of the master's
/// slot), then `WAIT 1`, which answers once a replica has that write and so
/// everything before it (replication is one ordered stream).
async fn replica_caught_up(port: u16, key: &str) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let replicas: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        replicas, 1,
        "the replica of master {port} did not catch up in 10 s"
    );
}

#[actix_web::test]
async fn a_master_failover_is_survived_and_its_losses_are_measured() {
    let mut cluster = TestCluster::start().await;
    let nodes = cluster.urls();
    let app = spawn_app_with(|s| {
        s.redis.cluster_nodes = nodes.clone();
        s.redis.response_timeout_ms = 1_000;
        s.worker.lease_ms = 3_000;
    })
    .await;
    let user = app.signed_up_user().await;
    let receiver = Receiver::ok();
    app.push_queue(&user.token, "q", &receiver.url, json!({}))
        .await;
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let queue = QueueRef::new(&user.id, QueueName::parse("q").unwrap());
    let victim = master_of(&cluster, &engine, &queue).await;

    // Publish one job at a time (4 lanes) with idempotency keys, before,
    // during and after the failover; a 503 is retried with the same key.
    let mut accepted: HashMap<String, String> = HashMap::new();
    let mut killed_at = None;
    let mut unavailable = Duration::ZERO;
    for n in 0..120u32 {
        if n == 40 {
            // The kill must fall between two round trips with the replica
            // caught up, so what the test measures is the loss of in-flight
            // writes (none here), not a lagging replica's (which can lose
            // everything it had not received, seq counter included).
            replica_caught_up(
                victim,
                &format!("{}failover-probe", engine.queue_base(&queue)),
            )
            .await;
            cluster.kill(victim);
            killed_at = Some(Instant::now());
        }
        let job = json!({"payload": n, "key": format!("k{}", n % 4)});
        let idem = format!("job-{n}");
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        loop {
            let response = app
                .client
                .post(app.url("/v1/queues/q/jobs"))
                .bearer_auth(&user.token)
                .header("Idempotency-Key", &idem)
                .json(&job)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if status == 202 || status == 200 {
                let body: serde_json::Value = response.json().await.unwrap();
                accepted.insert(idem.clone(), body["id"].as_str().unwrap().to_owned());
                break;
            }
            assert_eq!(status, 503, "publish during failover");
            assert!(Instant::now() < deadline, "publish unavailable for 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unavailable = unavailable.max(started.elapsed());
    }
    let killed_at = killed_at.unwrap();
    cluster.wait_ok().await;
    let healed = killed_at.elapsed();

    // Everything accepted after the failover completes; measure the rest.
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    let completed_ids = loop {
        let delivered: HashSet<String> = receiver.seen().into_iter().map(|s| s.job_id).collect();
        let missing: Vec<&String> = (100..120)
            .map(|n| &accepted[&format!("job-{n}")])
            .filter(|id| !delivered.contains(*id))
            .collect();
        if missing.is_empty() {
            break delivered;
        }
        if Instant::now() > settle_deadline {
            // The engine's view of the queue's leases, raw, for the report.
            let keys = engine.queue_keys(&queue);
            let mut raw = String::new();
            let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
            if let Ok(mut conn) = client.get_async_connection().await {
                for (name, key) in [("leases", &keys[5]), ("group lease index", &keys[14])] {
                    let v: Result<Vec<String>, _> = redis::cmd("ZRANGE")
                        .arg(key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(&mut conn)
                        .await;
                    raw.push_str(&format!("{name}: {v:?}; "));
                }
            }
            let job = app.job(&user.token, missing[0]).await;
            let queue = app.queue(&user.token, "q").await;
            let active = app.all_jobs(&user.token, "q", Some("active")).await;
            panic!(
                "{} jobs accepted after the failover never delivered, e.g. {job}; queue {queue}; active {active:?}; {raw}now {}",
                missing.len(),
                chrono::Utc::now()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen = receiver.seen();
    let lost = accepted
        .values()
        .filter(|id| !completed_ids.contains(*id))
        .count();
    let mut per_job: HashMap<&str, usize> = HashMap::new();
    for s in &seen {
        *per_job.entry(s.job_id.as_str()).or_default() += 1;
    }
    let repeated = per_job.values().filter(|n| **n > 1).count();
    eprintln!(
        "failover: {} accepted, {} delivered, {lost} accepted but never delivered, \
         {repeated} delivered more than once, cluster ok again after {healed:?}, \
         longest publish wait {unavailable:?}",
        accepted.len(),
        per_job.len()
    );
    assert!(
        unavailable < Duration::from_secs(10),
        "publishing was unavailable for {unavailable:?}"
    );
    assert!(
        receiver.max_open_per_lane() <= 1,
        "two deliveries of one lane in flight"
    );
    assert_lanes_in_order(&seen);
}

/// A query on the node on `port`.
async fn on_node<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

/// Whether every channel has a subscriber on a node of the shard serving its
/// slot (its master or a replica: both get the shard's messages; a node of
/// another shard refuses the subscription).
async fn wake_channels_subscribed(cluster: &TestCluster, channels: &[String]) -> Option<()> {
    for channel in channels {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("SHARDNUMSUB").arg(channel);
        let mut count = 0;
        for (port, _) in &cluster.nodes {
            let (_, n): (String, u64) = on_node(*port, &cmd).await.ok()?;
            count += n;
        }
        if count == 0 {
            return None;
        }
    }
    Some(())
}

/// A master that loses its slots to its replica (a manual failover: it stays
/// up, as a replica) drops the subscriptions to their shard channels
/// (`sunsubscribe`); the wake subscription is made again, or the wakes of that
/// shard's queues would go unheard until a restart.
#[actix_web::test]
async fn wake_channels_are_subscribed_again_after_a_failover() {
    let cluster = TestCluster::start().await;
    let nodes = cluster.urls();
    let app = spawn_app_with(|s| s.redis.cluster_nodes = nodes.clone()).await;
    let engine = Engine::connect(&app.settings.redis).unwrap();
    let channels = engine.wake_channels();
    eventually(
        Duration::from_secs(10),
        "every wake channel subscribed",
        || wake_channels_subscribed(&cluster, &channels),
    )
    .await;

    let old = master_of_key(&cluster, &channels[0]).await;
    let info: String = on_node(old, redis::cmd("INFO").arg("replication"))
        .await
        .unwrap();
    let replica: u16 = info
        .lines()
        .find_map(|line| line.strip_prefix("slave0:"))
        .and_then(|fields| fields.split(',').find_map(|f| f.strip_prefix("port=")))
        .and_then(|port| port.parse().ok())
        .expect("the master has a replica");
    let failover: String = on_node(replica, redis::cmd("CLUSTER").arg("FAILOVER"))
        .await
        .unwrap();
    assert_eq!(failover, "OK");
    eventually(
        Duration::from_secs(30),
        "the replica serves the slot",
        || async { (master_of_key(&cluster, &channels[0]).await == replica).then_some(()) },
    )
    .await;
    cluster.wait_ok().await;
    eventually(
        Duration::from_secs(10),
        "every wake channel subscribed again after the failover",
        || wake_channels_subscribed(&cluster, &channels),
    )
    .await;
    drop(app);
}

/// An evicting `maxmemory-policy` on any one master of a cluster is in
/// every `/readyz` (the probe asks every master, not one node at random).
#[actix_web::test]
async fn readyz_warns_of_an_evicting_policy_on_any_master_of_a_cluster() {
    let cluster = TestCluster::start().await;
    let nodes = cluster.urls();
    let app = spawn_app_with(|s| s.redis.cluster_nodes = nodes.clone()).await;
    let ready = crate::helpers::body(app.get("/readyz").await).await;
    assert!(ready.get("warnings").is_none(), "{ready}");
    let mut master = None;
    for (port, _) in &cluster.nodes {
        let role: Vec<redis::Value> = on_node(*port, &redis::cmd("ROLE")).await.unwrap();
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            master = Some(*port);
        }
    }
    let master = master.expect("the cluster has masters");
    let mut set = redis::cmd("CONFIG");
    set.arg("SET").arg("maxmemory-policy").arg("volatile-lru");
    let _: () = on_node(master, &set).await.unwrap();
    for _ in 0..10 {
        let response = app.get("/readyz").await;
        assert_eq!(response.status(), 200);
        let ready = crate::helpers::body(response).await;
        let warning = ready["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("volatile-lru"), "{ready}");
    }
}
