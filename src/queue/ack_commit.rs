//! Group commit of the push worker's chained acks.
//!
//! A completed delivery's ack (which may lease its lane's next job, see
//! [`Engine::ack_and_lease_next_many`]) waits here with the other acks of
//! its queue; one `chain` script run writes them all. At most
//! [`MAX_IN_FLIGHT`] runs per queue are outstanding; while they are, new acks
//! accumulate into the next run, so runs grow with load and a lone ack pays
//! exactly one round trip. Per run, not per job: the script call, the queue's
//! settings, counters, the lease index and the live set — so a busy queue's
//! Redis time per job falls as its lanes multiply. Each item keeps its own
//! answer: a lost reply fails every item of the run, and each is repeated
//! (an ack is idempotent per lease, a chain per chain token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::engine::{Acked, ChainAck, Engine, EngineError, EngineResult};
use super::model::QueueRef;

/// Script runs of one queue outstanding at once (pipelined on the
/// connection; Redis runs them in the order sent).
pub const MAX_IN_FLIGHT: usize = 2;
/// Acks per run at most (a run of 256 takes about a millisecond of Redis).
pub const MAX_PER_RUN: usize = 256;

type Reply = oneshot::Sender<EngineResult<Acked>>;

#[derive(Default)]
struct Waiting {
    acks: Vec<(ChainAck, Reply)>,
    runs: usize,
}

/// The worker's ack group commit; shared by its deliveries.
pub struct AckCommit {
    engine: Engine,
    lease_ms: u64,
    queues: Mutex<HashMap<QueueRef, Waiting>>,
}

impl AckCommit {
    pub fn new(engine: Engine, lease_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            engine,
            lease_ms,
            queues: Mutex::new(HashMap::new()),
        })
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<QueueRef, Waiting>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Acks one delivery of `queue` together with the others waiting; the
    /// next job of its lane may come leased with the answer.
    pub async fn ack_and_lease_next(
        self: &Arc<Self>,
        queue: &QueueRef,
        ack: ChainAck,
    ) -> EngineResult<Acked> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queues = self.queues();
            let waiting = queues.entry(queue.clone()).or_default();
            waiting.acks.push((ack, reply));
            let start = waiting.runs < MAX_IN_FLIGHT;
            if start {
                waiting.runs += 1;
            }
            start
        };
        if start {
            actix::spawn(self.clone().run(queue.clone()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(EngineError::Unexpected("ack group commit stopped".into())))
    }

    /// Runs the queue's waiting acks until none are left.
    async fn run(self: Arc<Self>, queue: QueueRef) {
        loop {
            let batch: Vec<(ChainAck, Reply)> = {
                let mut queues = self.queues();
                let Some(waiting) = queues.get_mut(&queue) else {
                    return;
                };
                if waiting.acks.is_empty() {
                    waiting.runs -= 1;
                    if waiting.runs == 0 {
                        queues.remove(&queue);
                    }
                    return;
                }
                let take = waiting.acks.len().min(MAX_PER_RUN);
                waiting.acks.drain(..take).collect()
            };
            let (acks, replies): (Vec<ChainAck>, Vec<Reply>) = batch.into_iter().unzip();
            let run = self
                .engine
                .ack_and_lease_next_many(&queue, &acks, self.lease_ms);
            match run.await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(err) => {
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}
