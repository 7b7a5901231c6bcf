//! One Redis subscription per process to the engine's wake channels, fanned out
//! in-process: the worker and every long-polling consumer listen to
//! [`WakeHub`] instead of holding Redis connections of their own. Pull queues
//! are announced on the wake channel and push queues on `<channel>:push`, so
//! a pull wake never makes the worker run a claim, and a push wake never
//! touches consumers. Consumers wait on a per-queue [`Notify`], so a wake only
//! touches that queue's waiters.
//!
//! A lost notification only delays work until the next fallback poll; the
//! listener reconnects by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast};

use super::worker::{Wake, Worker};

/// Fan-out of queue tags whose lanes became startable.
#[derive(Clone)]
pub struct WakeHub {
    /// Push-queue wakes (for the worker).
    tx: broadcast::Sender<Arc<str>>,
    waiters: Arc<Mutex<HashMap<Arc<str>, Waiters>>>,
}

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
    /// Subscribes to `channel` (pull queues) and `<channel>:push` (push
    /// queues) on `client` and republishes every message.
    /// Must be called inside a running actix `System`.
    pub fn start(client: redis::Client, channel: String) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let hub = Self {
            tx,
            waiters: Arc::new(Mutex::new(HashMap::new())),
        };
        let listener = hub.clone();
        actix::spawn(async move {
            loop {
                if let Err(err) = listen(&client, &channel, &listener).await {
                    log::warn!("wake subscription lost: {err}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        hub
    }

    /// Tags of push queues with newly startable lanes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }

    /// Registers interest in wakes of the queue tagged `tag`.
    pub fn waiter(&self, tag: &str) -> Waiter {
        let tag: Arc<str> = Arc::from(tag);
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

    fn wake_pull(&self, tag: &str) {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = waiters.get(tag) {
            entry.notify.notify_waiters();
        }
    }

    fn wake_push(&self, tag: String) {
        let _ = self.tx.send(Arc::from(tag));
    }

    /// Sends the worker a [`Wake`] for every notification.
    pub fn forward_to(&self, worker: Addr<Worker>) {
        let mut rx = self.subscribe();
        actix::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => worker.do_send(Wake),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

async fn listen(client: &redis::Client, channel: &str, hub: &WakeHub) -> redis::RedisResult<()> {
    let push_channel = format!("{channel}:push");
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&[channel, push_channel.as_str()]).await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let tag: String = message.get_payload().unwrap_or_default();
        if message.get_channel_name() == push_channel {
            hub.wake_push(tag);
        } else {
            hub.wake_pull(&tag);
        }
    }
    Ok(())
}
