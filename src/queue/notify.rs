//! One subscription per process to the slot groups' wake channels, fanned
//! out in-process: the worker and every long-polling consumer listen to
//! [`WakeHub`] instead of holding Redis connections of their own.
//!
//! A wake message is `p<qid>` (a push queue has a lane startable now: the
//! worker claims it), `u<qid>` (a pull queue has: the consumers waiting on
//! that queue look), `d<qid>` (a job of a watched queue finished: the job
//! reads waiting on that queue look again) or `s<version> <qid>` (the
//! queue's settings changed to that version: an older cached definition is
//! read anew). On one Redis the engine publishes with `PUBLISH` and the
//! hub `SUBSCRIBE`s to every group channel; on a cluster with `SPUBLISH`, and
//! the hub `SSUBSCRIBE`s through a RESP3 cluster connection that resubscribes
//! by itself after a reconnect or failover, so a message stays on its shard.
//!
//! It never holds work: a lost notification only delays work until the next
//! poll of the groups' due indexes. It never sends anything to Redis but its
//! subscriptions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Message, Recipient};
use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast};

use super::model::QueueRef;
use crate::configuration::RedisSettings;

/// A push queue has a lane startable now (`None`: look at every group).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Wake(pub Option<QueueRef>);

/// Fan-out of queues whose lanes became startable.
#[derive(Clone)]
pub struct WakeHub {
    /// Push-queue wakes (for the worker).
    tx: broadcast::Sender<Arc<str>>,
    waiters: Arc<Mutex<HashMap<Arc<str>, Waiters>>>,
    /// Called with a queue's tag and new settings version when its settings
    /// changed (`s<version> <qid>`).
    settings_changed: Arc<std::sync::OnceLock<SettingsChanged>>,
}

type SettingsChanged = Box<dyn Fn(&str, u64) + Send + Sync>;

/// The consumers of one queue waiting for work.
struct Waiters {
    notify: Arc<Notify>,
    count: usize,
}

/// A consumer's registration for one queue's wakes; unregisters on drop.
pub struct Waiter {
    tag: Arc<str>,
    notify: Arc<Notify>,
    waiters: Arc<Mutex<HashMap<Arc<str>, Waiters>>>,
}

impl Waiter {
    /// Resolves at the next wake of this queue after the future is enabled
    /// (see [`tokio::sync::futures::Notified::enable`]).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = waiters.get_mut(&self.tag) {
            entry.count -= 1;
            if entry.count == 0 {
                waiters.remove(&self.tag);
            }
        }
    }
}

impl WakeHub {
    /// Subscribes to `channels` (every slot group's wake channel) and
    /// republishes every message. Must be called inside a running actix
    /// `System`.
    pub fn start(settings: &RedisSettings, channels: Vec<String>) -> redis::RedisResult<Self> {
        let (tx, _) = broadcast::channel(1024);
        let hub = Self {
            tx,
            waiters: Arc::new(Mutex::new(HashMap::new())),
            settings_changed: Arc::default(),
        };
        let listener = hub.clone();
        if settings.cluster_nodes.is_empty() {
            let client = crate::storage::redis_client(settings)?;
            actix::spawn(async move {
                loop {
                    if let Err(err) = listen(&client, &channels, &listener).await {
                        log::warn!("wake subscription lost: {err}");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        } else {
            let (push_tx, push_rx) = tokio::sync::mpsc::unbounded_channel();
            let client = crate::storage::cluster_client(settings, Some(push_tx))?;
            actix::spawn(listen_cluster(client, channels, push_rx, listener));
        }
        Ok(hub)
    }

    /// Calls `f` with a queue's tag and settings version whenever any
    /// process changed the queue's settings (set once, at start).
    pub fn on_settings_changed(&self, f: impl Fn(&str, u64) + Send + Sync + 'static) {
        let _ = self.settings_changed.set(Box::new(f));
    }

    /// Tags of push queues with newly startable lanes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }

    /// Registers interest in wakes of the pull queue tagged `tag` (a lane
    /// became startable).
    pub fn waiter(&self, tag: &str) -> Waiter {
        self.register(Arc::from(tag))
    }

    /// Registers interest in jobs of the queue tagged `tag` finishing (the
    /// queue must be watched: `Engine::watch`).
    pub fn finish_waiter(&self, tag: &str) -> Waiter {
        self.register(Arc::from(finish_key(tag)))
    }

    fn register(&self, tag: Arc<str>) -> Waiter {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let entry = waiters.entry(tag.clone()).or_insert_with(|| Waiters {
            notify: Arc::new(Notify::new()),
            count: 0,
        });
        entry.count += 1;
        Waiter {
            tag,
            notify: entry.notify.clone(),
            waiters: self.waiters.clone(),
        }
    }

    fn dispatch(&self, message: &str) {
        match message.split_at_checked(1) {
            Some(("p", tag)) => {
                let _ = self.tx.send(Arc::from(tag));
            }
            Some(("u", tag)) => self.notify(tag),
            Some(("d", tag)) => self.notify(&finish_key(tag)),
            Some(("s", change)) => {
                let parsed = change
                    .split_once(' ')
                    .and_then(|(version, tag)| Some((tag, version.parse().ok()?)));
                if let (Some(changed), Some((tag, version))) = (self.settings_changed.get(), parsed)
                {
                    changed(tag, version);
                }
            }
            _ => log::debug!("ignoring wake message {message:?}"),
        }
    }

    fn notify(&self, key: &str) {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = waiters.get(key) {
            entry.notify.notify_waiters();
        }
    }

    /// Sends `recipient` a [`Wake`] for every push-queue notification (and
    /// `Wake(None)` when some were missed).
    pub fn forward_to(&self, recipient: Recipient<Wake>) {
        let mut rx = self.subscribe();
        actix::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(tag) => recipient.do_send(Wake(QueueRef::from_tag(&tag))),
                    Err(broadcast::error::RecvError::Lagged(_)) => recipient.do_send(Wake(None)),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// The waiters-map key of a queue's finished-job waiters (queue tags never
/// contain `/`, so it cannot collide with a pull queue's tag).
fn finish_key(tag: &str) -> String {
    format!("finished/{tag}")
}

async fn listen(
    client: &redis::Client,
    channels: &[String],
    hub: &WakeHub,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channels).await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = message.get_payload().unwrap_or_default();
        hub.dispatch(&payload);
    }
    Ok(())
}

/// Subscribes to every group channel on the shard that owns it, retrying
/// until the cluster answers. The connection resubscribes by itself after a
/// reconnect, but not when a server drops a subscription: a master that
/// loses a slot (a failover: it stays up as a replica) unsubscribes that
/// slot's channels (`sunsubscribe`), and wakes of those queues would go
/// unheard until a restart (found by a black-box test: the claim and push
/// wake-ups of a failed-over shard fell back to the 1 s poll for good). So
/// a dropped channel is subscribed again at once (the command finds the new
/// owner), and every channel again every `RESUBSCRIBE` (one command per slot
/// group; a channel already subscribed stays so) for any drop not announced.
async fn listen_cluster(
    client: redis::cluster::ClusterClient,
    channels: Vec<String>,
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    hub: WakeHub,
) {
    let subscribe = async {
        loop {
            match subscribe_all(&client, &channels).await {
                Ok(conn) => return conn,
                Err(err) => log::warn!("wake subscription failed, retrying: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let conn = subscribe.await;
    let resubscribing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut resubscribe = tokio::time::interval(RESUBSCRIBE);
    resubscribe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resubscribe.tick().await;
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else {
                    return;
                };
                match (push.kind, push.data.first()) {
                    (redis::PushKind::SMessage, _) => {
                        if let Some(redis::Value::BulkString(payload)) = push.data.get(1) {
                            hub.dispatch(&String::from_utf8_lossy(payload));
                        }
                    }
                    (redis::PushKind::SUnsubscribe, Some(redis::Value::BulkString(channel))) => {
                        let channel = String::from_utf8_lossy(channel);
                        if let Some(channel) = channels.iter().find(|c| **c == channel) {
                            log::info!("wake channel {channel} dropped by its server, subscribing again");
                            actix::spawn(resubscribe_all(conn.clone(), vec![channel.clone()]));
                        }
                    }
                    _ => {}
                }
            }
            // (Off this loop, so messages are dispatched meanwhile; one at a
            // time, so they do not pile up while a shard does not answer.)
            _ = resubscribe.tick() => {
                if !resubscribing.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    let (conn, channels, done) = (conn.clone(), channels.clone(), resubscribing.clone());
                    actix::spawn(async move {
                        resubscribe_all(conn, channels).await;
                        done.store(false, std::sync::atomic::Ordering::Release);
                    });
                }
            }
        }
    }
}

/// `SSUBSCRIBE`s `channels` again, one command each (their slots differ).
async fn resubscribe_all(mut conn: redis::cluster_async::ClusterConnection, channels: Vec<String>) {
    for channel in &channels {
        if let Err(err) = conn.ssubscribe(channel).await {
            log::warn!("wake channel {channel} not subscribed again: {err}");
        }
    }
}

/// How often every wake channel is subscribed again on a cluster.
const RESUBSCRIBE: Duration = Duration::from_secs(5);

async fn subscribe_all(
    client: &redis::cluster::ClusterClient,
    channels: &[String],
) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
    let mut conn = client.get_async_connection().await?;
    for channel in channels {
        conn.ssubscribe(channel).await?;
    }
    Ok(conn)
}
