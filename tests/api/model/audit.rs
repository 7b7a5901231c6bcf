//! The audit: one queue's raw Redis keys (the layout table in
//! `src/queue/engine/mod.rs`, records as `lib.lua` packs them), read in one
//! MULTI after every step. It checks the engine's index invariants on the
//! raw data, and that records, lanes and the ready set are the model's.

use std::collections::{BTreeMap, BTreeSet};

use orderly::queue::engine::{Engine, Lease};
use orderly::queue::model::{JobState, QueueRef};
use redis::aio::MultiplexedConnection;

use super::spec::{LANES, Model, unfinished};

/// The queue's keys the audit reads, and its member name in group indexes.
pub struct Keys {
    meta: String,
    jobs: String,
    lanes: String,
    ready: String,
    leases: String,
    pending: String,
    delayed: String,
    dead: String,
    blocked: String,
    due: String,
    lease_due: String,
    live: String,
    qid: String,
}

impl Keys {
    pub fn of(engine: &Engine, queue: &QueueRef) -> Self {
        // In `lib.lua`'s KEYS order: m j b l r e o p d x k t s, due leases live wake.
        let k = engine.queue_keys(queue);
        Self {
            meta: k[0].clone(),
            jobs: k[1].clone(),
            lanes: k[3].clone(),
            ready: k[4].clone(),
            leases: k[5].clone(),
            pending: k[7].clone(),
            delayed: k[8].clone(),
            dead: k[9].clone(),
            blocked: k[10].clone(),
            due: k[13].clone(),
            lease_due: k[14].clone(),
            live: k[15].clone(),
            qid: queue.tag(),
        }
    }
}

type Scored = Vec<(String, f64)>;

/// The raw state of one queue; equal dumps mean nothing changed.
#[derive(Debug, Default, PartialEq)]
pub struct Dump {
    pub meta: BTreeMap<String, String>,
    pub jobs: BTreeMap<String, Vec<u8>>,
    pub lanes: BTreeMap<String, Vec<u8>>,
    pub ready: Scored,
    pub leases: Scored,
    pub pending: Scored,
    pub delayed: Scored,
    pub dead: Scored,
    pub blocked: Scored,
    pub due: Option<f64>,
    pub lease_due: Option<f64>,
    pub live: Option<f64>,
}

pub async fn dump(conn: &mut MultiplexedConnection, k: &Keys) -> Dump {
    let zrange = |key: &str| {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(key).arg(0).arg(-1).arg("WITHSCORES");
        cmd
    };
    let (meta, jobs, lanes, ready, leases, pending, delayed, dead, blocked, due, lease_due, live) =
        redis::pipe()
            .atomic()
            .hgetall(&k.meta)
            .hgetall(&k.jobs)
            .hgetall(&k.lanes)
            .add_command(zrange(&k.ready))
            .add_command(zrange(&k.leases))
            .add_command(zrange(&k.pending))
            .add_command(zrange(&k.delayed))
            .add_command(zrange(&k.dead))
            .add_command(zrange(&k.blocked))
            .zscore(&k.due, &k.qid)
            .zscore(&k.lease_due, &k.qid)
            .zscore(&k.live, &k.qid)
            .query_async(conn)
            .await
            .expect("audit read");
    Dump {
        meta,
        jobs,
        lanes,
        ready,
        leases,
        pending,
        delayed,
        dead,
        blocked,
        due,
        lease_due,
        live,
    }
}

/// Asserts that nothing changed from `before` to `after`, naming what did.
pub fn unchanged(before: &Dump, after: &Dump) {
    macro_rules! same {
        ($($field:ident),*) => {$(
            assert!(
                before.$field == after.$field,
                "a call that must change nothing changed {}:\n before {:?}\n after  {:?}",
                stringify!($field), before.$field, after.$field
            );
        )*};
    }
    same!(
        meta, jobs, lanes, ready, leases, pending, delayed, dead, blocked, lease_due, live, due
    );
}

/// A msgpack value as Lua's cmsgpack writes a record's fields.
#[derive(Debug, Clone, PartialEq)]
enum Mp {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Mp>),
}

impl Mp {
    fn int(&self) -> Option<u64> {
        match self {
            Mp::Int(n) if *n >= 0 => Some(*n as u64),
            Mp::Float(f) if f.fract() == 0.0 && *f >= 0.0 => Some(*f as u64),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Mp::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Lua's `false`/`nil` mark an absent field.
    fn absent(&self) -> bool {
        matches!(self, Mp::Nil | Mp::Bool(false))
    }
}

/// Decodes the concatenated values `cmsgpack.pack(a, b, ...)` produces.
fn unpack(mut bytes: &[u8]) -> Vec<Mp> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(value(&mut bytes));
    }
    out
}

/// Decodes one msgpack value from the front of `bytes`.
fn value(bytes: &mut &[u8]) -> Mp {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        head
    }
    fn be(bytes: &mut &[u8], n: usize) -> u64 {
        take(bytes, n)
            .iter()
            .fold(0, |acc, b| acc << 8 | u64::from(*b))
    }
    let (&tag, rest) = bytes.split_first().expect("a msgpack value");
    *bytes = rest;
    let text = |bytes: &mut &[u8], n: usize| {
        Mp::Str(String::from_utf8(take(bytes, n).to_vec()).expect("utf-8 field"))
    };
    match tag {
        0x00..=0x7f => Mp::Int(i64::from(tag)),
        0xe0..=0xff => Mp::Int(i64::from(tag as i8)),
        0xc0 => Mp::Nil,
        0xc2 => Mp::Bool(false),
        0xc3 => Mp::Bool(true),
        0x90..=0x9f => Mp::Array((0..tag & 0x0f).map(|_| value(bytes)).collect()),
        0xa0..=0xbf => text(bytes, usize::from(tag & 0x1f)),
        0xd9 | 0xc4 => {
            let n = be(bytes, 1) as usize;
            text(bytes, n)
        }
        0xda | 0xc5 => {
            let n = be(bytes, 2) as usize;
            text(bytes, n)
        }
        0xdb | 0xc6 => {
            let n = be(bytes, 4) as usize;
            text(bytes, n)
        }
        0xcc => Mp::Int(be(bytes, 1) as i64),
        0xcd => Mp::Int(be(bytes, 2) as i64),
        0xce => Mp::Int(be(bytes, 4) as i64),
        0xcf => Mp::Int(be(bytes, 8) as i64),
        0xd0 => Mp::Int(i64::from(be(bytes, 1) as u8 as i8)),
        0xd1 => Mp::Int(i64::from(be(bytes, 2) as u16 as i16)),
        0xd2 => Mp::Int(i64::from(be(bytes, 4) as u32 as i32)),
        0xd3 => Mp::Int(be(bytes, 8) as i64),
        0xca => Mp::Float(f64::from(f32::from_bits(be(bytes, 4) as u32))),
        0xcb => Mp::Float(f64::from_bits(be(bytes, 8))),
        other => panic!("unexpected msgpack tag {other:#x}"),
    }
}

/// A job record's fields, in `lib.lua`'s R_KEY.. order.
#[derive(Debug)]
struct Record {
    key: String,
    seq: u64,
    state: String,
    attempts: u64,
    lease_no: Option<u64>,
    token: Option<String>,
    lease_expires_at: Option<u64>,
    available_at: Option<u64>,
    /// When its first attempt started (cleared when sent back from dead).
    started_at: Option<u64>,
    next: Option<String>,
    /// The outcome the lease `lease_no` produced (its token is kept with it
    /// for repeats); `None` while leased or when no lease produced one.
    outcome: Option<String>,
    /// The lease number and token of the latest earlier lease that produced
    /// an outcome, once the job was leased again after it.
    prev: Option<(u64, String)>,
}

fn record(id: &str, bytes: &[u8]) -> Record {
    let f = unpack(bytes);
    assert!(
        f.len() == 17 || f.len() == 18,
        "record of {id} has {} fields: {f:?}",
        f.len()
    );
    let prev = f.get(17).map(|p| match p {
        Mp::Array(p) if p.len() == 3 => (
            p[0].int().expect("a lease number"),
            p[1].str().expect("a token").to_owned(),
        ),
        other => panic!("record of {id}: an earlier outcome {other:?}"),
    });
    let opt_int = |i: usize| (!f[i].absent()).then(|| f[i].int().expect("an integer field"));
    let opt_str =
        |i: usize| (!f[i].absent()).then(|| f[i].str().expect("a string field").to_owned());
    Record {
        key: opt_str(0).unwrap_or_default(),
        seq: f[1].int().expect("seq"),
        state: opt_str(2).expect("state"),
        attempts: opt_int(3).unwrap_or(0),
        lease_no: opt_int(5),
        token: opt_str(6),
        lease_expires_at: opt_int(7),
        available_at: opt_int(9),
        started_at: opt_int(10),
        next: opt_str(14),
        outcome: opt_str(15),
        prev,
    }
}

/// Whether job `id` is still active under `lease` (read raw).
pub async fn holds(conn: &mut MultiplexedConnection, k: &Keys, id: &str, lease: &Lease) -> bool {
    let bytes: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(&k.jobs)
        .arg(id)
        .query_async(conn)
        .await
        .expect("a record read");
    bytes.is_some_and(|b| {
        let r = record(id, &b);
        r.state == "active"
            && r.lease_no == Some(lease.number)
            && r.token.as_deref() == Some(lease.token.as_str())
    })
}

fn scores(set: &Scored) -> BTreeMap<&str, u64> {
    set.iter().map(|(m, s)| (m.as_str(), *s as u64)).collect()
}

fn state_of(name: &str) -> JobState {
    JobState::parse(name).unwrap_or_else(|| panic!("unknown state {name:?}"))
}

/// Checks the raw invariants of `d` and that it holds what `m` says.
pub fn check(d: &Dump, m: &Model) {
    let records: BTreeMap<&str, Record> = d
        .jobs
        .iter()
        .map(|(id, bytes)| (id.as_str(), record(id, bytes)))
        .collect();

    // Records: every job the model knows, as the model says.
    assert_eq!(records.len(), m.jobs.len(), "stored records");
    for job in m.jobs.values() {
        let r = records
            .get(job.id.as_str())
            .unwrap_or_else(|| panic!("no record for seq {}", job.seq));
        let at = format!("seq {}: {r:?}", job.seq);
        assert_eq!(r.seq, job.seq, "{at}");
        assert_eq!(r.key, LANES[job.lane], "{at}");
        assert_eq!(r.state, job.state.as_str(), "{at}");
        assert_eq!(r.attempts, u64::from(job.attempts), "{at}: attempts");
        assert_eq!(r.started_at.is_some(), job.started, "{at}: started_at");
        match &job.lease {
            Some(held) => {
                assert_eq!(r.lease_no, Some(held.lease.number), "{at}: lease number");
                assert_eq!(
                    r.token.as_deref(),
                    Some(held.lease.token.as_str()),
                    "{at}: token"
                );
                assert_eq!(
                    r.lease_expires_at,
                    Some(held.expires_at),
                    "{at}: lease expiry"
                );
            }
            // A token outlives its lease only beside the outcome it produced.
            None if r.outcome.is_none() => {
                assert_eq!(r.token, None, "{at}: a token without a lease")
            }
            None => assert!(r.state != "active", "{at}: an outcome while leased"),
        }
        if job.state == JobState::Delayed {
            assert_eq!(r.available_at, job.available_at, "{at}: availability");
        }
        let prev = m
            .prev_outcomes
            .get(&job.seq)
            .map(|l| (l.number, l.token.clone()));
        assert_eq!(r.prev, prev, "{at}: the earlier lease's outcome");
    }

    // Lanes: each chain runs from head to tail through `next`, `len` jobs,
    // all unfinished, in seq order (a started head may precede older jobs
    // sent back behind it), and holds the model's lane.
    let lanes: BTreeSet<&str> = d.lanes.keys().map(String::as_str).collect();
    let model_lanes: BTreeSet<&str> = (0..LANES.len())
        .filter(|l| !m.lanes[*l].jobs.is_empty())
        .map(|l| LANES[l])
        .collect();
    assert_eq!(lanes, model_lanes, "lanes");
    let mut heads = BTreeMap::new();
    for (lane, bytes) in &d.lanes {
        let l = unpack(bytes);
        let (head, tail, len) = (
            l[0].str().expect("head").to_owned(),
            l[1].str().expect("tail").to_owned(),
            l[2].int().expect("len"),
        );
        let mut chain = Vec::new();
        let mut at = Some(head.clone());
        while let Some(id) = at {
            assert!(
                chain.len() as u64 <= len,
                "lane {lane}: chain longer than {len}"
            );
            let r = records
                .get(id.as_str())
                .unwrap_or_else(|| panic!("lane {lane}: no record {id}"));
            assert_eq!(&r.key, lane, "lane {lane}: chains a job of lane {}", r.key);
            assert!(
                unfinished(state_of(&r.state)),
                "lane {lane}: chains a {} job",
                r.state
            );
            if r.next.is_none() {
                assert_eq!(id, tail, "lane {lane}: chain ends before its tail");
            }
            chain.push(r.seq);
            at = r.next.clone();
        }
        assert_eq!(chain.len() as u64, len, "lane {lane}: length");
        assert!(
            chain.windows(2).skip(1).all(|w| w[0] < w[1]),
            "lane {lane}: {chain:?}"
        );
        let h = &records[head.as_str()];
        let started = h.attempts > 0
            || h.started_at.is_some()
            || matches!(h.state.as_str(), "active" | "blocked");
        assert!(
            started || chain.len() < 2 || chain[0] < chain[1],
            "lane {lane}: {chain:?}"
        );
        let index = LANES.iter().position(|x| x == lane).unwrap();
        let expected: Vec<u64> = m.lanes[index].jobs.iter().copied().collect();
        assert_eq!(chain, expected, "lane {lane}");
        heads.insert(lane.as_str(), h);
    }

    // Ready: a lane is in it iff its head is neither leased nor blocked,
    // at a time within what the model knows.
    let ready = scores(&d.ready);
    for (lane, head) in &heads {
        let startable = !matches!(head.state.as_str(), "active" | "blocked");
        assert_eq!(
            ready.contains_key(lane),
            startable,
            "lane {lane} in ready, head {head:?}"
        );
    }
    for (lane, score) in &ready {
        assert!(heads.contains_key(lane), "ready lane {lane} has no jobs");
        let index = LANES.iter().position(|x| x == lane).unwrap();
        let span = m.lanes[index]
            .ready
            .unwrap_or_else(|| panic!("lane {lane} ready, the model's not"));
        assert!(
            span.lo <= *score && *score <= span.hi,
            "lane {lane} ready at {score}, expected within {span:?}"
        );
    }

    // Leases: exactly the active jobs, by lease expiry.
    let leases = scores(&d.leases);
    let active: BTreeMap<&str, u64> = records
        .iter()
        .filter(|(_, r)| r.state == "active")
        .map(|(id, r)| (*id, r.lease_expires_at.expect("an active job's expiry")))
        .collect();
    assert_eq!(leases, active, "leases");

    // Pending, delayed, dead, blocked: by state.
    let by_state = |pick: &dyn Fn(&Record) -> bool, score: &dyn Fn(&Record) -> u64| {
        records
            .iter()
            .filter(|(_, r)| pick(r))
            .map(|(id, r)| (*id, score(r)))
            .collect::<BTreeMap<&str, u64>>()
    };
    let seq = |r: &Record| r.seq;
    let pending = by_state(&|r| unfinished(state_of(&r.state)), &seq);
    // Unfinished jobs are counted in the meta hash (no index of them).
    let counted = d
        .meta
        .get("pending")
        .map_or(0, |v| v.parse::<i64>().unwrap());
    assert_eq!(counted, pending.len() as i64, "pending count");
    assert!(
        d.pending.is_empty(),
        "the old pending index is written again"
    );
    let delayed = by_state(&|r| r.state == "delayed", &|r| {
        r.available_at.expect("availability")
    });
    assert_eq!(scores(&d.delayed), delayed, "delayed");
    assert_eq!(
        scores(&d.dead),
        by_state(&|r| r.state == "dead", &seq),
        "dead"
    );
    assert_eq!(
        scores(&d.blocked),
        by_state(&|r| r.state == "blocked", &seq),
        "blocked"
    );

    // Group indexes.
    let first_ready = ready.values().min().copied();
    let due = if m.push && !m.paused {
        first_ready
    } else {
        None
    };
    let entry = d.due.map(|s| s as u64);
    assert_eq!(entry, due, "push due index");
    match (d.lease_due, leases.values().min()) {
        (Some(entry), Some(first)) => {
            assert!(entry as u64 <= *first, "lease index {entry} after {first}")
        }
        (None, None) => {}
        // Without leases the entry schedules trimming: some finished job's
        // retention ends then.
        (Some(_), None)
            if records
                .values()
                .any(|r| matches!(r.state.as_str(), "completed" | "cancelled")) => {}
        (entry, first) => panic!("lease index {entry:?}, earliest lease {first:?}"),
    }
    assert_eq!(d.live.is_some(), !pending.is_empty(), "live set");

    // Totals.
    let total = |name: &str| d.meta.get(name).map_or(0, |v| v.parse::<u64>().unwrap());
    assert_eq!(total("completed"), m.completed, "completed total");
    assert_eq!(total("cancelled"), m.cancelled, "cancelled total");
}
