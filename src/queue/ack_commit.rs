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
#[cfg(test)]
use std::time::Duration;

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
        let mut slot = RunSlot {
            commit: self.clone(),
            queue: queue.clone(),
            released: false,
        };
        loop {
            let batch: Vec<(ChainAck, Reply)> = {
                let mut queues = self.queues();
                let Some(waiting) = queues.get_mut(&queue) else {
                    slot.released = true;
                    return;
                };
                if waiting.acks.is_empty() {
                    waiting.runs -= 1;
                    if waiting.runs == 0 {
                        queues.remove(&queue);
                    }
                    slot.released = true;
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

/// A run's place among its queue's [`MAX_IN_FLIGHT`]. A run that ends any
/// other way than finding no ack left (its task panicked or was dropped)
/// gives the place back here and fails the acks still waiting, whose
/// deliveries report again (a new run starts then) rather than wait for a
/// run that will never come.
struct RunSlot {
    commit: Arc<AckCommit>,
    queue: QueueRef,
    released: bool,
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let mut queues = self.commit.queues();
        if let Some(waiting) = queues.get_mut(&self.queue) {
            waiting.runs = waiting.runs.saturating_sub(1);
            if waiting.runs == 0 {
                // Dropping the senders answers each waiting ack with an error.
                queues.remove(&self.queue);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::RedisSettings;
    use crate::queue::engine::Lease;
    use crate::queue::model::QueueName;

    fn ack(n: usize) -> ChainAck {
        ChainAck {
            id: format!("job-{n}"),
            lease: Lease {
                number: 1,
                token: "t".into(),
            },
            result: "null".into(),
            chain_token: format!("c-{n}"),
        }
    }

    /// A run dropped while its script call is outstanding (here: a "Redis"
    /// that accepts connections and never answers) fails every ack it left
    /// waiting and gives its place back, instead of leaving them to wait
    /// for a run that will never come.
    #[actix_web::test]
    async fn a_run_that_ends_abnormally_fails_the_acks_left_waiting() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let engine = Engine::connect(&RedisSettings {
            url: format!("redis://{}", silent.local_addr().unwrap()),
            cluster_nodes: vec![],
            key_prefix: "P".into(),
            slot_groups: 1,
            wait_replicas: 0,
            wait_timeout_ms: 100,
            connect_timeout_ms: 60_000,
            response_timeout_ms: 60_000,
        })
        .unwrap();
        let commit = AckCommit::new(engine, 30_000);
        let queue = QueueRef::new("owner", QueueName::parse("q").unwrap());
        let mut answers = Vec::new();
        {
            let mut queues = commit.queues();
            let waiting = queues.entry(queue.clone()).or_default();
            for n in 0..MAX_PER_RUN + 10 {
                let (reply, answer) = oneshot::channel();
                waiting.acks.push((ack(n), reply));
                answers.push(answer);
            }
            waiting.runs = 1;
        }
        let run = commit.clone().run(queue.clone());
        let cut = tokio::time::timeout(Duration::from_millis(50), run).await;
        assert!(cut.is_err(), "the run was still waiting for its reply");
        for answer in answers {
            let answered = tokio::time::timeout(Duration::from_secs(5), answer).await;
            assert!(
                matches!(answered, Ok(Err(_))),
                "an ack is left waiting: {answered:?}"
            );
        }
        assert!(
            commit.queues().get(&queue).is_none(),
            "its place given back"
        );
    }
}
