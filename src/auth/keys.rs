//! API keys (`ok_…`): scoped, queue-restricted, revocable credentials for
//! machine clients, stored in the MongoDB `api_keys` collection
//! `{_id, owner, name, prefix, hash, scopes, queues, expires_at, created_at,
//! last_used_at}` with a unique index on `hash`.
//!
//! The secret is shown once, at creation; only its SHA-256 (hex) is stored.
//! Verified keys are cached in-process (moka) for at most [`CACHE_TTL`], so a
//! request with a key costs no MongoDB round trip, and a key deleted in any
//! process stops working in every process within that time plus one lookup.
//! `last_used_at` is written at most once per [`TOUCH_EVERY`] per key and
//! process, off the request path. This module never decides what a key may
//! do on a route; [`super::caller`] does.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use utoipa::ToSchema;

/// Every API key starts with this; bearer tokens that do are never JWTs.
pub const KEY_PREFIX: &str = "ok_";
/// Random bytes in a key (hex-encoded after [`KEY_PREFIX`]).
pub const KEY_BYTES: usize = 32;
/// Longest key name.
pub const MAX_NAME_CHARS: usize = 100;
/// Most queue names one key may be restricted to.
pub const MAX_KEY_QUEUES: usize = 100;
/// Most keys one user may hold.
pub const MAX_KEYS_PER_USER: u64 = 100;
/// How long a verified (or unknown) key is trusted without asking MongoDB:
/// the bound on how late a revocation reaches another process.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// `last_used_at` is written at most this often per key and process.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What a key may do. `manage` covers queue settings, pause/resume and dead
/// letters; no scope covers `/v1/auth/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Publish,
    Consume,
    Manage,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Consume => "consume",
            Scope::Manage => "manage",
        }
    }
}

/// A verified key: whose it is and what it may touch.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    pub id: String,
    pub owner: String,
    pub scopes: Vec<Scope>,
    /// `None`: every queue of the owner (`["*"]`).
    pub queues: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl KeyGrant {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    pub fn has_any(&self, scopes: &[Scope]) -> bool {
        scopes.iter().any(|s| self.scopes.contains(s))
    }

    pub fn covers_queue(&self, queue: &str) -> bool {
        self.queues
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == queue))
    }
}

/// A key as `GET /v1/auth/keys` shows it: never the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    #[schema(example = "0193b1c2d3e4f5a6b7c8d9e0f1a2b3c4")]
    pub id: String,
    #[schema(example = "billing worker")]
    pub name: String,
    /// The key's first characters, to tell keys apart.
    #[schema(example = "ok_3fa9c1")]
    pub prefix: String,
    pub scopes: Vec<Scope>,
    /// `["*"]` for every queue, else the queue names.
    pub queues: Vec<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: String,
    /// Updated at most about once a minute.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<String>,
}

/// `POST /v1/auth/keys` answer: the key object plus the secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// Send as `Authorization: Bearer <key>`. Shown only in this response.
    #[schema(example = "ok_3fa9c1d2e5b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7")]
    pub key: String,
}

/// A validated key request (see `routes::auth::NewKeyBody`).
#[derive(Debug)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub queues: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyDocument {
    #[serde(rename = "_id")]
    id: String,
    owner: String,
    name: String,
    prefix: String,
    hash: String,
    scopes: Vec<Scope>,
    queues: Vec<String>,
    expires_at: Option<bson::DateTime>,
    created_at: bson::DateTime,
    last_used_at: Option<bson::DateTime>,
}

fn chrono_of(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

fn rfc3339(at: bson::DateTime) -> String {
    chrono_of(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl KeyDocument {
    fn view(&self) -> ApiKey {
        ApiKey {
            id: self.id.clone(),
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            scopes: self.scopes.clone(),
            queues: self.queues.clone(),
            expires_at: self.expires_at.map(rfc3339),
            created_at: rfc3339(self.created_at),
            last_used_at: self.last_used_at.map(rfc3339),
        }
    }

    fn grant(&self) -> KeyGrant {
        KeyGrant {
            id: self.id.clone(),
            owner: self.owner.clone(),
            scopes: self.scopes.clone(),
            queues: (!self.queues.iter().any(|q| q == "*")).then(|| self.queues.clone()),
            expires_at: self.expires_at.map(chrono_of),
        }
    }
}

/// Why the key store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the user holds the most keys allowed")]
    TooMany,
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("no randomness: {0}")]
    Random(#[from] getrandom::Error),
}

/// SHA-256 (hex) of a presented key: what the store is searched by.
fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh secret from the operating system's CSPRNG.
fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

/// The key store and its verification cache; cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Collection<KeyDocument>,
    indexed: Arc<OnceCell<()>>,
    /// hash → grant (`None`: no such key), trusted for [`CACHE_TTL`].
    verified: moka::future::Cache<String, Option<Arc<KeyGrant>>>,
    /// Key ids whose `last_used_at` was written in the last [`TOUCH_EVERY`].
    touched: moka::future::Cache<String, ()>,
}

impl ApiKeys {
    pub fn new(db: &Database) -> Self {
        Self {
            keys: db.collection("api_keys"),
            indexed: Arc::new(OnceCell::new()),
            verified: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
            touched: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TOUCH_EVERY)
                .build(),
        }
    }

    async fn ensure_indexes(&self) -> Result<(), KeyError> {
        self.indexed
            .get_or_try_init(|| async {
                let by_hash = IndexModel::builder()
                    .keys(doc! { "hash": 1 })
                    .options(
                        IndexOptions::builder()
                            .unique(true)
                            .name("hash_unique".to_owned())
                            .build(),
                    )
                    .build();
                let by_owner = IndexModel::builder().keys(doc! { "owner": 1 }).build();
                self.keys
                    .create_indexes([by_hash, by_owner])
                    .await
                    .map(|_| ())
            })
            .await?;
        Ok(())
    }

    /// Stores a new key for `owner`; the answer holds the secret, once.
    pub async fn create(&self, owner: &str, new: NewKey) -> Result<CreatedKey, KeyError> {
        self.ensure_indexes().await?;
        if self.keys.count_documents(doc! { "owner": owner }).await? >= MAX_KEYS_PER_USER {
            return Err(KeyError::TooMany);
        }
        let secret = generate_secret()?;
        let document = KeyDocument {
            id: uuid::Uuid::now_v7().simple().to_string(),
            owner: owner.to_owned(),
            name: new.name,
            prefix: secret[..KEY_PREFIX.len() + 6].to_owned(),
            hash: digest(&secret),
            scopes: new.scopes,
            queues: new.queues.unwrap_or_else(|| vec!["*".to_owned()]),
            expires_at: new
                .expires_at
                .map(|at| bson::DateTime::from_millis(at.timestamp_millis())),
            created_at: bson::DateTime::now(),
            last_used_at: None,
        };
        self.keys.insert_one(&document).await?;
        log::info!("api key created key_id={} user_id={owner}", document.id);
        Ok(CreatedKey {
            api_key: document.view(),
            key: secret,
        })
    }

    /// The owner's keys, oldest first.
    pub async fn list(&self, owner: &str) -> Result<Vec<ApiKey>, KeyError> {
        use futures_util::TryStreamExt;
        let documents: Vec<KeyDocument> = self
            .keys
            .find(doc! { "owner": owner })
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(documents.iter().map(KeyDocument::view).collect())
    }

    /// Deletes the owner's key `id`; `false` if the owner has no such key.
    pub async fn delete(&self, owner: &str, id: &str) -> Result<bool, KeyError> {
        let deleted = self
            .keys
            .find_one_and_delete(doc! { "_id": id, "owner": owner })
            .await?;
        let Some(document) = deleted else {
            return Ok(false);
        };
        // This process forgets it at once; the others within CACHE_TTL.
        self.verified.invalidate(&document.hash).await;
        log::info!("api key revoked key_id={id} user_id={owner}");
        Ok(true)
    }

    /// The grant of a presented key, `None` for an unknown or revoked one
    /// (expiry is the caller's check, against the grant's `expires_at`).
    pub async fn verify(&self, key: &str) -> Result<Option<Arc<KeyGrant>>, Arc<KeyError>> {
        let hash = digest(key);
        let grant = self
            .verified
            .try_get_with(hash.clone(), async {
                let found = self.keys.find_one(doc! { "hash": &hash }).await?;
                Ok::<_, KeyError>(found.map(|d| Arc::new(d.grant())))
            })
            .await?;
        // Only a use that is let in counts: an expired key is refused.
        if let Some(grant) = &grant
            && !grant.is_expired(Utc::now())
        {
            self.touch(&grant.id).await;
        }
        Ok(grant)
    }

    /// Records a use, writing `last_used_at` at most once per [`TOUCH_EVERY`].
    async fn touch(&self, id: &str) {
        let entry = self.touched.entry(id.to_owned()).or_insert(()).await;
        if !entry.is_fresh() {
            return;
        }
        let keys = self.keys.clone();
        let id = id.to_owned();
        actix_web::rt::spawn(async move {
            let now = bson::DateTime::now();
            if let Err(err) = keys
                .update_one(
                    doc! { "_id": &id },
                    doc! { "$set": { "last_used_at": now } },
                )
                .await
            {
                log::warn!("could not record the use of key_id={id}: {err}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_long_and_distinct() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 2 * KEY_BYTES);
        assert_ne!(a, b);
        assert_eq!(digest(&a).len(), 64);
    }

    #[test]
    fn a_grant_covers_its_queues_and_scopes_only() {
        let grant = KeyGrant {
            id: "k".into(),
            owner: "u".into(),
            scopes: vec![Scope::Consume],
            queues: Some(vec!["emails".into()]),
            expires_at: None,
        };
        assert!(grant.covers_queue("emails"));
        assert!(!grant.covers_queue("other"));
        assert!(grant.has_any(&[Scope::Publish, Scope::Consume]));
        assert!(!grant.has_any(&[Scope::Manage]));
    }
}
