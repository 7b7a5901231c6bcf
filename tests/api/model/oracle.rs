//! The order oracle: the contract's ordering and lease guarantees (§2),
//! checked from what the engine answered, without the model's bookkeeping.
//!
//! - At most one live lease per lane at any time: when a lease starts, every
//!   earlier lease of its lane has had an outcome accepted or has expired.
//! - Lane order: per lane, first starts (attempt 1 since publish, or since an
//!   owner sent the dead job back) are in increasing seq order; jobs sent
//!   back start before any newer job starts for the first time, and among
//!   themselves in seq order.
//! - Fencing: a job's lease numbers only grow.
//! - Nothing starts while the queue is paused, before its `delay_ms` has
//!   passed, or before the retry delay its failure asked for.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct Lane {
    last_first: Option<u64>,
    /// Seqs sent back from dead that have not started again.
    reopened: BTreeSet<u64>,
    leases: Vec<LaneLease>,
}

#[derive(Debug)]
struct LaneLease {
    seq: u64,
    number: u64,
    expires_at: u64,
    ended: bool,
}

#[derive(Debug)]
struct Job {
    lane: String,
    not_before: u64,
    started: bool,
    last_lease: u64,
}

/// A lease as the engine granted it.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub seq: u64,
    pub attempts: u32,
    pub lease_no: u64,
    /// The Redis time the lease began (its expiry minus its length).
    pub at: u64,
    pub expires_at: u64,
}

#[derive(Debug, Default)]
pub struct Oracle {
    lanes: HashMap<String, Lane>,
    jobs: HashMap<u64, Job>,
    paused: bool,
}

impl Oracle {
    pub fn published(&mut self, lane: &str, seq: u64, available_at: u64) {
        let job = Job {
            lane: lane.to_owned(),
            not_before: available_at,
            started: false,
            last_lease: 0,
        };
        assert!(
            self.jobs.insert(seq, job).is_none(),
            "seq {seq} published twice"
        );
        self.lanes.entry(lane.to_owned()).or_default();
    }

    pub fn paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn started(&mut self, start: Start) {
        let Start {
            seq,
            attempts,
            lease_no,
            at,
            expires_at,
        } = start;
        assert!(!self.paused, "seq {seq} started while its queue is paused");
        let job = self.jobs.get_mut(&seq).expect("a published job started");
        assert!(
            at >= job.not_before,
            "seq {seq} started at {at}, before {}",
            job.not_before
        );
        assert!(
            lease_no > job.last_lease,
            "seq {seq}: lease {lease_no} after {}",
            job.last_lease
        );
        job.last_lease = lease_no;
        let first = !job.started;
        job.started = true;
        let lane_key = job.lane.clone();
        let lane = self.lanes.get_mut(&lane_key).expect("a known lane");
        if let Some(other) = lane.leases.iter().find(|l| !l.ended && l.expires_at > at) {
            panic!(
                "lane {lane_key:?}: seq {seq} leased at {at} while seq {} holds live lease {} until {}",
                other.seq, other.number, other.expires_at
            );
        }
        lane.leases.retain(|l| !l.ended);
        lane.leases.push(LaneLease {
            seq,
            number: lease_no,
            expires_at,
            ended: false,
        });
        if !first {
            return;
        }
        assert_eq!(
            attempts, 1,
            "first start of seq {seq} counts {attempts} attempts"
        );
        if lane.reopened.remove(&seq) {
            assert!(
                lane.reopened.range(..seq).next().is_none(),
                "lane {lane_key:?}: sent-back seq {seq} started before older sent-back {:?}",
                lane.reopened
            );
        } else {
            assert!(
                lane.reopened.range(..seq).next().is_none(),
                "lane {lane_key:?}: seq {seq} started before sent-back {:?}",
                lane.reopened
            );
            if let Some(last) = lane.last_first {
                assert!(
                    seq > last,
                    "lane {lane_key:?}: seq {seq} first started after seq {last}"
                );
            }
            lane.last_first = Some(seq);
        }
    }

    fn lease_mut(&mut self, seq: u64, number: u64) -> &mut LaneLease {
        let lane = &self.jobs[&seq].lane;
        self.lanes
            .get_mut(lane)
            .and_then(|l| {
                l.leases
                    .iter_mut()
                    .find(|l| l.seq == seq && l.number == number)
            })
            .unwrap_or_else(|| panic!("an outcome for lease {number} of seq {seq}, never granted"))
    }

    /// An outcome (ack, fail, release) was accepted under this lease.
    pub fn ended(&mut self, seq: u64, number: u64) {
        let lease = self.lease_mut(seq, number);
        assert!(
            !lease.ended,
            "two outcomes accepted under lease {number} of seq {seq}"
        );
        lease.ended = true;
    }

    pub fn extended(&mut self, seq: u64, number: u64, expires_at: u64) {
        self.lease_mut(seq, number).expires_at = expires_at;
    }

    /// A failed attempt asked for a retry no earlier than `at`.
    pub fn retry_not_before(&mut self, seq: u64, at: u64) {
        self.jobs.get_mut(&seq).expect("a known job").not_before = at;
    }

    /// The owner sent a dead job back into its lane.
    pub fn reopened(&mut self, seq: u64) {
        let job = self.jobs.get_mut(&seq).expect("a known job");
        job.started = false;
        let lane = job.lane.clone();
        self.lanes.get_mut(&lane).unwrap().reopened.insert(seq);
    }

    /// A job that was waiting was cancelled.
    pub fn cancelled(&mut self, seq: u64) {
        let lane = self.jobs[&seq].lane.clone();
        self.lanes.get_mut(&lane).unwrap().reopened.remove(&seq);
    }
}
