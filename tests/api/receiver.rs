//! A real HTTP receiver for push deliveries, started inside the test. It
//! records every delivery (headers and body, in arrival order), answers as the
//! test's behaviour says, and tracks how many deliveries of one lane (and of
//! all lanes) overlap.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub job_id: String,
    pub queue: String,
    pub key: String,
    pub seq: u64,
    pub attempt: u32,
    /// `Orderly-Lease`: the lease number of this delivery.
    pub lease: u64,
    pub signature: String,
    pub body: Vec<u8>,
    /// When the delivery arrived.
    pub at: Instant,
}

/// How the receiver answers one delivery.
pub enum Reply {
    Status(u16),
    /// Hold the request this long, then answer 200.
    Hang(Duration),
    /// Answer 302 to this location.
    Redirect(String),
    /// Answer `status` with this `Retry-After` value.
    RetryAfter(u16, String),
}

type Behaviour = dyn Fn(&Seen) -> Reply + Send + Sync;

struct State {
    seen: Mutex<Vec<Seen>>,
    open_per_lane: Mutex<HashMap<String, usize>>,
    max_open_per_lane: Mutex<usize>,
    /// Deliveries open now and the most ever open at once, over all lanes.
    open_total: Mutex<(usize, usize)>,
    behaviour: Box<Behaviour>,
}

pub struct Receiver {
    pub url: String,
    state: web::Data<State>,
    handle: ServerHandle,
}

fn header(req: &HttpRequest, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let seen = Seen {
        job_id: header(&req, "orderly-job-id"),
        queue: header(&req, "orderly-queue"),
        key: header(&req, "orderly-key"),
        seq: header(&req, "orderly-seq").parse().unwrap_or(0),
        attempt: header(&req, "orderly-attempt").parse().unwrap_or(0),
        lease: header(&req, "orderly-lease").parse().unwrap_or(0),
        signature: header(&req, "orderly-signature"),
        body: body.to_vec(),
        at: Instant::now(),
    };
    let lane = format!("{}/{}", seen.queue, seen.key);
    {
        let mut open = state.open_per_lane.lock().unwrap();
        let n = open.entry(lane.clone()).or_default();
        *n += 1;
        let mut max = state.max_open_per_lane.lock().unwrap();
        *max = (*max).max(*n);
        let mut total = state.open_total.lock().unwrap();
        total.0 += 1;
        total.1 = total.1.max(total.0);
    }
    let reply = (state.behaviour)(&seen);
    let job_id = seen.job_id.clone();
    state.seen.lock().unwrap().push(seen);
    let (status, header) = match reply {
        Reply::Status(code) => (code, None),
        Reply::Hang(duration) => {
            actix_web::rt::time::sleep(duration).await;
            (200, None)
        }
        Reply::Redirect(to) => (302, Some(("location", to))),
        Reply::RetryAfter(code, after) => (code, Some(("retry-after", after))),
    };
    *state.open_per_lane.lock().unwrap().get_mut(&lane).unwrap() -= 1;
    state.open_total.lock().unwrap().0 -= 1;
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(header) = header {
        response.insert_header(header);
    }
    response.json(serde_json::json!({ "got": job_id }))
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub fn ok() -> Self {
        Self::start(|_| Reply::Status(200))
    }

    pub fn start(behaviour: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let state = web::Data::new(State {
            seen: Mutex::new(Vec::new()),
            open_per_lane: Mutex::new(HashMap::new()),
            max_open_per_lane: Mutex::new(0),
            open_total: Mutex::new((0, 0)),
            behaviour: Box::new(behaviour),
        });
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .default_service(web::to(receive))
        })
        .workers(2)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
            handle,
        }
    }

    /// Every delivery so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The most deliveries of one lane that were ever open at once.
    pub fn max_open_per_lane(&self) -> usize {
        *self.state.max_open_per_lane.lock().unwrap()
    }

    /// The most deliveries (of any lanes) that were ever open at once.
    pub fn max_open(&self) -> usize {
        self.state.open_total.lock().unwrap().1
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Per lane key, the seqs in the order they arrived.
pub fn seqs_by_lane(seen: &[Seen]) -> HashMap<String, Vec<u64>> {
    let mut lanes: HashMap<String, Vec<u64>> = HashMap::new();
    for s in seen {
        lanes.entry(s.key.clone()).or_default().push(s.seq);
    }
    lanes
}

/// Per lane (queue, key), the seqs of first deliveries in arrival order.
pub fn first_deliveries(seen: &[Seen]) -> HashMap<(String, String), Vec<u64>> {
    let mut firsts: HashMap<(String, String), Vec<u64>> = HashMap::new();
    let mut delivered = HashSet::new();
    for s in seen {
        if delivered.insert(s.job_id.clone()) {
            firsts
                .entry((s.queue.clone(), s.key.clone()))
                .or_default()
                .push(s.seq);
        }
    }
    firsts
}

/// Every lane's first deliveries arrived in increasing seq order.
pub fn assert_lanes_in_order(seen: &[Seen]) {
    for (lane, seqs) in first_deliveries(seen) {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "lane {lane:?} out of order: {seqs:?}"
        );
    }
}
