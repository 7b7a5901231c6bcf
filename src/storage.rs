//! Connections to Redis and MongoDB, and the readiness probes on them.
//!
//! Connections are lazy: the process starts (and answers `/healthz`) while a
//! dependency is down, and reconnects by itself when it returns. Nothing here
//! reads or writes application data.

use std::sync::Arc;
use std::time::Duration;

use mongodb::Database;
use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::io::tcp::TcpSettings;

use crate::configuration::{MongoSettings, RedisSettings};
use crate::queue::engine::{Connect, Lazy, RedisConn};
use redis::cluster_async::ClusterConnection;

/// A Redis client (for connections of their own, like a subscription).
pub fn redis_client(settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    let info = settings
        .url
        .as_str()
        .into_connection_info()?
        .set_tcp_settings(tcp_settings());
    redis::Client::open(info)
}

/// `TCP_NODELAY` on every Redis connection (the client's default is off).
/// Requests are pipelined on one shared connection: with Nagle's algorithm a
/// request written while an earlier one is still unacknowledged waits for
/// Redis' ACK — the reply to the earlier request, when Redis delays its ACK —
/// so runs meant to queue at Redis went one round trip apart.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

/// The shared, self-reconnecting Redis connection (requests are pipelined
/// on it): one server, or a Redis Cluster when `redis.cluster_nodes` is set.
pub fn redis_connection(settings: &RedisSettings) -> redis::RedisResult<RedisConn> {
    if !settings.cluster_nodes.is_empty() {
        let client = cluster_client(settings, None)?;
        let connect: Connect<ClusterConnection> = Box::new(move || {
            let client = client.clone();
            Box::pin(async move { client.get_async_connection().await })
        });
        return Ok(RedisConn::Cluster(Arc::new(Lazy::new(connect))));
    }
    let client = redis_client(settings)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout()))
        .set_response_timeout(Some(settings.response_timeout()))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    // Lazy: made on first use (the process starts while Redis is down) and
    // made again if it keeps failing.
    let connect: Connect<ConnectionManager> = Box::new(move || {
        let (client, config) = (client.clone(), config.clone());
        Box::pin(async move { ConnectionManager::new_lazy_with_config(client, config) })
    });
    Ok(RedisConn::Single(Arc::new(Lazy::new(connect))))
}

/// A cluster client for `redis.cluster_nodes`; with `push`, a RESP3 one that
/// delivers (sharded) pub/sub messages there.
pub fn cluster_client(
    settings: &RedisSettings,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> redis::RedisResult<ClusterClient> {
    let mut builder = ClusterClientBuilder::new(settings.cluster_nodes.clone())
        .connection_timeout(settings.connect_timeout())
        .response_timeout(settings.response_timeout())
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(1000)
        .tcp_settings(tcp_settings());
    if let Some(push) = push {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push);
    }
    builder.build()
}

/// Redis' `maxmemory-policy`, best effort: `None` if Redis did not answer
/// within `timeout` or answered in another shape. On a cluster every master
/// is asked; the first policy that is not `noeviction` is reported.
pub async fn redis_maxmemory_policy(redis: RedisConn, timeout: Duration) -> Option<String> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("maxmemory-policy");
    let get = redis.on_every_master(cmd);
    let reply = tokio::time::timeout(timeout, get).await.ok()?.ok()?;
    let mut policies = Vec::new();
    collect_policies(reply, &mut policies);
    let policy = policies
        .iter()
        .find(|p| *p != "noeviction")
        .or(policies.first());
    policy.cloned()
}

/// The values after each `maxmemory-policy` in a (possibly per-node) reply.
fn collect_policies(value: redis::Value, out: &mut Vec<String>) {
    use redis::Value;
    let items = match value {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return,
    };
    let mut after_name = false;
    for item in items {
        match item {
            Value::BulkString(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let is_name = !after_name && text == "maxmemory-policy";
                if after_name {
                    out.push(text);
                }
                after_name = is_name;
            }
            nested @ (Value::Array(_) | Value::Map(_)) => collect_policies(nested, out),
            _ => after_name = false,
        }
    }
}

/// Why a Redis `maxmemory-policy` is a danger to jobs, if it is one.
pub fn eviction_warning(policy: &str) -> Option<String> {
    (policy != "noeviction").then(|| {
        format!("redis maxmemory-policy is {policy}: under memory pressure Redis evicts keys, which can drop jobs; use noeviction")
    })
}

/// The application database; the driver connects on first use.
pub async fn mongo_database(settings: &MongoSettings) -> mongodb::error::Result<Database> {
    let mut options = ClientOptions::parse(&settings.uri).await?;
    options.server_selection_timeout = Some(settings.server_selection_timeout());
    options.connect_timeout = Some(settings.server_selection_timeout());
    options.app_name = Some("orderly".into());
    let client = mongodb::Client::with_options(options)?;
    Ok(client.database(&settings.database))
}

/// `true` if Redis answers `PING` within `timeout`.
pub async fn redis_answers(mut redis: RedisConn, timeout: Duration) -> bool {
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<redis::Value>(&mut redis);
    matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
}

/// `true` if MongoDB answers `ping` within `timeout`.
pub async fn mongo_answers(db: &Database, timeout: Duration) -> bool {
    let ping = db.run_command(doc! { "ping": 1 });
    matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
}
