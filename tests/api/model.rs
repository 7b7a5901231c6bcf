//! Property test of the queue engine against an in-memory model, on real
//! Redis: random interleavings of publish (with random priorities) / claim /
//! ack / nack / lease expiry / cancel / redrive / worker restart / lane pause
//! and resume over three lanes of one pull queue.
//!
//! Checked after every step: a claimed job is exactly the model's head of its
//! lane (so lane order is seq order), at most one live lease per lane, no
//! paused lane starts, no startable head left behind has a higher priority
//! than one claimed, stale leases change nothing, no job completes twice, the
//! queue's stats equal the model's counts, and the lanes listing shows the
//! model's lanes (oldest head first, length, head, paused). At the end
//! everything is resumed and drained: every job that was not cancelled
//! completes exactly once.

use std::collections::{BTreeMap, VecDeque};

use orderly::queue::engine::{
    CancelOutcome, Engine, EngineConf, Failure, LaneFilter, Lease, NewJob, Published, Release,
    Transition,
};
use orderly::queue::model::{JobState, LaneState, QueueName, QueueRef};
use proptest::prelude::*;

use crate::helpers::test_settings;

const LANES: [&str; 3] = ["a", "b", "c"];
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A job on lane `.0` with priority `.1`.
    Publish(usize, u8),
    Claim(usize),
    Ack(usize),
    Nack(usize),
    Expire(usize),
    StaleAck(usize),
    Cancel(usize),
    Redrive,
    Restart,
    PauseLane(usize),
    ResumeLane(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..LANES.len(), prop_oneof![3 => Just(0u8), 1 => 1..10u8])
            .prop_map(|(lane, priority)| Op::Publish(lane, priority)),
        4 => (1..4usize).prop_map(Op::Claim),
        3 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Nack),
        1 => any::<usize>().prop_map(Op::Expire),
        1 => any::<usize>().prop_map(Op::StaleAck),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::Redrive),
        1 => Just(Op::Restart),
        1 => (0..LANES.len()).prop_map(Op::PauseLane),
        1 => (0..LANES.len()).prop_map(Op::ResumeLane),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Waiting,
    Leased,
    Dead,
    Done,
    Cancelled,
}

#[derive(Debug)]
struct MJob {
    id: String,
    lane: usize,
    state: St,
    attempts: u32,
    priority: u8,
}

/// The model: lanes of seqs, jobs by seq, held leases.
#[derive(Default)]
struct Model {
    lanes: [VecDeque<u64>; 3],
    jobs: BTreeMap<u64, MJob>,
    held: Vec<(u64, Lease)>,
    stale: Vec<(u64, Lease)>,
    completed: u64,
    cancelled: u64,
    paused: [bool; 3],
}

impl Model {
    /// The lane's head, if it may be claimed.
    fn startable(&self, lane: usize) -> Option<u64> {
        if self.paused[lane] {
            return None;
        }
        let head = *self.lanes[lane].front()?;
        (self.jobs[&head].state == St::Waiting).then_some(head)
    }

    /// Inserts a redriven seq where it belongs, never before a started head.
    fn insert_in_order(&mut self, lane: usize, seq: u64) {
        let queue = &self.lanes[lane];
        let mut at = queue.len();
        for (i, other) in queue.iter().enumerate() {
            let job = &self.jobs[other];
            let started = i == 0 && (job.state == St::Leased || job.attempts > 0);
            if !started && *other > seq {
                at = i;
                break;
            }
        }
        self.lanes[lane].insert(at, seq);
    }

    fn finish(&mut self, seq: u64, state: St) {
        let lane = self.jobs[&seq].lane;
        assert_eq!(self.lanes[lane].front(), Some(&seq), "only a head finishes");
        self.lanes[lane].pop_front();
        self.jobs.get_mut(&seq).unwrap().state = state;
    }
}

struct Harness {
    engine: Engine,
    queue: QueueRef,
    model: Model,
}

impl Harness {
    async fn claim(&mut self, max: usize) {
        let batch = self
            .engine
            .claim_queue(&self.queue, max, 60_000)
            .await
            .unwrap();
        let mut expected: Vec<u64> = (0..LANES.len())
            .filter_map(|l| self.model.startable(l))
            .collect();
        expected.sort();
        expected.truncate(max);
        let mut got: Vec<u64> = batch.jobs.iter().map(|c| c.job.seq).collect();
        got.sort();
        // The engine picks oldest-ready lanes first; the model only knows
        // which heads are startable, so compare as sets of startable heads.
        assert!(
            got.len() == expected.len().min(max),
            "claimed {got:?}, startable {expected:?}"
        );
        // Priority first: no startable head left behind outranks one claimed.
        let least_claimed = got.iter().map(|s| self.model.jobs[s].priority).min();
        for left in expected.iter().filter(|s| !got.contains(s)) {
            let priority = self.model.jobs[left].priority;
            assert!(
                least_claimed.is_none_or(|least| priority <= least),
                "seq {left} (priority {priority}) left behind for {got:?}"
            );
        }
        for claimed in batch.jobs {
            let seq = claimed.job.seq;
            let lane = self.model.jobs.get(&seq).expect("claimed a known job").lane;
            assert!(
                self.model
                    .held
                    .iter()
                    .all(|(s, _)| self.model.jobs[s].lane != lane),
                "two leases in one lane"
            );
            assert_eq!(
                self.model.lanes[lane].front(),
                Some(&seq),
                "claimed a job that is not its lane's head"
            );
            let job = self.model.jobs.get_mut(&seq).unwrap();
            assert_eq!(job.state, St::Waiting, "claimed a job that was not waiting");
            job.state = St::Leased;
            job.attempts += 1;
            assert_eq!(claimed.job.attempts, job.attempts);
            self.model.held.push((seq, claimed.lease));
        }
    }

    fn take_held(&mut self, pick: usize) -> Option<(u64, Lease)> {
        if self.model.held.is_empty() {
            return None;
        }
        let i = pick % self.model.held.len();
        Some(self.model.held.remove(i))
    }

    /// Lets the lease really expire: shortened to 1 ms through the public
    /// `extend`, then `recover` is run until it has returned the job.
    async fn expire(&mut self, seq: u64, lease: &Lease) {
        let id = self.model.jobs[&seq].id.clone();
        let extended = self
            .engine
            .extend(&self.queue, &id, lease, 1)
            .await
            .unwrap();
        assert!(matches!(extended, Transition::Done(_)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.engine.recover(&self.queue, 100).await.unwrap() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "lease of seq {seq} never expired"
            );
            tokio::task::yield_now().await;
        }
    }

    async fn step(&mut self, op: Op) {
        match op {
            Op::Publish(lane, priority) => {
                let job = NewJob {
                    queue: self.queue.clone(),
                    id: orderly::queue::model::JobId::generate(&self.queue.name).id,
                    key: LANES[lane].into(),
                    payload: "1".into(),
                    delay_ms: 0,
                    max_attempts: MAX_ATTEMPTS,
                    idempotency_key: None,
                    priority,
                };
                let Published::New { seq, .. } = self
                    .engine
                    .publish(std::slice::from_ref(&job), 60)
                    .await
                    .unwrap()[0]
                    .clone()
                else {
                    panic!("not published")
                };
                self.model.lanes[lane].push_back(seq);
                self.model.jobs.insert(
                    seq,
                    MJob {
                        id: job.id,
                        lane,
                        state: St::Waiting,
                        attempts: 0,
                        priority,
                    },
                );
            }
            Op::Claim(max) => self.claim(max).await,
            Op::Ack(pick) => {
                if let Some((seq, lease)) = self.take_held(pick) {
                    let id = self.model.jobs[&seq].id.clone();
                    let t = self
                        .engine
                        .ack(&self.queue, &id, &lease, "true")
                        .await
                        .unwrap();
                    assert!(
                        matches!(t, Transition::Done(ref j) if j.state == JobState::Completed),
                        "{t:?}"
                    );
                    self.model.finish(seq, St::Done);
                    self.model.completed += 1;
                    self.model.stale.push((seq, lease));
                }
            }
            Op::Nack(pick) => {
                if let Some((seq, lease)) = self.take_held(pick) {
                    let id = self.model.jobs[&seq].id.clone();
                    let t = self
                        .engine
                        .fail(&self.queue, &id, &lease, "no", Failure::Retry { in_ms: 0 })
                        .await
                        .unwrap();
                    let Transition::Done(after) = t else {
                        panic!("nack refused")
                    };
                    let attempts = self.model.jobs[&seq].attempts;
                    if attempts < MAX_ATTEMPTS {
                        assert_eq!(after.state, JobState::Retrying);
                        self.model.jobs.get_mut(&seq).unwrap().state = St::Waiting;
                    } else {
                        assert_eq!(after.state, JobState::Dead);
                        self.model.finish(seq, St::Dead);
                    }
                    self.model.stale.push((seq, lease));
                }
            }
            Op::Expire(pick) => {
                if let Some((seq, lease)) = self.take_held(pick) {
                    self.expire(seq, &lease).await;
                    if self.model.jobs[&seq].attempts < MAX_ATTEMPTS {
                        self.model.jobs.get_mut(&seq).unwrap().state = St::Waiting;
                    } else {
                        self.model.finish(seq, St::Dead);
                    }
                    self.model.stale.push((seq, lease));
                }
            }
            Op::StaleAck(pick) => {
                if !self.model.stale.is_empty() {
                    let (seq, lease) = self.model.stale[pick % self.model.stale.len()].clone();
                    let id = self.model.jobs[&seq].id.clone();
                    let t = self
                        .engine
                        .ack(&self.queue, &id, &lease, "\"stale\"")
                        .await
                        .unwrap();
                    assert!(
                        matches!(t, Transition::LeaseLost(_)),
                        "a stale lease was accepted: {t:?}"
                    );
                }
            }
            Op::Cancel(pick) => {
                let waiting: Vec<u64> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == St::Waiting)
                    .map(|(s, _)| *s)
                    .collect();
                if !waiting.is_empty() {
                    let seq = waiting[pick % waiting.len()];
                    let id = self.model.jobs[&seq].id.clone();
                    let outcome = self.engine.cancel(&self.queue, &id).await.unwrap();
                    assert!(
                        matches!(outcome, CancelOutcome::Cancelled(_)),
                        "{outcome:?}"
                    );
                    let lane = self.model.jobs[&seq].lane;
                    self.model.lanes[lane].retain(|s| *s != seq);
                    self.model.jobs.get_mut(&seq).unwrap().state = St::Cancelled;
                    self.model.cancelled += 1;
                }
            }
            Op::Redrive => {
                let dead: Vec<u64> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == St::Dead)
                    .map(|(s, _)| *s)
                    .collect();
                let n = self.engine.redrive(&self.queue, 10_000).await.unwrap();
                assert_eq!(n as usize, dead.len());
                for seq in dead {
                    let job = self.model.jobs.get_mut(&seq).unwrap();
                    job.state = St::Waiting;
                    job.attempts = 0;
                    let lane = job.lane;
                    self.model.insert_in_order(lane, seq);
                }
            }
            Op::Restart => {
                for (seq, lease) in std::mem::take(&mut self.model.held) {
                    let id = self.model.jobs[&seq].id.clone();
                    assert!(
                        self.engine
                            .release(&self.queue, &id, &lease, 0, Release::Started)
                            .await
                            .unwrap()
                    );
                    self.model.jobs.get_mut(&seq).unwrap().state = St::Waiting;
                    self.model.stale.push((seq, lease));
                }
            }
            Op::PauseLane(lane) | Op::ResumeLane(lane) => {
                let pause = matches!(op, Op::PauseLane(_));
                self.engine
                    .pause_lane(&self.queue, LANES[lane], pause)
                    .await
                    .unwrap();
                self.model.paused[lane] = pause;
            }
        }
        self.check_stats().await;
        self.check_lanes().await;
    }

    /// The lanes listing is the model's lanes: oldest head first (nothing
    /// blocks here), with their lengths, heads and pauses.
    async fn check_lanes(&self) {
        let filter = LaneFilter {
            limit: 100,
            ..LaneFilter::default()
        };
        let page = self.engine.lanes(&self.queue, &filter).await.unwrap();
        let got: Vec<(String, u64, u64, bool)> = page
            .lanes
            .iter()
            .map(|l| {
                let paused = l.state == LaneState::Paused;
                (l.key.clone(), l.length, l.head.seq, paused)
            })
            .collect();
        let mut expected: Vec<(String, u64, u64, bool)> = (0..LANES.len())
            .filter_map(|lane| {
                let head = *self.model.lanes[lane].front()?;
                let length = self.model.lanes[lane].len() as u64;
                Some((LANES[lane].into(), length, head, self.model.paused[lane]))
            })
            .collect();
        expected.sort_by_key(|(_, _, head, _)| *head);
        assert_eq!(got, expected, "lanes listing");
        assert_eq!(page.next, None);
    }

    async fn check_stats(&self) {
        let stats = self.engine.stats(&self.queue).await.unwrap();
        let count = |st: St| self.model.jobs.values().filter(|j| j.state == st).count() as u64;
        assert_eq!(stats.active, count(St::Leased), "active");
        assert_eq!(stats.dead, count(St::Dead), "dead");
        assert_eq!(
            stats.pending,
            count(St::Waiting) + count(St::Leased),
            "pending"
        );
        assert_eq!(stats.completed, self.model.completed, "completed");
        assert_eq!(stats.cancelled, self.model.cancelled, "cancelled");
    }

    /// Redrives and drains everything; every non-cancelled job completes once.
    async fn drain(&mut self) {
        self.step(Op::Restart).await;
        for lane in 0..LANES.len() {
            self.step(Op::ResumeLane(lane)).await;
        }
        for _ in 0..200 {
            self.step(Op::Redrive).await;
            self.claim(3).await;
            if self.model.held.is_empty() {
                break;
            }
            while !self.model.held.is_empty() {
                self.step(Op::Ack(0)).await;
            }
        }
        let unfinished: Vec<&MJob> = self
            .model
            .jobs
            .values()
            .filter(|j| !matches!(j.state, St::Done | St::Cancelled))
            .collect();
        assert!(
            unfinished.is_empty(),
            "jobs never completed: {unfinished:?}"
        );
        let done = self
            .model
            .jobs
            .values()
            .filter(|j| j.state == St::Done)
            .count() as u64;
        assert_eq!(done, self.model.completed);
    }
}

async fn run_case(ops: Vec<Op>) {
    let settings = test_settings();
    let engine = Engine::connect(&settings.redis).unwrap();
    let queue = QueueRef::new("model", QueueName::parse("q").unwrap());
    let conf = EngineConf {
        push: false,
        paused: false,
        on_exhausted: "dead_letter",
        retention_s: 600,
        rate_limit: None,
        max_active: None,
        version: 1,
    };
    engine.configure(&queue, &conf).await.unwrap();
    let mut harness = Harness {
        engine,
        queue,
        model: Model::default(),
    };
    for op in ops {
        harness.step(op).await;
    }
    harness.drain().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_matches_the_model_under_random_interleavings(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_case(ops));
    }
}
