//! The real `orderly` binary as a child process, for crash, signal and
//! multi-process tests. Configured only through `ORDERLY__…` variables, like
//! production.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use orderly::configuration::Settings;

use crate::helpers::{TestApp, closed_port, eventually};

pub struct OrderlyProcess {
    child: Child,
    pub address: String,
}

impl OrderlyProcess {
    /// Starts the binary with `settings` (its port is chosen here) and waits
    /// until `/healthz` answers.
    pub async fn start(settings: &Settings) -> Self {
        let port = closed_port();
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
        let child = Command::new(env!("CARGO_BIN_EXE_orderly"))
            .env("ORDERLY_ENV", "test")
            .env("ORDERLY_CONFIG_DIR", config)
            .env("ORDERLY__SERVER__PORT", port.to_string())
            .env(
                "ORDERLY__SERVER__SHUTDOWN_GRACE_S",
                settings.server.shutdown_grace_s.to_string(),
            )
            .env("ORDERLY__REDIS__URL", &settings.redis.url)
            .env(
                "ORDERLY__REDIS__CLUSTER_NODES",
                settings.redis.cluster_nodes.join(","),
            )
            .env("ORDERLY__REDIS__KEY_PREFIX", &settings.redis.key_prefix)
            .env("ORDERLY__MONGODB__URI", &settings.mongodb.uri)
            .env("ORDERLY__MONGODB__DATABASE", &settings.mongodb.database)
            .env(
                "ORDERLY__WORKER__CONCURRENCY",
                settings.worker.concurrency.to_string(),
            )
            .env(
                "ORDERLY__WORKER__LEASE_MS",
                settings.worker.lease_ms.to_string(),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("the orderly binary starts");
        let address = format!("http://127.0.0.1:{port}");
        let probe = crate::helpers::http_client();
        let health = format!("{address}/healthz");
        eventually(
            Duration::from_secs(30),
            "orderly process answers",
            || async {
                let ok = probe.get(&health).send().await.ok()?.status().is_success();
                ok.then_some(())
            },
        )
        .await;
        Self { child, address }
    }

    /// A test client bound to this process.
    pub async fn client(&self, settings: &Settings) -> TestApp {
        TestApp::attach(self.address.clone(), settings.clone(), None, None).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (up to `timeout`) for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("-TERM");
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "orderly did not exit after SIGTERM"
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OrderlyProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
