//! `spawn_app()`: every test gets its own Orderly on a free port, its own Redis
//! key prefix and its own MongoDB database, against the real servers named by
//! `REDIS_URL` and `MONGODB_URI` (scripts/test.sh starts them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use orderly::configuration::{Profile, Settings};
use orderly::startup::Application;
use serde_json::{Value, json};

pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub client: reqwest::Client,
    /// The app's own MongoDB database, for reading what it stored.
    pub db: mongodb::Database,
    /// The supervised worker actor, for crash injection (in-process apps only).
    pub worker: Option<actix::Addr<orderly::queue::worker::Worker>>,
    handle: Option<ServerHandle>,
}

/// A test user with a valid token.
pub struct TestUser {
    pub id: String,
    pub token: String,
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The local Redis Cluster the cluster run of the suite uses
/// (`ORDERLY_TEST_CLUSTER_NODES`, comma-separated; scripts/test.sh sets it).
pub fn cluster_nodes() -> Vec<String> {
    std::env::var("ORDERLY_TEST_CLUSTER_NODES")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// Test-profile settings with a fresh key prefix and database.
pub fn test_settings() -> Settings {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut settings = Settings::load(Profile::Test, &dir, false).expect("test settings load");
    let unique = uuid::Uuid::new_v4().simple().to_string();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.redis.url = redis_url();
    // In the cluster run every app uses the cluster instead.
    settings.redis.cluster_nodes = cluster_nodes();
    settings.redis.key_prefix = format!("test-{unique}");
    settings.mongodb.uri = mongodb_uri();
    settings.mongodb.database = format!("orderly_test_{unique}");
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns an app after letting the test adjust its settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut settings = test_settings();
    adjust(&mut settings);
    if settings.redis.url != redis_url() {
        // The test runs its own Redis server: one server, not the cluster.
        settings.redis.cluster_nodes.clear();
    }
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = Some(app.handle());
    let worker = Some(app.worker());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp::attach(address, settings, worker, handle).await
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            drop(handle.stop(false));
        }
    }
}

impl TestApp {
    /// A client for the Orderly at `address` (in-process or a child process).
    pub async fn attach(
        address: String,
        settings: Settings,
        worker: Option<actix::Addr<orderly::queue::worker::Worker>>,
        handle: Option<ServerHandle>,
    ) -> TestApp {
        let client = http_client();
        let mongo = mongodb::Client::with_uri_str(&settings.mongodb.uri)
            .await
            .expect("mongodb client");
        TestApp {
            address,
            db: mongo.database(&settings.mongodb.database),
            settings,
            client,
            worker,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// An HTML page served with `200`: its Content-Security-Policy and body.
    pub async fn page(&self, path: &str) -> (String, String) {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        (csp, response.text().await.unwrap())
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/register",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/login",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Registers and logs in a fresh user.
    pub async fn signed_up_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = "correct horse battery".to_owned();
        let registered = self.register(&email, &password).await;
        assert_eq!(registered.status(), 201);
        let id = body(registered).await["id"].as_str().unwrap().to_owned();
        let login = self.login(&email, &password).await;
        assert_eq!(login.status(), 200);
        let token = body(login).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        TestUser { id, token }
    }

    /// An authenticated request with an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    /// An authenticated `POST` with an optional JSON body.
    pub async fn post(&self, path: &str, token: &str, body: Option<&Value>) -> reqwest::Response {
        self.call(reqwest::Method::POST, path, token, body).await
    }

    pub async fn put_queue(&self, token: &str, name: &str, settings: &Value) -> reqwest::Response {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/queues/{name}"),
            token,
            Some(settings),
        )
        .await
    }

    /// Creates a push queue delivering to `url`; `extra` settings are merged in.
    /// Returns the queue object (with its signing secret).
    pub async fn push_queue(&self, token: &str, name: &str, url: &str, extra: Value) -> Value {
        let mut settings = json!({
            "delivery": {"mode": "push", "url": url, "timeout_ms": 5000},
            "backoff": {"initial_ms": 20, "max_ms": 200},
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            settings[k] = v;
        }
        let response = self.put_queue(token, name, &settings).await;
        assert_eq!(response.status(), 201, "queue not created");
        body(response).await
    }

    pub async fn publish(&self, token: &str, queue: &str, job: &Value) -> reqwest::Response {
        self.post(&format!("/v1/queues/{queue}/jobs"), token, Some(job))
            .await
    }

    /// Publishes and returns the accepted job object.
    pub async fn publish_ok(&self, token: &str, queue: &str, job: &Value) -> Value {
        let response = self.publish(token, queue, job).await;
        assert_eq!(response.status(), 202, "publish refused");
        body(response).await
    }

    pub async fn job(&self, token: &str, id: &str) -> Value {
        let response = self.get_with_token(&format!("/v1/jobs/{id}"), token).await;
        assert_eq!(response.status(), 200, "job {id} not readable");
        body(response).await
    }

    /// Every job of the queue (all pages), optionally of one state.
    pub async fn all_jobs(&self, token: &str, queue: &str, state: Option<&str>) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut after = 0;
        loop {
            let mut path = format!("/v1/queues/{queue}/jobs?limit=1000&after={after}");
            if let Some(state) = state {
                path.push_str(&format!("&state={state}"));
            }
            let page = body(self.get_with_token(&path, token).await).await;
            jobs.extend(page["jobs"].as_array().unwrap().iter().cloned());
            match page["next"].as_u64() {
                Some(next) => after = next,
                None => return jobs,
            }
        }
    }

    /// The queue object with stats.
    pub async fn queue(&self, token: &str, name: &str) -> Value {
        let response = self
            .get_with_token(&format!("/v1/queues/{name}"), token)
            .await;
        assert_eq!(response.status(), 200);
        body(response).await
    }

    /// Waits until the queue has `n` completed jobs and nothing unfinished.
    /// A read answered `503` (Redis connections being re-made after a fault)
    /// is polled again like any other not-yet.
    pub async fn wait_for_completed(&self, token: &str, queue: &str, n: u64, timeout: Duration) {
        eventually(
            timeout,
            &format!("{n} jobs completed in {queue}"),
            || async {
                let response = self
                    .get_with_token(&format!("/v1/queues/{queue}"), token)
                    .await;
                if response.status() == 503 {
                    return None;
                }
                assert_eq!(response.status(), 200);
                let stats = body(response).await["stats"].clone();
                let done = stats["completed"].as_u64() == Some(n)
                    && stats["waiting"] == 0
                    && stats["active"] == 0
                    && stats["delayed"] == 0;
                done.then_some(())
            },
        )
        .await;
    }

    /// A counter's value on `/metrics`.
    pub async fn counter(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn metrics_text(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

/// An engine on the app's Redis under a key prefix of its own: the app's
/// worker never sees its keys, so a test drives the engine by hand.
/// Runs `commands` in order on the app's Redis (its one server, or the
/// cluster, which routes each by its key): for tests that shape data as an
/// outage or an older version would have left it.
pub async fn redis_commands(app: &TestApp, commands: &[redis::Cmd]) {
    let nodes = &app.settings.redis.cluster_nodes;
    if nodes.is_empty() {
        let client = redis::Client::open(app.settings.redis.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for cmd in commands {
            cmd.query_async::<()>(&mut conn).await.unwrap();
        }
    } else {
        let client = redis::cluster::ClusterClient::new(nodes.clone()).unwrap();
        let mut conn = client.get_async_connection().await.unwrap();
        for cmd in commands {
            cmd.query_async::<()>(&mut conn).await.unwrap();
        }
    }
}

pub fn own_engine(app: &TestApp) -> orderly::queue::engine::Engine {
    let mut own = app.settings.redis.clone();
    own.key_prefix = format!("{}-engine", own.key_prefix);
    orderly::queue::engine::Engine::connect(&own).unwrap()
}

/// A reqwest client (reqwest is built without a bundled TLS provider).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The JSON body of a response.
pub async fn body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body read");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts the error contract and returns the error object.
pub async fn error_body(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    assert!(
        response.headers().contains_key("x-request-id"),
        "error response lacks X-Request-Id"
    );
    let body = body(response).await;
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"].is_string(), "body: {body}");
    assert!(
        !body["error"]["request_id"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "body: {body}"
    );
    body["error"].clone()
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A redis-server of the test's own on a free port (for tests that observe
/// server-wide counters or restart Redis), with AOF (`appendfsync everysec`)
/// in a throw-away directory. Killed on drop.
pub struct TestRedis {
    pub url: String,
    port: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
}

/// Waits (at most 10 s) until the Redis server at `url` answers `PING`.
pub async fn wait_until_redis_answers(url: &str) {
    let client = redis::Client::open(url).unwrap();
    eventually(Duration::from_secs(10), "redis-server answers", || async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    })
    .await;
}

/// A throw-away directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("orderly-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestRedis {
    pub async fn start() -> Self {
        let mut redis = Self {
            url: String::new(),
            port: closed_port(),
            child: None,
            dir: TempDir::new(),
        };
        redis.url = format!("redis://127.0.0.1:{}", redis.port);
        redis.resume().await;
        redis
    }

    /// Starts the server (again, on the same port and data).
    pub async fn resume(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "everysec", "--dir"])
            .arg(&self.dir.0)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        wait_until_redis_answers(&self.url).await;
    }

    /// Stops the server gracefully (SIGTERM: the AOF is flushed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Calls per command from INFO commandstats (commands run inside
    /// scripts count too, under their own names).
    pub async fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A MongoDB-wire-protocol server of the test's own (the SecantusDB that
/// scripts/test.sh installs, named by `ORDERLY_TEST_MONGOD`). Killed on drop.
pub struct TestMongo {
    pub uri: String,
    port: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
}

impl TestMongo {
    pub async fn start() -> Self {
        let mut mongo = Self {
            uri: String::new(),
            port: closed_port(),
            child: None,
            dir: TempDir::new(),
        };
        mongo.uri = format!("mongodb://127.0.0.1:{}", mongo.port);
        mongo.resume().await;
        mongo
    }

    pub async fn resume(&mut self) {
        let binary = std::env::var("ORDERLY_TEST_MONGOD").expect(
            "ORDERLY_TEST_MONGOD names the MongoDB-protocol server (scripts/test.sh sets it)",
        );
        let child = std::process::Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(self.dir.0.join("data"))
            .args(["--log-level", "ERROR"])
            .current_dir(&self.dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the MongoDB-protocol server starts");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(30),
            "mongodb-protocol server listens",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestMongo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Engine settings of a plain pull queue, for tests that drive the engine
/// directly (publish refuses a queue whose settings are not in Redis).
pub fn pull_conf() -> orderly::queue::engine::EngineConf {
    orderly::queue::engine::EngineConf {
        push: false,
        paused: false,
        on_exhausted: "dead_letter",
        retention_s: 600,
        rate_limit: None,
        max_active: None,
        version: 1,
    }
}
