//! The MongoDB `users` collection: `{_id, email, password_hash, created_at}`
//! with a unique index on `email`.
//!
//! Only the auth actor calls this store. The index is created on first use and
//! retried until it exists, so the process can start while MongoDB is down.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson::{self, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::OnceCell;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

fn rfc3339<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[derive(Debug, Serialize, Deserialize)]
struct UserDocument {
    #[serde(rename = "_id")]
    id: String,
    email: String,
    password_hash: String,
    created_at: bson::DateTime,
}

impl UserDocument {
    fn user(&self) -> User {
        User {
            id: self.id.clone(),
            email: self.email.clone(),
            created_at: DateTime::from_timestamp_millis(self.created_at.timestamp_millis())
                .unwrap_or_default(),
        }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a user with this email exists")]
    Duplicate,
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
}

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .iter()
            .flatten()
            .any(|w| w.code == DUPLICATE_KEY),
        _ => false,
    }
}

#[derive(Clone)]
pub struct UserStore {
    users: Collection<UserDocument>,
    indexed: Arc<OnceCell<()>>,
}

impl UserStore {
    pub fn new(db: &Database) -> Self {
        Self {
            users: db.collection("users"),
            indexed: Arc::new(OnceCell::new()),
        }
    }

    /// Creates the unique email index once per process (idempotent on the server).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.indexed
            .get_or_try_init(|| async {
                let index = IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(
                        IndexOptions::builder()
                            .unique(true)
                            .name("email_unique".to_owned())
                            .build(),
                    )
                    .build();
                self.users.create_index(index).await.map(|_| ())
            })
            .await?;
        Ok(())
    }

    /// Inserts a new user; [`StoreError::Duplicate`] if the email is taken.
    pub async fn insert(&self, email: &str, password_hash: String) -> Result<User, StoreError> {
        self.ensure_indexes().await?;
        let document = UserDocument {
            id: uuid::Uuid::now_v7().simple().to_string(),
            email: email.to_owned(),
            password_hash,
            created_at: bson::DateTime::now(),
        };
        match self.users.insert_one(&document).await {
            Ok(_) => Ok(document.user()),
            Err(err) if is_duplicate_key(&err) => Err(StoreError::Duplicate),
            Err(err) => Err(err.into()),
        }
    }

    /// The user with this (normalised) email and their password hash.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<(User, String)>, StoreError> {
        let found = self.users.find_one(doc! { "email": email }).await?;
        Ok(found.map(|d| (d.user(), d.password_hash)))
    }

    pub async fn find_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let found = self.users.find_one(doc! { "_id": id }).await?;
        Ok(found.map(|d| d.user()))
    }
}
