//! The in-memory model of one queue: what the engine should hold after each
//! transition, written from the engine's documented semantics (lane heads,
//! attempts, policies, readiness times), compared with the raw Redis state
//! by `audit` after every step.

use std::collections::{BTreeMap, HashMap, VecDeque};

use orderly::queue::engine::Lease;
use orderly::queue::model::JobState;

/// Ordering keys of the modelled queue.
pub const LANES: [&str; 3] = ["a", "b", "c"];
pub const MAX_ATTEMPTS: u32 = 3;

/// What the test knows of a call's time: the Redis clock read inside the
/// script lies in `[t0, t1]` (one machine, one clock, milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub t0: u64,
    pub t1: u64,
}

impl Window {
    /// "now, but not before `ms`", as the engine computes it inside the call.
    pub fn not_before(self, ms: u64) -> Span {
        Span {
            lo: self.t0.max(ms),
            hi: self.t1.max(ms),
        }
    }

    /// "now + a delay between `lo` and `hi`".
    pub fn plus(self, lo: u64, hi: u64) -> Span {
        Span {
            lo: self.t0 + lo,
            hi: self.t1 + hi,
        }
    }
}

/// Bounds of a time the engine chose (a ready lane's score).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub lo: u64,
    pub hi: u64,
}

/// Whether a lease is live when a call runs in `w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    Yes,
    No,
    /// It expires inside the call's window: either answer is right.
    Maybe,
}

pub fn liveness(expires_at: u64, w: Window) -> Live {
    if w.t1 < expires_at {
        Live::Yes
    } else if w.t0 >= expires_at {
        Live::No
    } else {
        Live::Maybe
    }
}

/// A lease the engine granted and has not taken back yet (it may have
/// expired: until `recover` runs, its job stays active).
#[derive(Debug, Clone)]
pub struct Held {
    pub lease: Lease,
    pub expires_at: u64,
    pub lease_ms: u64,
    /// The consumer holding it; `None` once that consumer crashed.
    pub consumer: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct MJob {
    pub id: String,
    pub seq: u64,
    pub lane: usize,
    pub state: JobState,
    pub attempts: u32,
    /// Attempted at least once since it was published or sent back from
    /// dead (the engine's `started_at` is set; a blocked head retried keeps it).
    pub started: bool,
    /// When a job published with `delay_ms` may start (until redriven).
    pub available_at: Option<u64>,
    /// When a job waiting for its retry may start again: the engine keeps it
    /// in the record, so a job sent back from dead ahead of this head does
    /// not cut the retry's wait short.
    pub retry_at: Option<Span>,
    pub lease: Option<Held>,
}

#[derive(Debug, Default)]
pub struct Lane {
    /// Unfinished jobs by seq, the head first.
    pub jobs: VecDeque<u64>,
    /// When the head may start (the lane's score in the ready set); `None`
    /// while the head is leased or blocked, or the lane is empty.
    pub ready: Option<Span>,
}

#[derive(Debug)]
pub struct Model {
    pub push: bool,
    pub paused: bool,
    pub block: bool,
    pub lanes: [Lane; 3],
    pub jobs: BTreeMap<u64, MJob>,
    pub last_seq: u64,
    /// Idempotency key → the seq of the job it names.
    pub idempotency: HashMap<String, u64>,
    /// Leases that can never be live again.
    pub stale: Vec<(u64, Lease)>,
    /// Per job, the lease whose ack/nack outcome the engine remembers as the
    /// current one (until the job is leased again): a repeat of it answers
    /// that outcome.
    pub outcomes: std::collections::HashMap<u64, Lease>,
    /// Per job, the latest earlier lease that produced an outcome (it moves
    /// here from `outcomes` when the job is leased again): its repeat still
    /// answers that outcome.
    pub prev_outcomes: std::collections::HashMap<u64, Lease>,
    pub completed: u64,
    pub cancelled: u64,
}

pub fn waiting(state: JobState) -> bool {
    matches!(
        state,
        JobState::Queued | JobState::Delayed | JobState::Retrying
    )
}

pub fn unfinished(state: JobState) -> bool {
    !matches!(
        state,
        JobState::Completed | JobState::Dead | JobState::Cancelled
    )
}

impl Model {
    pub fn new(push: bool, block: bool) -> Self {
        Self {
            push,
            paused: false,
            block,
            lanes: Default::default(),
            jobs: BTreeMap::new(),
            last_seq: 0,
            idempotency: HashMap::new(),
            stale: Vec::new(),
            outcomes: Default::default(),
            prev_outcomes: Default::default(),
            completed: 0,
            cancelled: 0,
        }
    }

    pub fn job(&self, seq: u64) -> &MJob {
        &self.jobs[&seq]
    }

    /// The lease job `seq` is held under.
    pub fn held_mut(&mut self, seq: u64) -> &mut Held {
        self.job_mut(seq).lease.as_mut().expect("a leased job")
    }

    fn job_mut(&mut self, seq: u64) -> &mut MJob {
        self.jobs.get_mut(&seq).expect("a known job")
    }

    /// Seqs of jobs in `states`, in seq order.
    pub fn in_states(&self, states: &[JobState]) -> Vec<u64> {
        self.jobs
            .values()
            .filter(|j| states.contains(&j.state))
            .map(|j| j.seq)
            .collect()
    }

    /// Seqs of leased jobs, held by a consumer or orphaned, in seq order.
    pub fn leased(&self) -> Vec<u64> {
        self.jobs
            .values()
            .filter(|j| j.lease.is_some())
            .map(|j| j.seq)
            .collect()
    }

    /// Seqs of jobs whose lease a consumer holds.
    pub fn held(&self) -> Vec<u64> {
        self.jobs
            .values()
            .filter(|j| j.lease.as_ref().is_some_and(|l| l.consumer.is_some()))
            .map(|j| j.seq)
            .collect()
    }

    /// A job appended to its lane's tail at publish; a lane that did not
    /// exist becomes ready when the job may start.
    pub fn publish(
        &mut self,
        id: String,
        lane: usize,
        seq: u64,
        available_at: Option<u64>,
        now: u64,
    ) {
        assert!(seq > self.last_seq, "seq {seq} after {}", self.last_seq);
        self.last_seq = seq;
        let state = if available_at.is_some() {
            JobState::Delayed
        } else {
            JobState::Queued
        };
        if self.lanes[lane].jobs.is_empty() {
            let at = available_at.unwrap_or(now);
            self.lanes[lane].ready = Some(Span { lo: at, hi: at });
        }
        self.lanes[lane].jobs.push_back(seq);
        let job = MJob {
            id,
            seq,
            lane,
            state,
            attempts: 0,
            started: false,
            available_at,
            retry_at: None,
            lease: None,
        };
        self.jobs.insert(seq, job);
    }

    /// The lane's head was leased.
    pub fn lease(&mut self, seq: u64, held: Held) {
        let lane = self.job(seq).lane;
        assert_eq!(
            self.lanes[lane].jobs.front(),
            Some(&seq),
            "leased a job that is not its lane's head"
        );
        self.lanes[lane].ready = None;
        let job = self.job_mut(seq);
        assert!(waiting(job.state), "leased a job in state {:?}", job.state);
        job.state = JobState::Active;
        job.attempts += 1;
        job.started = true;
        job.lease = Some(held);
        if let Some(ended) = self.outcomes.remove(&seq) {
            self.prev_outcomes.insert(seq, ended);
        }
    }

    /// The job's lease ended (an outcome, a release, recovery): it is stale.
    pub fn end_lease(&mut self, seq: u64) {
        let held = self.job_mut(seq).lease.take().expect("a leased job");
        self.stale.push((seq, held.lease));
    }

    /// The lane's next head becomes ready: now, or when it may start.
    fn ready_next(&mut self, lane: usize, w: Window) {
        let next = self.lanes[lane].jobs.front().copied();
        self.lanes[lane].ready = next.map(|seq| {
            let job = self.job(seq);
            let at = w.not_before(job.available_at.unwrap_or(0));
            match job.retry_at {
                Some(retry) => Span {
                    lo: at.lo.max(retry.lo),
                    hi: at.hi.max(retry.hi),
                },
                None => at,
            }
        });
    }

    /// The head reached a terminal state; its lane continues.
    pub fn finish(&mut self, seq: u64, state: JobState, w: Window) {
        let lane = self.job(seq).lane;
        assert_eq!(
            self.lanes[lane].jobs.front(),
            Some(&seq),
            "only a head finishes"
        );
        self.lanes[lane].jobs.pop_front();
        self.job_mut(seq).state = state;
        match state {
            JobState::Completed => self.completed += 1,
            JobState::Cancelled => self.cancelled += 1,
            _ => {}
        }
        self.ready_next(lane, w);
    }

    /// The head goes back to waiting, startable within `at`.
    pub fn requeue(&mut self, seq: u64, state: JobState, at: Span) {
        let lane = self.job(seq).lane;
        let job = self.job_mut(seq);
        job.state = state;
        job.retry_at = (state == JobState::Retrying).then_some(at);
        self.lanes[lane].ready = Some(at);
    }

    /// Out of attempts: the queue's policy applies.
    pub fn exhaust(&mut self, seq: u64, w: Window) {
        if self.block {
            self.job_mut(seq).state = JobState::Blocked;
        } else {
            self.finish(seq, JobState::Dead, w);
        }
    }

    /// A waiting job leaves its lane for good.
    pub fn cancel(&mut self, seq: u64, w: Window) {
        let lane = self.job(seq).lane;
        if self.lanes[lane].jobs.front() == Some(&seq) {
            self.finish(seq, JobState::Cancelled, w);
        } else {
            self.lanes[lane].jobs.retain(|s| *s != seq);
            self.job_mut(seq).state = JobState::Cancelled;
            self.cancelled += 1;
        }
    }

    /// A dead job goes back into its lane where its seq belongs, never
    /// before a head that keeps its place (see below).
    pub fn reopen(&mut self, seq: u64, w: Window) {
        let lane = self.job(seq).lane;
        let job = self.job_mut(seq);
        assert_eq!(job.state, JobState::Dead);
        job.state = JobState::Queued;
        job.attempts = 0;
        job.started = false;
        job.available_at = None;
        job.retry_at = None;
        // The head keeps its place while leased or blocked, or while older
        // jobs sent back earlier wait behind it; a head only waiting (its
        // retry's backoff too) lets an older job sent back go first.
        let jobs = &self.lanes[lane].jobs;
        let head_keeps_place = jobs.front().is_some_and(|h| {
            !waiting(self.jobs[h].state) || jobs.get(1).is_some_and(|second| second < h)
        });
        let at = jobs
            .iter()
            .enumerate()
            .position(|(i, other)| *other > seq && (i > 0 || !head_keeps_place))
            .unwrap_or(jobs.len());
        self.lanes[lane].jobs.insert(at, seq);
        if at == 0 {
            self.lanes[lane].ready = Some(w.not_before(0));
        }
    }

    /// A blocked head becomes startable again, attempts reset.
    pub fn retry_blocked(&mut self, seq: u64, w: Window) {
        let job = self.job_mut(seq);
        assert_eq!(job.state, JobState::Blocked);
        job.attempts = 0;
        self.requeue(seq, JobState::Queued, w.not_before(0));
    }

    /// The ready lanes other than `lane`, with their spans.
    pub fn other_ready(&self, lane: usize) -> impl Iterator<Item = Span> + '_ {
        (0..LANES.len())
            .filter(move |l| *l != lane)
            .filter_map(|l| self.lanes[l].ready)
    }
}
