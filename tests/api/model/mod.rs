//! Property test of the queue engine against an in-memory model, on real
//! Redis: random interleavings of every transition over three lanes of one
//! queue, pull or push, `dead_letter` or `block`, with several consumers
//! holding leases at once, short leases that expire for real, delays and
//! retry backoffs that pass in real time.
//!
//! Three independent checks run after every step:
//! - the engine's replies are what the model (`spec`) expects, as far as
//!   real time lets the test know (a lease that expires while a call runs
//!   may go either way; the model then follows the engine);
//! - the order oracle (`oracle`), written from the contract alone, sees every
//!   lease the engine grants;
//! - the audit (`audit`) reads the queue's raw Redis keys and checks the
//!   engine's index invariants, and that records and lanes are the model's.
//!   A call that must change nothing (a stale lease, a wrong-mode claim, a
//!   conflict) leaves every key byte for byte as it was.
//!
//! At the end everything is drained: every job not cancelled completes once.
//!
//! Cases: `ORDERLY_MODEL_CASES` (default 256); see `docs/reliability.md`.

mod audit;
mod oracle;
mod spec;

use std::time::{Duration, Instant};

use orderly::queue::engine::{
    Acked, CancelOutcome, ClaimBatch, Claimed, Engine, EngineConf, Failure, Lease, Mode, NewJob,
    Outcome, OutcomeKind, Published, Release, Reported, Resolution, Resolve, Transition, new_token,
};
use orderly::queue::model::{JobId, JobState, QueueName, QueueRef, now_ms};
use proptest::prelude::*;
use redis::aio::MultiplexedConnection;

use crate::helpers::test_settings;
use audit::{Dump, Keys};
use oracle::{Oracle, Start};
use spec::{Held, LANES, Live, MAX_ATTEMPTS, Model, Span, Window, liveness, waiting};

const CONSUMERS: usize = 3;
const LONG_LEASE_MS: u64 = 60_000;
const SHORT_LEASE_MS: u64 = 8;
const DELAY_MS: u64 = 30;
const RETRY_MS: u64 = 20;
const BACKOFF: (u64, u64) = (10, 40);
const IDEMPOTENCY_KEYS: u8 = 4;

/// A job of a publish call.
#[derive(Debug, Clone)]
struct NewSpec {
    lane: usize,
    delayed: bool,
    idempotency_key: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
enum Nack {
    Now,
    Later,
    Backoff,
    Permanent,
}

#[derive(Debug, Clone, Copy)]
enum StaleKind {
    Ack,
    ChainedAck,
    Nack,
    Extend,
    Release,
}

#[derive(Debug, Clone)]
enum Op {
    /// One publish call (a batch when it has several jobs).
    Publish(Vec<NewSpec>),
    Claim {
        consumer: usize,
        max: usize,
        short: bool,
        wrong_mode: bool,
        /// The claim carries the ack of this held job (picked), applied in
        /// the claim's own script run before it leases.
        ack: Option<usize>,
    },
    /// A consumer acks one of its leases (`chain`: as the push worker does).
    Ack {
        pick: usize,
        chain: bool,
    },
    Nack {
        pick: usize,
        how: Nack,
    },
    Extend {
        pick: usize,
        short: bool,
    },
    /// A consumer gives all its leases back (shutdown).
    Restart(usize),
    /// A consumer vanishes: its short leases are left to expire; its long
    /// ones it released on the way down.
    Crash(usize),
    /// Waits (polling with a deadline) until a short lease has expired for
    /// real and `recover` took it back.
    Expire(usize),
    /// One run of the lease reaper.
    Recover,
    /// A transition under a lease that is no longer live.
    Stale {
        pick: usize,
        kind: StaleKind,
    },
    /// Cancels a waiting job (`any`: any job, most of which refuse).
    Cancel {
        pick: usize,
        any: bool,
    },
    Redrive {
        all: bool,
    },
    /// Retries or skips a stopped job (`any`: any job; most conflict).
    Resolve {
        pick: usize,
        skip: bool,
        any: bool,
    },
    Configure {
        paused: bool,
        block: bool,
    },
    /// A settings copy older than Redis' one.
    StaleConfigure,
    /// A few milliseconds of real time pass (steps are faster than Redis'
    /// clock resolution otherwise, and time-based drift would hide).
    Pass,
    /// The next claim, ack or nack runs in Redis but its reply is lost; the
    /// caller repeats it (a claim with its claim id, an ack or nack under the
    /// same lease, a chained ack with the same chain token) and must get the
    /// answer the first run would have given, with nothing applied twice.
    LoseReply,
}

fn new_spec() -> impl Strategy<Value = NewSpec> {
    (
        // Uneven lanes: a busy lane next to quiet ones is when acks chain.
        prop_oneof![3 => Just(0), 2 => Just(1), 1 => Just(2)],
        prop::bool::weighted(0.2),
        prop::option::weighted(0.25, 0..IDEMPOTENCY_KEYS),
    )
        .prop_map(|(lane, delayed, idempotency_key)| NewSpec {
            lane,
            delayed,
            idempotency_key,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let pick = any::<usize>;
    prop_oneof![
        6 => prop::collection::vec(new_spec(), 1..4).prop_map(Op::Publish),
        8 => (0..CONSUMERS, 1..4usize, prop::bool::weighted(0.25), prop::bool::weighted(0.1),
              prop::option::weighted(0.4, pick()))
            .prop_map(|(consumer, max, short, wrong_mode, ack)| Op::Claim { consumer, max, short, wrong_mode, ack }),
        6 => (pick(), any::<bool>()).prop_map(|(pick, chain)| Op::Ack { pick, chain }),
        5 => (pick(), prop_oneof![Just(Nack::Now), Just(Nack::Later), Just(Nack::Backoff), Just(Nack::Permanent)])
            .prop_map(|(pick, how)| Op::Nack { pick, how }),
        1 => (pick(), any::<bool>()).prop_map(|(pick, short)| Op::Extend { pick, short }),
        1 => (0..CONSUMERS).prop_map(Op::Restart),
        1 => (0..CONSUMERS).prop_map(Op::Crash),
        1 => pick().prop_map(Op::Expire),
        1 => Just(Op::Recover),
        2 => (pick(), prop_oneof![Just(StaleKind::Ack), Just(StaleKind::ChainedAck), Just(StaleKind::Nack), Just(StaleKind::Extend), Just(StaleKind::Release)])
            .prop_map(|(pick, kind)| Op::Stale { pick, kind }),
        1 => (pick(), prop::bool::weighted(0.3)).prop_map(|(pick, any)| Op::Cancel { pick, any }),
        1 => any::<bool>().prop_map(|all| Op::Redrive { all }),
        2 => (pick(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(pick, skip, any)| Op::Resolve { pick, skip, any }),
        1 => (prop::bool::weighted(0.3), any::<bool>()).prop_map(|(paused, block)| Op::Configure { paused, block }),
        1 => Just(Op::StaleConfigure),
        3 => Just(Op::Pass),
        3 => Just(Op::LoseReply),
    ]
}

/// One engine call, as data: every step goes through [`Harness::send`], so a
/// fault can be put between a call and its reply in one place (e.g. "perform
/// the transition, drop its reply, send it again" once replies may be lost).
#[derive(Debug, Clone)]
enum Call {
    Publish(Vec<NewJob>),
    Claim {
        mode: Mode,
        max: usize,
        lease_ms: u64,
        claim_id: String,
        /// An ack (job id, lease) applied first, in the same run.
        ack: Option<(String, Lease)>,
    },
    Ack {
        id: String,
        lease: Lease,
        /// A chained ack: the next lease's length and token.
        chain: Option<(u64, String)>,
    },
    Fail {
        id: String,
        lease: Lease,
        failure: Failure,
    },
    Extend {
        id: String,
        lease: Lease,
        lease_ms: u64,
    },
    Release {
        id: String,
        lease: Lease,
    },
    Recover,
    Cancel {
        id: String,
    },
    Redrive {
        max: usize,
    },
    Resolve {
        id: String,
        action: Resolve,
    },
    Configure(EngineConf),
}

/// The engine's answer to a [`Call`].
#[derive(Debug)]
enum Reply {
    Published(Vec<Published>),
    /// The statuses of the outcomes the claim carried, and its batch.
    Claimed(Vec<Reported>, ClaimBatch),
    Transition(Transition),
    Acked(Acked),
    Released(bool),
    Recovered(u64),
    Cancel(CancelOutcome),
    Redriven(u64),
    Resolved(Resolution),
    Configured(bool),
}

/// What a step did to Redis.
#[derive(Debug, PartialEq)]
enum Effect {
    /// Every key must be byte for byte as before.
    Nothing,
    Changed,
}

/// Milliseconds since the epoch of a job view's RFC 3339 time.
fn ms(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("an RFC 3339 time")
        .timestamp_millis() as u64
}

struct Harness {
    engine: Engine,
    queue: QueueRef,
    conn: MultiplexedConnection,
    keys: Keys,
    model: Model,
    oracle: Oracle,
    conf_version: u64,
    last_dump: Dump,
    /// Set by [`Op::LoseReply`]: the next repeatable call loses its first reply.
    lose_reply: bool,
    /// The last call was made twice (its first reply lost): its answer is
    /// a repeat's.
    repeated_last: bool,
    /// Replies lost so far in this case.
    lost_replies: u32,
}

impl Harness {
    async fn new(push: bool, block: bool) -> Self {
        let mut settings = test_settings();
        // The audit reads one server; the model runs on one Redis.
        settings.redis.cluster_nodes.clear();
        let engine = Engine::connect(&settings.redis).unwrap();
        let queue = QueueRef::new("model", QueueName::parse("q").unwrap());
        let conn = redis::Client::open(settings.redis.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys = Keys::of(&engine, &queue);
        let mut harness = Self {
            engine,
            queue,
            conn,
            keys,
            model: Model::new(push, block),
            oracle: Oracle::default(),
            conf_version: 0,
            last_dump: Dump::default(),
            lose_reply: false,
            repeated_last: false,
            lost_replies: 0,
        };
        harness.configure(false, block).await;
        harness.last_dump = audit::dump(&mut harness.conn, &harness.keys).await;
        harness
    }

    /// Sends one call; the Redis time inside it lies in the returned window.
    /// After [`Op::LoseReply`], the next claim, ack or nack is performed,
    /// its reply dropped, and performed again: the repeat's answer is the
    /// one the caller gets (and the model checks).
    async fn send(&mut self, call: &Call) -> (Reply, Window) {
        let t0 = now_ms();
        let repeatable = match call {
            // A short lease may expire between the run and its repeat.
            Call::Claim { lease_ms, .. } => *lease_ms == LONG_LEASE_MS,
            Call::Ack { .. } | Call::Fail { .. } => true,
            _ => false,
        };
        self.repeated_last = repeatable && std::mem::take(&mut self.lose_reply);
        if self.repeated_last {
            let _lost = self.perform(call).await;
            self.lost_replies += 1;
        }
        let reply = self.perform(call).await;
        (reply, Window { t0, t1: now_ms() })
    }

    async fn perform(&self, call: &Call) -> Reply {
        let (e, q) = (&self.engine, &self.queue);
        match call.clone() {
            Call::Publish(jobs) => Reply::Published(e.publish(&jobs, 60).await),
            Call::Claim {
                mode,
                max,
                lease_ms,
                claim_id,
                ack,
            } => {
                let outcomes: Vec<Outcome> = ack
                    .into_iter()
                    .map(|(id, lease)| Outcome {
                        id,
                        lease,
                        kind: OutcomeKind::Ack {
                            result: "true".into(),
                        },
                    })
                    .collect();
                let (reported, batch) = e
                    .claim_after(q, &outcomes, max, lease_ms, mode, Some(&claim_id))
                    .await
                    .unwrap();
                Reply::Claimed(reported, batch)
            }
            Call::Ack {
                id,
                lease,
                chain: None,
            } => Reply::Transition(e.ack(q, &id, &lease, "true").await.unwrap()),
            Call::Ack {
                id,
                lease,
                chain: Some((lease_ms, token)),
            } => Reply::Acked(
                e.ack_and_lease_next(q, &id, &lease, "true", lease_ms, &token)
                    .await
                    .unwrap(),
            ),
            Call::Fail { id, lease, failure } => {
                Reply::Transition(e.fail(q, &id, &lease, "\"no\"", failure).await.unwrap())
            }
            Call::Extend {
                id,
                lease,
                lease_ms,
            } => Reply::Transition(e.extend(q, &id, &lease, lease_ms).await.unwrap()),
            Call::Release { id, lease } => Reply::Released(
                e.release(q, &id, &lease, 0, Release::Started)
                    .await
                    .unwrap(),
            ),
            Call::Recover => Reply::Recovered(e.recover(q, 100).await.unwrap().len() as u64),
            Call::Cancel { id } => Reply::Cancel(e.cancel(q, &id).await.unwrap()),
            Call::Redrive { max } => Reply::Redriven(e.redrive_step(q, max).await.unwrap().0),
            Call::Resolve { id, action } => {
                Reply::Resolved(e.resolve(q, &id, action).await.unwrap())
            }
            Call::Configure(conf) => Reply::Configured(e.configure(q, &conf).await.unwrap()),
        }
    }

    async fn step(&mut self, op: Op) {
        let effect = match op {
            Op::Publish(specs) => self.publish(specs).await,
            Op::Claim {
                consumer,
                max,
                short,
                wrong_mode,
                ack,
            } => self.claim(consumer, max, short, wrong_mode, ack).await,
            Op::Ack { pick, chain } => self.ack(pick, chain).await,
            Op::Nack { pick, how } => self.nack(pick, how).await,
            Op::Extend { pick, short } => self.extend(pick, short).await,
            Op::Restart(consumer) => self.restart(consumer, false).await,
            Op::Crash(consumer) => self.restart(consumer, true).await,
            Op::Expire(pick) => self.expire(pick).await,
            Op::Recover => self.recover().await,
            Op::Stale { pick, kind } => self.stale(pick, kind).await,
            Op::Cancel { pick, any } => self.cancel(pick, any).await,
            Op::Redrive { all } => self.redrive(all).await,
            Op::Resolve { pick, skip, any } => self.resolve(pick, skip, any).await,
            Op::LoseReply => {
                self.lose_reply = true;
                Effect::Nothing
            }
            Op::Configure { paused, block } => self.configure(paused, block).await,
            Op::StaleConfigure => self.stale_configure().await,
            Op::Pass => {
                tokio::time::sleep(Duration::from_millis(3)).await;
                Effect::Nothing
            }
        };
        self.audit(effect).await;
    }

    async fn audit(&mut self, effect: Effect) {
        let dump = audit::dump(&mut self.conn, &self.keys).await;
        if effect == Effect::Nothing {
            audit::unchanged(&self.last_dump, &dump);
        }
        audit::check(&dump, &self.model);
        self.last_dump = dump;
    }

    fn pick(seqs: &[u64], pick: usize) -> Option<u64> {
        (!seqs.is_empty()).then(|| seqs[pick % seqs.len()])
    }

    /// The consumer-held lease `pick` names, if any.
    fn pick_held(&self, pick: usize) -> Option<(u64, Held)> {
        let seq = Self::pick(&self.model.held(), pick)?;
        Some((seq, self.model.job(seq).lease.clone().unwrap()))
    }

    /// Sends a call the engine answers with a lease holder's transition.
    async fn send_transition(&mut self, call: Call) -> (Transition, Window) {
        match self.send(&call).await {
            (Reply::Transition(t), w) => (t, w),
            (other, _) => unreachable!("{other:?}"),
        }
    }

    fn id(&self, seq: u64) -> String {
        self.model.job(seq).id.clone()
    }

    /// Records a lease the engine granted, in the model and the oracle.
    fn leased(&mut self, claimed: &Claimed, lease_ms: u64, consumer: usize) {
        let seq = claimed.job.seq;
        let expires_at = ms(claimed
            .job
            .lease_expires_at
            .as_deref()
            .expect("a lease expiry"));
        self.oracle.started(Start {
            seq,
            attempts: claimed.job.attempts,
            lease_no: claimed.lease.number,
            at: expires_at - lease_ms,
            expires_at,
        });
        self.model.lease(
            seq,
            Held {
                lease: claimed.lease.clone(),
                expires_at,
                lease_ms,
                consumer: Some(consumer),
            },
        );
        let job = self.model.job(seq);
        assert_eq!(claimed.job.attempts, job.attempts, "seq {seq}: attempts");
        assert_eq!(claimed.job.key, LANES[job.lane], "seq {seq}: key");
    }

    async fn publish(&mut self, specs: Vec<NewSpec>) -> Effect {
        let jobs: Vec<NewJob> = specs
            .iter()
            .map(|spec| NewJob {
                queue: self.queue.clone(),
                id: JobId::generate(&self.queue.name).id,
                key: LANES[spec.lane].into(),
                payload: "1".into(),
                delay_ms: if spec.delayed { DELAY_MS } else { 0 },
                max_attempts: MAX_ATTEMPTS,
                priority: 0,
                idempotency_key: spec.idempotency_key.map(|k| format!("k{k}")),
            })
            .collect();
        let (reply, _) = self.send(&Call::Publish(jobs.clone())).await;
        let Reply::Published(published) = reply else {
            unreachable!()
        };
        assert_eq!(published.len(), jobs.len());
        let mut fresh = false;
        for ((job, spec), outcome) in jobs.into_iter().zip(&specs).zip(published) {
            let original = job
                .idempotency_key
                .as_ref()
                .and_then(|k| self.model.idempotency.get(k).copied());
            match (outcome, original) {
                (Published::Duplicate { original_id }, Some(seq)) => {
                    assert_eq!(
                        original_id,
                        self.model.job(seq).id,
                        "a repeated key names its first job"
                    );
                }
                (Published::New { seq, created_at_ms }, None) => {
                    fresh = true;
                    let available_at = spec.delayed.then_some(created_at_ms + DELAY_MS);
                    self.oracle
                        .published(LANES[spec.lane], seq, available_at.unwrap_or(0));
                    self.model
                        .publish(job.id, spec.lane, seq, available_at, created_at_ms);
                    if let Some(key) = job.idempotency_key {
                        self.model.idempotency.insert(key, seq);
                    }
                }
                (outcome, original) => {
                    panic!("publish answered {outcome:?}; the key names {original:?}")
                }
            }
        }
        if fresh {
            Effect::Changed
        } else {
            Effect::Nothing
        }
    }

    async fn claim(
        &mut self,
        consumer: usize,
        max: usize,
        short: bool,
        wrong_mode: bool,
        ack: Option<usize>,
    ) -> Effect {
        let mode = if self.model.push != wrong_mode {
            Mode::Push
        } else {
            Mode::Pull
        };
        let lease_ms = if short { SHORT_LEASE_MS } else { LONG_LEASE_MS };
        let acked = ack.and_then(|pick| self.pick_held(pick));
        let (reply, w) = self
            .send(&Call::Claim {
                mode,
                max,
                lease_ms,
                claim_id: new_token(),
                ack: acked
                    .as_ref()
                    .map(|(seq, held)| (self.id(*seq), held.lease.clone())),
            })
            .await;
        let Reply::Claimed(reported, batch) = reply else {
            unreachable!()
        };
        assert_eq!(
            reported.len(),
            usize::from(acked.is_some()),
            "one status per outcome"
        );
        // The ack first, as the run applied it: its lane's next head may be
        // among the jobs claimed.
        let mut effect = Effect::Nothing;
        if let Some((seq, held)) = acked {
            let completed = reported[0].settled() == Reported::Completed;
            if self.accepted(seq, completed, w) {
                self.oracle.ended(seq, held.lease.number);
                self.model.end_lease(seq);
                self.model.outcomes.insert(seq, held.lease.clone());
                self.model.finish(seq, JobState::Completed, w);
                effect = Effect::Changed;
            }
        }
        let got: Vec<usize> = batch
            .jobs
            .iter()
            .map(|c| self.model.job(c.job.seq).lane)
            .collect();
        if wrong_mode || self.model.paused {
            assert!(got.is_empty(), "claimed {got:?} (wrong mode or paused)");
            return effect;
        }
        // Lanes due for sure, and lanes that may be due within the call.
        let spans: Vec<(usize, Span)> = (0..LANES.len())
            .filter_map(|l| self.model.lanes[l].ready.map(|s| (l, s)))
            .collect();
        let due: Vec<usize> = spans
            .iter()
            .filter(|(_, s)| s.hi <= w.t0)
            .map(|(l, _)| *l)
            .collect();
        assert!(got.len() <= max, "claimed {} > {max}", got.len());
        assert!(
            got.len() >= max.min(due.len()),
            "claimed lanes {got:?}, due {due:?}"
        );
        for (i, lane) in got.iter().enumerate() {
            assert!(
                !got[..i].contains(lane),
                "one claim leased lane {lane} twice"
            );
            let span = self.model.lanes[*lane]
                .ready
                .expect("a claimed lane was ready");
            assert!(
                span.lo <= w.t1,
                "claimed lane {lane} before it was due ({span:?}, {w:?})"
            );
            // Oldest ready first: no due lane is left for a later one.
            for (other, s) in &spans {
                if !got.contains(other) && s.hi <= w.t0 {
                    assert!(
                        span.lo <= s.hi,
                        "claimed lane {lane} ({span:?}) before lane {other} ({s:?})"
                    );
                }
            }
        }
        if got.len() < max {
            assert!(
                due.iter().all(|l| got.contains(l)),
                "claimed {got:?}, due {due:?}"
            );
        }
        for claimed in &batch.jobs {
            self.leased(claimed, lease_ms, consumer);
        }
        if got.is_empty() {
            effect
        } else {
            Effect::Changed
        }
    }

    /// Checks a lease holder's answer against the lease's liveness; `true`
    /// if the engine accepted the transition.
    fn accepted(&self, seq: u64, accepted: bool, w: Window) -> bool {
        let held = self.model.job(seq).lease.as_ref().expect("a held lease");
        match liveness(held.expires_at, w) {
            Live::Yes => assert!(accepted, "seq {seq}: a live lease was refused"),
            Live::No => assert!(!accepted, "seq {seq}: an expired lease was accepted"),
            Live::Maybe => {}
        }
        accepted
    }

    async fn ack(&mut self, pick: usize, chain: bool) -> Effect {
        let Some((seq, held)) = self.pick_held(pick) else {
            return Effect::Nothing;
        };
        let chained = chain;
        let chain = chain.then(|| (held.lease_ms, new_token()));
        let call = Call::Ack {
            id: self.id(seq),
            lease: held.lease.clone(),
            chain,
        };
        let (reply, w) = self.send(&call).await;
        let (completed, next) = match reply {
            Reply::Transition(Transition::Done(job)) => {
                assert_eq!(job.state, JobState::Completed);
                (true, None)
            }
            Reply::Transition(Transition::LeaseLost(_)) => (false, None),
            // The ack went through once, its reply was lost, and this is
            // the repeat's answer: the lease's outcome, nothing changed since.
            Reply::Transition(Transition::Repeated { outcome, .. }) if self.repeated_last => {
                assert_eq!(outcome, JobState::Completed);
                (true, None)
            }
            Reply::Transition(t @ Transition::Repeated { .. }) => {
                panic!("seq {seq}: an ack made once answered as a repeat: {t:?}")
            }
            Reply::Acked(acked) => {
                assert!(
                    acked.completed || acked.next.is_none(),
                    "a refused ack leased a job"
                );
                (acked.completed, acked.next)
            }
            other => unreachable!("{other:?}"),
        };
        if !self.accepted(seq, completed, w) {
            return Effect::Nothing;
        }
        self.oracle.ended(seq, held.lease.number);
        self.model.end_lease(seq);
        self.model.outcomes.insert(seq, held.lease.clone());
        let lane = self.model.job(seq).lane;
        self.model.finish(seq, JobState::Completed, w);
        if chained {
            self.check_chain(lane, next.as_ref(), w);
        }
        if let Some(next) = next {
            self.leased(&next, held.lease_ms, held.consumer.unwrap());
        }
        Effect::Changed
    }

    /// A chained ack leases the lane's next head iff the queue is push and
    /// not paused, the head may start now, and no other lane is due.
    fn check_chain(&self, lane: usize, next: Option<&Claimed>, w: Window) {
        let m = &self.model;
        let head = m.lanes[lane].jobs.front().copied();
        if let Some(next) = next {
            assert_eq!(
                Some(next.job.seq),
                head,
                "a chained ack leased a job that is not the next head"
            );
        }
        let Some(head) = head else { return };
        // When the head may start: after its delay, and after the retry it
        // waits for (a head sent back from dead went ahead of it).
        let job = m.job(head);
        let available = job.available_at.unwrap_or(0);
        let (surely, maybe) = match job.retry_at {
            Some(retry) => (available.max(retry.hi), available.max(retry.lo)),
            None => (available, available),
        };
        let allowed = m.push && !m.paused;
        let must = allowed && surely <= w.t0 && m.other_ready(lane).all(|s| s.lo > w.t1);
        let must_not = !allowed || maybe > w.t1 || m.other_ready(lane).any(|s| s.hi <= w.t0);
        assert!(
            !(must && next.is_none()),
            "a chained ack did not lease the next head {head} ({w:?})"
        );
        assert!(
            !(must_not && next.is_some()),
            "a chained ack leased {head} though it must not ({w:?})"
        );
    }

    async fn nack(&mut self, pick: usize, how: Nack) -> Effect {
        let Some((seq, held)) = self.pick_held(pick) else {
            return Effect::Nothing;
        };
        let (failure, delay) = match how {
            Nack::Now => (Failure::Retry { in_ms: 0 }, (0, 0)),
            Nack::Later => (Failure::Retry { in_ms: RETRY_MS }, (RETRY_MS, RETRY_MS)),
            Nack::Backoff => {
                let (initial_ms, max_ms) = BACKOFF;
                let attempts = self.model.job(seq).attempts;
                let step = (initial_ms << (attempts - 1).min(32)).clamp(1, max_ms);
                (Failure::Backoff { initial_ms, max_ms }, (step / 2, step))
            }
            Nack::Permanent => (Failure::Permanent, (0, 0)),
        };
        let call = Call::Fail {
            id: self.id(seq),
            lease: held.lease.clone(),
            failure,
        };
        let (t, w) = self.send_transition(call).await;
        let after = match t {
            Transition::Done(job) => Some(job.state),
            Transition::LeaseLost(_) => None,
            Transition::Repeated { outcome, .. } if self.repeated_last => Some(outcome),
            t @ Transition::Repeated { .. } => {
                panic!("seq {seq}: a nack made once answered as a repeat: {t:?}")
            }
        };
        if !self.accepted(seq, after.is_some(), w) {
            return Effect::Nothing;
        }
        self.oracle.ended(seq, held.lease.number);
        self.model.end_lease(seq);
        self.model.outcomes.insert(seq, held.lease.clone());
        let retry = !matches!(how, Nack::Permanent) && self.model.job(seq).attempts < MAX_ATTEMPTS;
        if retry {
            assert_eq!(after, Some(JobState::Retrying), "seq {seq}");
            self.oracle.retry_not_before(seq, w.t0 + delay.0);
            self.model
                .requeue(seq, JobState::Retrying, w.plus(delay.0, delay.1));
        } else {
            self.model.exhaust(seq, w);
            assert_eq!(after, Some(self.model.job(seq).state), "seq {seq}");
        }
        Effect::Changed
    }

    async fn extend(&mut self, pick: usize, short: bool) -> Effect {
        let Some((seq, held)) = self.pick_held(pick) else {
            return Effect::Nothing;
        };
        let lease_ms = if short { SHORT_LEASE_MS } else { LONG_LEASE_MS };
        let call = Call::Extend {
            id: self.id(seq),
            lease: held.lease.clone(),
            lease_ms,
        };
        let (t, w) = self.send_transition(call).await;
        let Transition::Done(job) = t else {
            self.accepted(seq, false, w);
            return Effect::Nothing;
        };
        self.accepted(seq, true, w);
        let expires_at = ms(job
            .lease_expires_at
            .as_deref()
            .expect("an extended lease's expiry"));
        assert!(w.t0 + lease_ms <= expires_at && expires_at <= w.t1 + lease_ms);
        self.oracle.extended(seq, held.lease.number, expires_at);
        let lease = self.model.held_mut(seq);
        lease.expires_at = expires_at;
        lease.lease_ms = lease_ms;
        Effect::Changed
    }

    /// A consumer gives all its leases back (a restart); one that `crashed`
    /// gives back only its long leases, on the way down, and leaves its
    /// short ones to expire.
    async fn restart(&mut self, consumer: usize, crashed: bool) -> Effect {
        let mut effect = Effect::Nothing;
        for seq in self.model.held() {
            let held = self.model.job(seq).lease.clone().unwrap();
            if held.consumer != Some(consumer) {
                continue;
            }
            if crashed && held.lease_ms == SHORT_LEASE_MS {
                self.model.held_mut(seq).consumer = None;
                continue;
            }
            let call = Call::Release {
                id: self.id(seq),
                lease: held.lease.clone(),
            };
            let (reply, w) = self.send(&call).await;
            let Reply::Released(released) = reply else {
                unreachable!()
            };
            if self.accepted(seq, released, w) {
                self.oracle.ended(seq, held.lease.number);
                self.model.end_lease(seq);
                self.model.requeue(seq, JobState::Queued, w.not_before(0));
                effect = Effect::Changed;
            } else {
                // Expired: its job stays active until recovered.
                self.model.held_mut(seq).consumer = None;
            }
        }
        effect
    }

    /// One run of the reaper: leases expired for sure are taken back,
    /// live ones are not; one that expired within the call may go either
    /// way (its record tells).
    async fn recover(&mut self) -> Effect {
        let (reply, w) = self.send(&Call::Recover).await;
        let Reply::Recovered(n) = reply else {
            unreachable!()
        };
        let mut recovered = 0;
        for seq in self.model.leased() {
            let held = self.model.job(seq).lease.clone().unwrap();
            let taken = match liveness(held.expires_at, w) {
                Live::Yes => false,
                Live::No => true,
                Live::Maybe => {
                    let id = self.id(seq);
                    !audit::holds(&mut self.conn, &self.keys, &id, &held.lease).await
                }
            };
            if !taken {
                continue;
            }
            recovered += 1;
            self.model.end_lease(seq);
            // (An expired push lease is Orderly's own loss, never the job's
            // last attempt: recover.lua.)
            if !self.model.push && self.model.job(seq).attempts >= MAX_ATTEMPTS {
                self.model.exhaust(seq, w);
            } else {
                self.model.requeue(seq, JobState::Queued, w.not_before(0));
            }
        }
        assert_eq!(n, recovered, "leases recovered");
        // Even with nothing to recover, the lease index entry is made exact.
        Effect::Changed
    }

    async fn expire(&mut self, pick: usize) -> Effect {
        let short: Vec<u64> = self
            .model
            .leased()
            .into_iter()
            .filter(|s| self.model.job(*s).lease.as_ref().unwrap().lease_ms == SHORT_LEASE_MS)
            .collect();
        let Some(seq) = Self::pick(&short, pick) else {
            return Effect::Nothing;
        };
        let number = self.model.job(seq).lease.as_ref().unwrap().lease.number;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut effect = Effect::Nothing;
        while self
            .model
            .job(seq)
            .lease
            .as_ref()
            .is_some_and(|l| l.lease.number == number)
        {
            assert!(
                Instant::now() < deadline,
                "lease {number} of seq {seq} never expired"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            if self.recover().await == Effect::Changed {
                effect = Effect::Changed;
            }
        }
        effect
    }

    async fn stale(&mut self, pick: usize, kind: StaleKind) -> Effect {
        // Leases that ended, and leases that expired for sure (not yet
        // recovered: their jobs are still active).
        let now = now_ms();
        let mut leases = self.model.stale.clone();
        for seq in self.model.leased() {
            let held = self.model.job(seq).lease.as_ref().unwrap();
            if held.expires_at <= now {
                leases.push((seq, held.lease.clone()));
            }
        }
        if leases.is_empty() {
            return Effect::Nothing;
        }
        let (seq, lease) = leases[pick % leases.len()].clone();
        // An ack or nack repeated under a lease whose outcome the engine
        // remembers answers that outcome (a lost reply retried).
        let repeat = (self.model.outcomes.get(&seq) == Some(&lease)
            || self.model.prev_outcomes.get(&seq) == Some(&lease))
            && matches!(
                kind,
                StaleKind::Ack | StaleKind::ChainedAck | StaleKind::Nack
            );
        let id = self.id(seq);
        let call = match kind {
            StaleKind::Ack => Call::Ack {
                id,
                lease,
                chain: None,
            },
            StaleKind::ChainedAck => Call::Ack {
                id,
                lease,
                chain: Some((LONG_LEASE_MS, new_token())),
            },
            StaleKind::Nack => Call::Fail {
                id,
                lease,
                failure: Failure::Retry { in_ms: 0 },
            },
            StaleKind::Extend => Call::Extend {
                id,
                lease,
                lease_ms: LONG_LEASE_MS,
            },
            StaleKind::Release => Call::Release { id, lease },
        };
        // Anything else under a stale lease is lease_lost. Either way nothing
        // changes.
        let (reply, _) = self.send(&call).await;
        let (lost, answered) = match reply {
            Reply::Transition(t) => (
                matches!(t, Transition::LeaseLost(_)),
                matches!(t, Transition::Repeated { .. }),
            ),
            Reply::Acked(acked) => (
                !acked.completed && acked.next.is_none(),
                acked.completed && acked.next.is_none(),
            ),
            Reply::Released(released) => (!released, false),
            other => unreachable!("{other:?}"),
        };
        if repeat {
            assert!(
                answered,
                "a repeat under seq {seq}'s lease was refused by {kind:?}"
            );
        } else {
            assert!(lost, "a stale lease of seq {seq} was accepted by {kind:?}");
        }
        Effect::Nothing
    }

    async fn cancel(&mut self, pick: usize, any: bool) -> Effect {
        let seqs = if any {
            self.model.jobs.keys().copied().collect()
        } else {
            self.model
                .in_states(&[JobState::Queued, JobState::Delayed, JobState::Retrying])
        };
        let Some(seq) = Self::pick(&seqs, pick) else {
            return Effect::Nothing;
        };
        let (reply, w) = self.send(&Call::Cancel { id: self.id(seq) }).await;
        let Reply::Cancel(outcome) = reply else {
            unreachable!()
        };
        let state = self.model.job(seq).state;
        if waiting(state) {
            assert!(
                matches!(outcome, CancelOutcome::Cancelled(_)),
                "seq {seq} ({state:?}): {outcome:?}"
            );
            self.oracle.cancelled(seq);
            self.model.cancel(seq, w);
            Effect::Changed
        } else {
            assert!(
                matches!(outcome, CancelOutcome::NotCancellable(_)),
                "seq {seq} ({state:?}): {outcome:?}"
            );
            Effect::Nothing
        }
    }

    async fn redrive(&mut self, all: bool) -> Effect {
        let max = if all { 10_000 } else { 1 };
        let dead = self.model.in_states(&[JobState::Dead]);
        let (reply, w) = self.send(&Call::Redrive { max }).await;
        let Reply::Redriven(n) = reply else {
            unreachable!()
        };
        let redriven = &dead[..dead.len().min(max)];
        assert_eq!(n as usize, redriven.len(), "redriven");
        for seq in redriven {
            self.oracle.reopened(*seq);
            self.model.reopen(*seq, w);
        }
        if n == 0 {
            Effect::Nothing
        } else {
            Effect::Changed
        }
    }

    async fn resolve(&mut self, pick: usize, skip: bool, any: bool) -> Effect {
        let seqs = if any {
            self.model.jobs.keys().copied().collect()
        } else {
            self.model.in_states(&[JobState::Blocked, JobState::Dead])
        };
        let Some(seq) = Self::pick(&seqs, pick) else {
            return Effect::Nothing;
        };
        let state = self.model.job(seq).state;
        let action = if skip { Resolve::Skip } else { Resolve::Retry };
        let (reply, w) = self
            .send(&Call::Resolve {
                id: self.id(seq),
                action,
            })
            .await;
        let Reply::Resolved(resolution) = reply else {
            unreachable!()
        };
        let applies = match (state, skip) {
            (JobState::Blocked, true) => {
                self.model.finish(seq, JobState::Dead, w);
                true
            }
            (JobState::Blocked, false) => {
                self.model.retry_blocked(seq, w);
                true
            }
            (JobState::Dead, false) => {
                self.oracle.reopened(seq);
                self.model.reopen(seq, w);
                true
            }
            _ => false,
        };
        match resolution {
            Resolution::Done(job) if applies => {
                assert_eq!(job.state, self.model.job(seq).state, "seq {seq}");
                Effect::Changed
            }
            Resolution::Conflict(_) if !applies => Effect::Nothing,
            other => panic!("resolve {action:?} of seq {seq} ({state:?}): {other:?}"),
        }
    }

    fn conf(&self, paused: bool, block: bool, version: u64) -> EngineConf {
        EngineConf {
            push: self.model.push,
            paused,
            on_exhausted: if block { "block" } else { "dead_letter" },
            retention_s: 600,
            rate_limit: None,
            max_active: None,
            version,
        }
    }

    async fn configure(&mut self, paused: bool, block: bool) -> Effect {
        self.conf_version += 1;
        let call = Call::Configure(self.conf(paused, block, self.conf_version));
        let (reply, _) = self.send(&call).await;
        assert!(matches!(reply, Reply::Configured(true)), "{reply:?}");
        self.model.paused = paused;
        self.model.block = block;
        self.oracle.paused(paused);
        Effect::Changed
    }

    async fn stale_configure(&mut self) -> Effect {
        let call = Call::Configure(self.conf(
            !self.model.paused,
            !self.model.block,
            self.conf_version - 1,
        ));
        let (reply, _) = self.send(&call).await;
        assert!(
            matches!(reply, Reply::Configured(false)),
            "an older settings copy was applied: {reply:?}"
        );
        Effect::Nothing
    }

    /// Resumes, sends every dead and blocked job back, and completes
    /// everything; every job not cancelled completes exactly once.
    async fn drain(&mut self) {
        if self.model.paused {
            self.step(Op::Configure {
                paused: false,
                block: self.model.block,
            })
            .await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let open = self.model.in_states(&[
                JobState::Queued,
                JobState::Delayed,
                JobState::Retrying,
                JobState::Active,
                JobState::Blocked,
                JobState::Dead,
            ]);
            if open.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "jobs never completed: {open:?}");
            self.step(Op::Recover).await;
            // With no dead job left, the stopped jobs are the blocked ones.
            self.step(Op::Redrive { all: true }).await;
            for _ in self.model.in_states(&[JobState::Blocked]) {
                self.step(Op::Resolve {
                    pick: 0,
                    skip: false,
                    any: false,
                })
                .await;
            }
            self.step(Op::Claim {
                consumer: 0,
                max: 3,
                short: false,
                wrong_mode: false,
                ack: None,
            })
            .await;
            let before = self.model.held().len();
            for _ in 0..before {
                self.step(Op::Ack {
                    pick: 0,
                    chain: false,
                })
                .await;
            }
            if before == 0 {
                // Delays, backoffs and short leases pass in real time.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let completed = self.model.in_states(&[JobState::Completed]).len() as u64;
        assert_eq!(completed, self.model.completed, "completed once each");
        let stats = self.engine.stats(&self.queue).await.unwrap();
        assert_eq!(
            (stats.pending, stats.completed),
            (0, completed),
            "stats after the drain"
        );
    }
}

async fn run_case(push: bool, block: bool, ops: Vec<Op>) {
    let mut harness = Harness::new(push, block).await;
    for op in ops {
        harness.step(op).await;
    }
    harness.drain().await;
}

fn run(push: bool, block: bool, ops: Vec<Op>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_case(push, block, ops));
}

/// Cases per run: `ORDERLY_MODEL_CASES`, or a CI-sized default.
fn cases() -> u32 {
    std::env::var("ORDERLY_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_matches_the_model_under_random_interleavings(
        push in any::<bool>(),
        block in any::<bool>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(push, block, ops);
    }
}

/// Found by this model: a blocked head retried (`resolve`) gets its
/// attempts reset, so it no longer counts as started, although older jobs
/// sent back from dead wait behind it (they were put behind it because it had
/// started). A dead job sent back next then goes ahead of it, and the lane's
/// chain is out of seq order: job 2 starts before job 1, both sent back.
/// The audit stops this at the retry (chain `[3, 1, 4, 5]` under a head that
/// no longer counts as started); without it, the oracle stops the last claim.
#[test]
fn jobs_sent_back_behind_a_retried_blocked_head_start_in_seq_order() {
    let job = || NewSpec {
        lane: 0,
        delayed: false,
        idempotency_key: None,
    };
    let claim = || Op::Claim {
        consumer: 0,
        max: 1,
        short: false,
        wrong_mode: false,
        ack: None,
    };
    let fail = || Op::Nack {
        pick: 0,
        how: Nack::Permanent,
    };
    // Picks index the stopped (dead and blocked) jobs in seq order.
    let resolve = |pick, skip| Op::Resolve {
        pick,
        skip,
        any: false,
    };
    let ops = vec![
        Op::Publish(vec![job(), job(), job(), job(), job()]),
        claim(),
        fail(),
        resolve(0, true), // 1 dead
        claim(),
        fail(),
        resolve(1, true), // 2 dead
        claim(),
        fail(),            // 3 blocked
        resolve(0, false), // 1 back, behind the blocked head 3
        resolve(1, false), // 3 retried: attempts 0
        resolve(0, false), // 2 back: ahead of 3, so ahead of 1
        claim(),
    ];
    run(false, true, ops);
}

/// Found by this model: a dead job retried (`resolve`) ahead of a lane
/// head that was ready earlier raises the lane's ready score, but the
/// group's push due index keeps the old, earlier time. Harmless for order
/// (the worker claims early and the claim re-indexes), yet the index is not
/// what the layout promises. Ignored until `resolve.lua` re-indexes; see
/// `Model::due_may_lag`.
#[test]
fn a_dead_job_retried_to_the_head_keeps_the_push_due_index_exact() {
    let job = || NewSpec {
        lane: 0,
        delayed: false,
        idempotency_key: None,
    };
    let ops = vec![
        Op::Publish(vec![job(), job()]),
        Op::Claim {
            consumer: 0,
            max: 1,
            short: false,
            wrong_mode: false,
            ack: None,
        },
        Op::Nack {
            pick: 0,
            how: Nack::Permanent,
        },
        Op::Pass,
        Op::Resolve {
            pick: 0,
            skip: false,
            any: false,
        },
    ];
    run(true, false, ops);
}
