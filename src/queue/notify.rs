//! One Redis subscription per process to the engine's wake channel, fanned out
//! in-process: the worker and (later) every long-polling consumer listen to
//! [`WakeHub`] instead of holding Redis connections of their own.
//!
//! A lost notification only delays work until the next fallback poll; the
//! listener reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::worker::{Wake, Worker};

/// Fan-out of queue tags whose lanes became startable.
#[derive(Clone)]
pub struct WakeHub {
    tx: broadcast::Sender<Arc<str>>,
}

impl WakeHub {
    /// Subscribes to `channel` on `client` and republishes every message.
    /// Must be called inside a running actix `System`.
    pub fn start(client: redis::Client, channel: String) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let hub = Self { tx };
        let sender = hub.tx.clone();
        actix::spawn(async move {
            loop {
                if let Err(err) = listen(&client, &channel, &sender).await {
                    log::warn!("wake subscription lost: {err}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        hub
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
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

async fn listen(
    client: &redis::Client,
    channel: &str,
    sender: &broadcast::Sender<Arc<str>>,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let tag: String = message.get_payload().unwrap_or_default();
        let _ = sender.send(Arc::from(tag));
    }
    Ok(())
}
