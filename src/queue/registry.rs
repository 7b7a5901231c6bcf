//! Queue definitions: the MongoDB `queues` collection and an in-process cache.
//!
//! The cache keeps publishing and delivery off MongoDB: a definition is read
//! from MongoDB at most once per [`CACHE_TTL`] per process, in the background
//! once cached, and the cached copy keeps serving while MongoDB is down. Every definition loaded or written is mirrored
//! into Redis (`Engine::configure`) so the engine scripts know the queue's mode,
//! pause flag, exhaustion policy and retention. The registry never touches jobs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson::{self, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::engine::{Engine, EngineConf};
use super::model::{Backoff, Delivery, OnExhausted, QueueName, QueueRef, QueueSettings};
use crate::configuration::QueueDefaults;

/// How long a cached definition is trusted before MongoDB is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

const DUPLICATE_KEY: i32 = 11000;

/// A stored queue definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueDefinition {
    #[serde(rename = "_id")]
    pub tag: String,
    pub owner: String,
    pub name: String,
    pub settings: QueueSettings,
    pub paused: bool,
    /// HMAC key for push signatures; shown to the owner once.
    pub signing_secret: Option<String>,
    pub created_at: bson::DateTime,
    pub updated_at: bson::DateTime,
    /// The push URL parsed, once per cached definition rather than once per
    /// delivery; a cache of `settings`, `Default::default()` when made.
    #[serde(skip)]
    pub push_url: std::sync::OnceLock<Option<reqwest::Url>>,
}

impl QueueDefinition {
    /// The parsed push URL (`None` for pull delivery or an unparsable URL,
    /// which `PUT` never stores).
    pub fn push_url(&self) -> Option<&reqwest::Url> {
        self.push_url
            .get_or_init(|| match &self.settings.delivery {
                super::model::Delivery::Push { url, .. } => reqwest::Url::parse(url).ok(),
                super::model::Delivery::Pull => None,
            })
            .as_ref()
    }

    pub fn queue_ref(&self) -> Option<QueueRef> {
        QueueRef::from_tag(&self.tag)
    }

    fn engine_conf(&self) -> EngineConf {
        EngineConf {
            push: self.settings.delivery.is_push(),
            paused: self.paused,
            on_exhausted: self.settings.on_exhausted.as_str(),
            retention_s: self.settings.retention_s,
            rate_limit: self
                .settings
                .rate_limit
                .map(|limit| (limit.per_second, limit.burst)),
            max_active: self.settings.max_active_lanes,
            version: self.updated_at.timestamp_millis().max(0) as u64,
        }
    }

    pub fn created_at_rfc3339(&self) -> String {
        rfc3339(self.created_at)
    }

    pub fn updated_at_rfc3339(&self) -> String {
        rfc3339(self.updated_at)
    }
}

fn rfc3339(at: bson::DateTime) -> String {
    DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis())
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Why the registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Engine(#[from] super::engine::EngineError),
    /// Other writers changed the definition each time this one tried.
    #[error("the queue's settings kept changing under concurrent writes")]
    Contended,
}

/// Result of a `PUT`.
pub struct Upserted {
    pub definition: Arc<QueueDefinition>,
    pub created: bool,
    /// Set when this write generated the signing secret (shown once).
    pub new_signing_secret: Option<String>,
}

/// A cached definition by its standing (`look`).
enum Cached {
    Fresh(Arc<QueueDefinition>),
    Stale(Arc<QueueDefinition>),
    /// Another process announced newer settings.
    Outdated(Arc<QueueDefinition>),
}

struct CacheEntry {
    definition: Arc<QueueDefinition>,
    fetched: Instant,
    /// Another process announced newer settings (`outdated`).
    outdated: bool,
}

#[derive(Clone)]
pub struct QueueRegistry {
    queues: Collection<QueueDefinition>,
    engine: Engine,
    defaults: QueueDefaults,
    cache: Arc<RwLock<HashMap<String, CacheEntry>>>,
    /// Tags whose background refresh is running (one at a time per queue).
    refreshing: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// One lock per tag, held while a request reads (or creates) an uncached
    /// definition: concurrent requests for a queue that is not cached yet
    /// (the first publishes to a new queue) wait for that one MongoDB round
    /// trip and then read the cache, instead of each asking MongoDB.
    loading: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Conditional writes a `PUT` tries before it gives up (`Contended`).
const PUT_ATTEMPTS: usize = 16;

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    matches!(err.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY)
}

fn generate_signing_secret() -> String {
    format!(
        "whsec_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl QueueRegistry {
    pub fn new(db: &Database, engine: Engine, defaults: QueueDefaults) -> Self {
        Self {
            queues: db.collection("queues"),
            engine,
            defaults,
            cache: Arc::new(RwLock::new(HashMap::new())),
            refreshing: Arc::default(),
            loading: Arc::default(),
        }
    }

    /// Settings of a queue created without any: pull delivery and the
    /// configured defaults.
    pub fn default_settings(&self) -> QueueSettings {
        QueueSettings {
            delivery: Delivery::Pull,
            max_attempts: self.defaults.max_attempts,
            backoff: Backoff {
                initial_ms: 1_000,
                max_ms: 300_000,
            },
            on_exhausted: OnExhausted::DeadLetter,
            lease_ms: self.defaults.lease_ms,
            retention_s: self.defaults.retention_s,
            rate_limit: None,
            max_active_lanes: None,
        }
    }

    /// The cached copy, whatever its age.
    fn cached(&self, tag: &str) -> Option<Arc<QueueDefinition>> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.get(tag).map(|entry| entry.definition.clone())
    }

    /// What the cache holds for `tag`, in one look.
    fn look(&self, tag: &str) -> Option<Cached> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let entry = cache.get(tag)?;
        let definition = entry.definition.clone();
        Some(if entry.outdated {
            Cached::Outdated(definition)
        } else if entry.fetched.elapsed() < CACHE_TTL {
            Cached::Fresh(definition)
        } else {
            Cached::Stale(definition)
        })
    }

    fn load_lock(&self, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        loading.entry(tag.to_owned()).or_default().clone()
    }

    fn remember(&self, definition: Arc<QueueDefinition>) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            definition.tag.clone(),
            CacheEntry {
                definition,
                fetched: Instant::now(),
                outdated: false,
            },
        );
    }

    /// Drops the cached definition, so the next read goes to MongoDB.
    pub fn invalidate(&self, queue: &QueueRef) {
        self.forget(&queue.tag());
    }

    /// A process announced version `version` of the queue's settings
    /// (`WakeHub::on_settings_changed`): a cached copy older than that is
    /// read anew on its next use (`cache_decides`). The copy this
    /// process wrote or read is that version, and stays.
    pub fn outdated(&self, tag: &str, version: u64) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = cache.get_mut(tag)
            && entry.definition.engine_conf().version < version
        {
            entry.outdated = true;
        }
    }

    /// The definition as the cache decides it, `None` when nothing is
    /// cached: a fresh copy; a stale one, at once, while a background task
    /// refreshes it (a slow or down MongoDB never delays publishing or
    /// delivery); a copy announced outdated is read from MongoDB now, so the
    /// change applies to this very use (`Some(None)`: the queue is gone) —
    /// or, if MongoDB does not answer, serves on, trusted for another cache
    /// period as when a background refresh fails.
    async fn cache_decides(&self, queue: &QueueRef) -> Option<Option<Arc<QueueDefinition>>> {
        let tag = queue.tag();
        match self.look(&tag)? {
            Cached::Fresh(definition) => Some(Some(definition)),
            Cached::Stale(definition) => {
                self.refresh_in_background(queue, &tag);
                Some(Some(definition))
            }
            Cached::Outdated(definition) => match self.load(queue).await {
                Ok(found) => Some(found),
                Err(err) => {
                    log::warn!(
                        "queue {tag}: keeping the cached definition, reading its change failed: {err}"
                    );
                    self.remember(definition.clone());
                    Some(Some(definition))
                }
            },
        }
    }

    /// Whether this process holds a copy of the queue's definition (of any
    /// age): what it can deliver with while MongoDB does not answer.
    pub fn has_cached(&self, queue: &QueueRef) -> bool {
        self.look(&queue.tag()).is_some()
    }

    fn forget(&self, tag: &str) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.remove(tag);
    }

    /// The queue's definition: as the cache decides it (`cache_decides`),
    /// MongoDB otherwise.
    pub async fn get(
        &self,
        queue: &QueueRef,
    ) -> Result<Option<Arc<QueueDefinition>>, RegistryError> {
        if let Some(decided) = self.cache_decides(queue).await {
            return Ok(decided);
        }
        self.load(queue).await
    }

    /// Reads the definition from MongoDB, mirrors it into Redis and caches it.
    async fn load(&self, queue: &QueueRef) -> Result<Option<Arc<QueueDefinition>>, RegistryError> {
        let tag = queue.tag();
        match self.queues.find_one(doc! { "_id": &tag }).await? {
            Some(found) => {
                // Re-mirrored on every refresh, so Redis regains the queue's
                // conf even if it lost it (restart without AOF, flush).
                let found = Arc::new(found);
                self.engine.configure(queue, &found.engine_conf()).await?;
                self.remember(found.clone());
                Ok(Some(found))
            }
            None => {
                self.forget(&tag);
                Ok(None)
            }
        }
    }

    fn refresh_in_background(&self, queue: &QueueRef, tag: &str) {
        {
            let mut refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            if !refreshing.insert(tag.to_owned()) {
                return;
            }
        }
        let (registry, queue, tag) = (self.clone(), queue.clone(), tag.to_owned());
        actix::spawn(async move {
            if let Err(err) = registry.load(&queue).await {
                log::warn!("queue {tag}: keeping the cached definition, refresh failed: {err}");
                // Trust the stale copy for another period before asking again.
                if let Some(stale) = registry.cached(&tag) {
                    registry.remember(stale);
                }
            }
            let mut refreshing = registry
                .refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            refreshing.remove(&tag);
        });
    }

    /// The queue's definition, creating it with default settings if absent.
    pub async fn get_or_create(
        &self,
        queue: &QueueRef,
    ) -> Result<Arc<QueueDefinition>, RegistryError> {
        if let Some(Some(cached)) = self.cache_decides(queue).await {
            return Ok(cached);
        }
        // One request per uncached queue reads (or creates) it; the others
        // wait for that and then find it cached, instead of all asking MongoDB.
        let tag = queue.tag();
        let lock = self.load_lock(&tag);
        let outcome = {
            let _one_loader = lock.lock().await;
            match self.cached(&tag) {
                Some(loaded) => Ok(loaded),
                None => self.load_or_create(queue).await,
            }
        };
        self.drop_load_lock(&tag, lock);
        outcome
    }

    /// Forgets a tag's load lock once nobody else holds or awaits it, so
    /// the map does not grow with every queue name ever published to.
    fn drop_load_lock(&self, tag: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are only made under this mutex: 2 = the map's and ours.
        if Arc::strong_count(&lock) == 2 {
            loading.remove(tag);
        }
    }

    async fn load_or_create(
        &self,
        queue: &QueueRef,
    ) -> Result<Arc<QueueDefinition>, RegistryError> {
        if let Some(found) = self.load(queue).await? {
            return Ok(found);
        }
        let now = bson::DateTime::now();
        let definition = QueueDefinition {
            tag: queue.tag(),
            owner: queue.owner.clone(),
            name: queue.name.as_str().to_owned(),
            settings: self.default_settings(),
            paused: false,
            signing_secret: None,
            created_at: now,
            updated_at: now,
            push_url: Default::default(),
        };
        match self.queues.insert_one(&definition).await {
            Ok(_) => {
                log::info!("queue created implicitly queue={}", definition.name);
                self.engine
                    .configure(queue, &definition.engine_conf())
                    .await?;
                let definition = Arc::new(definition);
                self.remember(definition.clone());
                Ok(definition)
            }
            Err(err) if is_duplicate_key(&err) => {
                // Created by another process meanwhile.
                self.forget(&queue.tag());
                self.load(queue).await?.ok_or(err.into())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Creates or replaces the queue's settings (pause state is kept).
    pub async fn put(
        &self,
        queue: &QueueRef,
        settings: QueueSettings,
    ) -> Result<Upserted, RegistryError> {
        // Each write is conditional on what was read — a creation on the id
        // being free, an update on `updated_at` being unchanged — and is
        // retried from a fresh read when another writer (of any process)
        // got there first. So concurrent PUTs of a new push queue create it
        // once (one `201` and one signing secret; the others update it and
        // answer `200`), and no write is lost to a stale read. Within a
        // process the queue's writers take turns (its load lock), so only
        // writers of other processes can make a round lose; a lost round
        // waits a few random milliseconds before the next.
        let tag = queue.tag();
        let lock = self.load_lock(&tag);
        let outcome = {
            let _turn = lock.lock().await;
            self.put_conditionally(queue, &tag, settings).await
        };
        self.drop_load_lock(&tag, lock);
        outcome
    }

    /// `put`'s conditional writes, retried from a fresh read.
    async fn put_conditionally(
        &self,
        queue: &QueueRef,
        tag: &str,
        settings: QueueSettings,
    ) -> Result<Upserted, RegistryError> {
        for attempt in 0..PUT_ATTEMPTS {
            if attempt > 0 {
                let pause = fastrand::u64(1..=5 * attempt as u64);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let existing = self.queues.find_one(doc! { "_id": tag }).await?;
            let now = match &existing {
                Some(e) => later_than(e.updated_at),
                None => bson::DateTime::now(),
            };
            let mut new_signing_secret = None;
            let signing_secret = match existing.as_ref().and_then(|e| e.signing_secret.clone()) {
                Some(secret) => Some(secret),
                None if settings.delivery.is_push() => {
                    let secret = generate_signing_secret();
                    new_signing_secret = Some(secret.clone());
                    Some(secret)
                }
                None => None,
            };
            let definition = QueueDefinition {
                tag: tag.to_owned(),
                owner: queue.owner.clone(),
                name: queue.name.as_str().to_owned(),
                settings: settings.clone(),
                paused: existing.as_ref().is_some_and(|e| e.paused),
                signing_secret,
                created_at: existing.as_ref().map_or(now, |e| e.created_at),
                updated_at: now,
                push_url: Default::default(),
            };
            let written = match &existing {
                None => match self.queues.insert_one(&definition).await {
                    Ok(_) => true,
                    Err(err) if is_duplicate_key(&err) => false,
                    Err(err) => return Err(err.into()),
                },
                Some(read) => {
                    let filter = doc! { "_id": tag, "updated_at": read.updated_at };
                    self.queues
                        .replace_one(filter, &definition)
                        .await?
                        .matched_count
                        == 1
                }
            };
            if !written {
                continue;
            }
            self.engine
                .configure(queue, &definition.engine_conf())
                .await?;
            let definition = Arc::new(definition);
            self.remember(definition.clone());
            return Ok(Upserted {
                definition,
                created: existing.is_none(),
                new_signing_secret,
            });
        }
        Err(RegistryError::Contended)
    }

    /// Sets the pause flag; `None` if the queue does not exist. Written as
    /// `put` writes: conditional on the `updated_at` read and stamped
    /// strictly later, retried from a fresh read, taking turns with the
    /// process's other writers of the queue. (Stamped with the clock alone,
    /// a pause could carry an older version than the settings it changed —
    /// another process's clock behind, or a PUT of the same millisecond —
    /// and Redis keeps the newer copy, so the queue would not pause, or a
    /// racing PUT would write back the flag it read.)
    pub async fn set_paused(
        &self,
        queue: &QueueRef,
        paused: bool,
    ) -> Result<Option<Arc<QueueDefinition>>, RegistryError> {
        let tag = queue.tag();
        let lock = self.load_lock(&tag);
        let outcome = {
            let _turn = lock.lock().await;
            self.set_paused_conditionally(queue, &tag, paused).await
        };
        self.drop_load_lock(&tag, lock);
        outcome
    }

    async fn set_paused_conditionally(
        &self,
        queue: &QueueRef,
        tag: &str,
        paused: bool,
    ) -> Result<Option<Arc<QueueDefinition>>, RegistryError> {
        for attempt in 0..PUT_ATTEMPTS {
            if attempt > 0 {
                let pause = fastrand::u64(1..=5 * attempt as u64);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let Some(read) = self.queues.find_one(doc! { "_id": tag }).await? else {
                return Ok(None);
            };
            let updated = self
                .queues
                .find_one_and_update(
                    doc! { "_id": tag, "updated_at": read.updated_at },
                    doc! { "$set": { "paused": paused, "updated_at": later_than(read.updated_at) } },
                )
                .return_document(mongodb::options::ReturnDocument::After)
                .await?;
            let Some(updated) = updated else {
                continue;
            };
            self.engine.configure(queue, &updated.engine_conf()).await?;
            let updated = Arc::new(updated);
            self.remember(updated.clone());
            return Ok(Some(updated));
        }
        Err(RegistryError::Contended)
    }

    /// The owner's queues, by name.
    pub async fn list(&self, owner: &str) -> Result<Vec<QueueDefinition>, RegistryError> {
        use futures_util::TryStreamExt;
        let cursor = self
            .queues
            .find(doc! { "owner": owner })
            .sort(doc! { "name": 1 })
            .await?;
        Ok(cursor.try_collect().await?)
    }

    /// Deletes the definition and every job of the queue; `false` if absent.
    pub async fn delete(&self, queue: &QueueRef) -> Result<bool, RegistryError> {
        let tag = queue.tag();
        let deleted = self.queues.delete_one(doc! { "_id": &tag }).await?;
        self.forget(&tag);
        self.engine.delete_queue(queue).await?;
        Ok(deleted.deleted_count > 0)
    }
}

/// A new `updated_at` for a definition read with `read`: now, but strictly
/// later than `read`, so a conditional write can never match a newer write of
/// the same millisecond, and the settings version it makes (`engine_conf`)
/// is newer than the one it replaces whatever the clocks of the processes.
fn later_than(read: bson::DateTime) -> bson::DateTime {
    bson::DateTime::from_millis(
        bson::DateTime::now()
            .timestamp_millis()
            .max(read.timestamp_millis() + 1),
    )
}

/// Validates a queue name taken from a path.
pub fn queue_ref(owner: &str, raw_name: &str) -> Result<QueueRef, String> {
    QueueName::parse(raw_name).map(|name| QueueRef::new(owner, name))
}
