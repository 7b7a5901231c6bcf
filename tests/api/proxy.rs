//! A TCP proxy between Orderly and Redis that can lose a reply: the request
//! carrying a marker reaches Redis (and runs there), then the connection is
//! cut before Redis' answer gets back — the "outcome unknown" case of a real
//! network. Everything else passes through unchanged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Shared {
    /// The marker of the next request whose reply is lost.
    armed: Mutex<Option<Vec<u8>>>,
    dropped: AtomicUsize,
}

pub struct LossyProxy {
    /// `redis://127.0.0.1:<port>` of the proxy.
    pub url: String,
    shared: Arc<Shared>,
}

impl LossyProxy {
    /// Listens on a free loopback port and forwards to the Redis at `target`
    /// (a `redis://host:port` URL).
    pub async fn start(target: &str) -> Self {
        let upstream = target
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        actix_web::rt::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                actix_web::rt::spawn(relay(client, server, accepting.clone()));
            }
        });
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            shared,
        }
    }

    /// The next request that contains `marker` runs in Redis, but its
    /// connection is cut before the reply is forwarded.
    pub fn lose_reply_to(&self, marker: &str) {
        *self.shared.armed.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    /// How many replies were lost so far.
    pub fn lost(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let doomed = Arc::new(AtomicBool::new(false));
    let doom = doomed.clone();
    let marks = shared.clone();
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            {
                let mut armed = marks.armed.lock().unwrap();
                if armed.as_ref().is_some_and(|m| contains(&buf[..n], m)) {
                    *armed = None;
                    doom.store(true, Ordering::SeqCst);
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if doomed.load(Ordering::SeqCst) {
                // Redis ran the request; its answer is lost with the
                // connection.
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever side ends first ends both (dropping the halves closes them).
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
