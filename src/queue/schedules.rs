//! Cron schedules: their definitions in MongoDB (`schedules` collection, one
//! document per owner + queue + name, unique index) and their due ticks in
//! Redis, which every Orderly process reads.
//!
//! Redis keys (both in the one hash slot `{sched}`, so a script may touch both):
//!
//! | key | type | content |
//! |---|---|---|
//! | `P:{sched}:due` | zset | schedule id → ms of its next tick (absent while paused) |
//! | `P:{sched}:last` | hash | schedule id → `<tick ms>:<job id>` of its last published tick |
//!
//! A schedule id is `<owner>:<queue>:<name>`. Ticks are computed by `croner`
//! in the schedule's IANA time zone (`chrono-tz`); this module never parses
//! cron itself. It never publishes: the [`scheduler`](super::scheduler)
//! does, through the normal publish path.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use utoipa::ToSchema;

use super::engine::RedisConn;
use super::model::QueueRef;

/// What to do with ticks missed while no Orderly process ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Skip them: the next job is the next tick's.
    #[default]
    None,
    /// Publish one job for all of them (for the first missed tick), at start.
    One,
}

/// A parsed cron pattern in its time zone: the tick calendar of a schedule.
#[derive(Debug, Clone)]
pub struct Calendar {
    cron: Cron,
    zone: Tz,
}

impl Calendar {
    /// Parses a 5-field (minute first) or 6-field (seconds first) pattern
    /// and an IANA zone name; the reasons name the fields `cron` and `timezone`.
    pub fn parse(cron: &str, timezone: &str) -> Result<Self, BTreeMap<String, String>> {
        let mut invalid = BTreeMap::new();
        let fields = cron.split_whitespace().count();
        let parsed = if !(5..=6).contains(&fields) {
            Err(format!(
                "must have 5 fields (minute hour day month weekday) or 6 (seconds first), not {fields}"
            ))
        } else {
            CronParser::builder()
                .seconds(Seconds::Optional)
                .year(Year::Disallowed)
                .build()
                .parse(cron)
                .map_err(|err| format!("is not a valid cron pattern: {err}"))
        };
        let zone = timezone.parse::<Tz>().map_err(|_| {
            format!("{timezone:?} is not an IANA time zone name (such as \"Europe/Berlin\")")
        });
        if let Err(reason) = &parsed {
            invalid.insert("cron".to_owned(), reason.clone());
        }
        if let Err(reason) = &zone {
            invalid.insert("timezone".to_owned(), reason.clone());
        }
        match (parsed, zone) {
            (Ok(cron), Ok(zone)) => {
                let calendar = Self { cron, zone };
                if calendar.next_after(Utc::now().timestamp_millis()).is_none() {
                    invalid.insert("cron".to_owned(), "never matches a future time".to_owned());
                    return Err(invalid);
                }
                Ok(calendar)
            }
            _ => Err(invalid),
        }
    }

    /// The first tick strictly after `after_ms` (ms since the epoch), if any.
    /// croner searches in local time and maps a time of a repeated hour (the
    /// hour a DST change sets back) to its first occurrence, which can come
    /// before `after_ms`: then it looks again from an hour on, so the
    /// repeated hour's ticks run once (in its first pass) and the answer is
    /// always later than asked.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let mut from_ms = after_ms;
        for _ in 0..3 {
            // croner keeps the start's sub-second part; ticks are whole seconds.
            let from = Utc
                .timestamp_millis_opt(from_ms.div_euclid(1000) * 1000)
                .single()?;
            let next = self
                .cron
                .find_next_occurrence(&from.with_timezone(&self.zone), false)
                .ok()?
                .timestamp_millis();
            if next > after_ms {
                return Some(next);
            }
            from_ms += 3_600_000;
        }
        None
    }
}

/// A stored schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schedule {
    /// `<owner>:<queue>:<name>`.
    #[serde(rename = "_id")]
    pub id: String,
    pub owner: String,
    pub queue: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The payload's exact JSON text.
    pub payload: String,
    pub key: String,
    pub catch_up: CatchUp,
    pub paused: bool,
    pub created_at: bson::DateTime,
    pub updated_at: bson::DateTime,
}

impl Schedule {
    pub fn id_of(queue: &QueueRef, name: &str) -> String {
        format!("{}:{name}", queue.tag())
    }

    pub fn queue_ref(&self) -> Option<QueueRef> {
        QueueRef::from_tag(&format!("{}:{}", self.owner, self.queue))
    }

    /// The idempotency key of the job for `tick`: one per schedule
    /// incarnation and tick, so every process that handles the tick
    /// publishes the same job.
    pub fn tick_key(&self, tick_ms: i64) -> String {
        format!(
            "orderly-schedule:{}:{}:{tick_ms}",
            self.name,
            self.created_at.timestamp_millis()
        )
    }
}

/// A schedule's run state, from Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunState {
    pub next_run_ms: Option<i64>,
    pub last_run_ms: Option<i64>,
    pub last_job_id: Option<String>,
}

/// Why a schedule could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

pub type ScheduleResult<T> = Result<T, ScheduleError>;

/// The schedule store: MongoDB definitions and the Redis tick index.
#[derive(Clone)]
pub struct Schedules {
    docs: Collection<Schedule>,
    redis: RedisConn,
    due_key: String,
    last_key: String,
    indexed: Arc<OnceCell<()>>,
    advance: Arc<Script>,
}

impl Schedules {
    pub fn new(db: &Database, redis: RedisConn, key_prefix: &str) -> Self {
        Self {
            docs: db.collection("schedules"),
            redis,
            due_key: format!("{key_prefix}:{{sched}}:due"),
            last_key: format!("{key_prefix}:{{sched}}:last"),
            indexed: Arc::default(),
            advance: Arc::new(Script::new(include_str!("schedule_advance.lua"))),
        }
    }

    async fn ensure_indexes(&self) -> ScheduleResult<()> {
        self.indexed
            .get_or_try_init(|| async {
                let unique = IndexModel::builder()
                    .keys(doc! { "owner": 1, "queue": 1, "name": 1 })
                    .options(
                        IndexOptions::builder()
                            .unique(true)
                            .name("owner_queue_name_unique".to_owned())
                            .build(),
                    )
                    .build();
                self.docs.create_index(unique).await.map(drop)
            })
            .await?;
        Ok(())
    }

    /// Creates or replaces a schedule (its `created_at` kept) and puts its
    /// next tick after now into the index (or takes it out, when paused).
    /// Returns the stored schedule and whether it was created.
    pub async fn put(
        &self,
        mut schedule: Schedule,
        calendar: &Calendar,
    ) -> ScheduleResult<(Schedule, bool)> {
        self.ensure_indexes().await?;
        let existing = self.docs.find_one(doc! { "_id": &schedule.id }).await?;
        if let Some(existing) = &existing {
            schedule.created_at = existing.created_at;
        }
        self.docs
            .replace_one(doc! { "_id": &schedule.id }, &schedule)
            .upsert(true)
            .await?;
        let mut redis = self.redis.clone();
        let next = calendar.next_after(Utc::now().timestamp_millis());
        match next.filter(|_| !schedule.paused) {
            Some(next) => {
                redis::cmd("ZADD")
                    .arg(&self.due_key)
                    .arg(next)
                    .arg(&schedule.id)
                    .query_async::<()>(&mut redis)
                    .await?
            }
            None => self.unindex(&schedule.id, false).await?,
        }
        Ok((schedule, existing.is_none()))
    }

    /// Takes a schedule out of the tick index (and forgets its last run).
    async fn unindex(&self, id: &str, forget_last: bool) -> ScheduleResult<()> {
        let mut pipe = redis::pipe();
        pipe.zrem(&self.due_key, id).ignore();
        if forget_last {
            pipe.hdel(&self.last_key, id).ignore();
        }
        pipe.query_async::<()>(&mut self.redis.clone()).await?;
        Ok(())
    }

    pub async fn get(&self, queue: &QueueRef, name: &str) -> ScheduleResult<Option<Schedule>> {
        self.by_id(&Schedule::id_of(queue, name)).await
    }

    pub async fn by_id(&self, id: &str) -> ScheduleResult<Option<Schedule>> {
        Ok(self.docs.find_one(doc! { "_id": id }).await?)
    }

    /// The queue's schedules, by name.
    pub async fn list(&self, queue: &QueueRef) -> ScheduleResult<Vec<Schedule>> {
        use futures_util::TryStreamExt;
        let cursor = self
            .docs
            .find(doc! { "owner": &queue.owner, "queue": queue.name.as_str() })
            .sort(doc! { "name": 1 })
            .await?;
        Ok(cursor.try_collect().await?)
    }

    /// Deletes a schedule; `false` if there was none.
    pub async fn delete(&self, queue: &QueueRef, name: &str) -> ScheduleResult<bool> {
        let id = Schedule::id_of(queue, name);
        let deleted = self.docs.delete_one(doc! { "_id": &id }).await?;
        self.unindex(&id, true).await?;
        Ok(deleted.deleted_count > 0)
    }

    /// Deletes every schedule of a queue (the queue is being deleted).
    pub async fn delete_queue(&self, queue: &QueueRef) -> ScheduleResult<()> {
        for schedule in self.list(queue).await? {
            self.docs.delete_one(doc! { "_id": &schedule.id }).await?;
            self.unindex(&schedule.id, true).await?;
        }
        Ok(())
    }

    /// Puts every schedule that is not paused but missing from the tick
    /// index back into it, at its next tick after now (`NX`: an entry that
    /// is there stays). The index lives in Redis and the definitions in
    /// MongoDB: a Redis that lost its data (restarted without persistence,
    /// a failover to a lagging replica) would otherwise never tick them
    /// again. A schedule paused or deleted meanwhile is dropped again by the
    /// first sweep that meets it. Returns how many were put back.
    pub async fn reindex_missing(&self) -> ScheduleResult<usize> {
        use futures_util::TryStreamExt;
        let mut cursor = self.docs.find(doc! { "paused": false }).await?;
        let now = Utc::now().timestamp_millis();
        let mut restored = 0;
        while let Some(schedule) = cursor.try_next().await? {
            let Ok(calendar) = Calendar::parse(&schedule.cron, &schedule.timezone) else {
                continue;
            };
            let Some(next) = calendar.next_after(now) else {
                continue;
            };
            let added: i64 = redis::cmd("ZADD")
                .arg(&self.due_key)
                .arg("NX")
                .arg(next)
                .arg(&schedule.id)
                .query_async(&mut self.redis.clone())
                .await?;
            if added == 1 {
                log::warn!(
                    "schedule {} was missing from the tick index (Redis lost data?); its next tick is {next}",
                    schedule.id
                );
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Next and last runs of `ids`, in order: one round trip to the
    /// `{sched}` slot.
    pub async fn run_states(&self, ids: &[&str]) -> ScheduleResult<Vec<RunState>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ZMSCORE").arg(&self.due_key).arg(ids);
        pipe.cmd("HMGET").arg(&self.last_key).arg(ids);
        let (next, last): (Vec<Option<f64>>, Vec<Option<String>>) =
            pipe.query_async(&mut self.redis.clone()).await?;
        Ok(next
            .into_iter()
            .zip(last)
            .map(|(next, last)| {
                let last = last.as_deref().and_then(|l| l.split_once(':'));
                RunState {
                    next_run_ms: next.map(|ms| ms as i64),
                    last_run_ms: last.and_then(|(ms, _)| ms.parse().ok()),
                    last_job_id: last.map(|(_, id)| id.to_owned()),
                }
            })
            .collect())
    }

    /// The `limit` earliest entries of the tick index, as (id, tick ms).
    pub async fn earliest(&self, limit: usize) -> ScheduleResult<Vec<(String, i64)>> {
        let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.due_key)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .arg("WITHSCORES")
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, ms)| (id, ms as i64))
            .collect())
    }

    /// Moves schedule `id` from `tick` to `next` (out of the index when
    /// `None`), recording `published` (tick, job id) as its last run; only
    /// if `tick` is still its due time. `true` when this call moved it.
    pub async fn advance(
        &self,
        id: &str,
        tick: i64,
        next: Option<i64>,
        published: Option<(i64, &str)>,
    ) -> ScheduleResult<bool> {
        let moved: i64 = self
            .advance
            .key(&self.due_key)
            .key(&self.last_key)
            .arg(id)
            .arg(tick)
            .arg(next.map(|n| n.to_string()).unwrap_or_default())
            .arg(
                published
                    .map(|(ms, job)| format!("{ms}:{job}"))
                    .unwrap_or_default(),
            )
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(moved == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_patterns_parse_and_tick_in_their_zone() {
        let every_second = Calendar::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(every_second.next_after(1_000_500), Some(1_001_000));
        assert_eq!(every_second.next_after(1_000_000), Some(1_001_000));
        // 09:00 in Berlin on 2026-01-01 is 08:00 UTC.
        let nine = Calendar::parse("0 9 * * *", "Europe/Berlin").unwrap();
        let midnight = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let expected = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
        assert_eq!(
            nine.next_after(midnight.timestamp_millis()),
            Some(expected.timestamp_millis())
        );
    }

    /// 2026-10-25 in Berlin: 03:00 CEST goes back to 02:00 CET, so 02:xx
    /// comes twice. Asked from the second 02:10 (01:10 UTC), croner alone
    /// answered the first 02:15 (00:15 UTC), an hour in the past.
    #[test]
    fn the_next_tick_is_later_than_asked_also_in_a_repeated_hour() {
        let every_five = Calendar::parse("*/5 * * * *", "Europe/Berlin").unwrap();
        let start = Utc.with_ymd_and_hms(2026, 10, 24, 23, 0, 0).unwrap();
        let mut at = start.timestamp_millis();
        let end = start.timestamp_millis() + 5 * 3_600_000;
        while at < end {
            let next = every_five.next_after(at).expect("a next tick");
            assert!(next > at, "next_after({at}) = {next}");
            assert!(
                next - at <= 3_600_000 + 300_000,
                "next_after({at}) = {next}"
            );
            at = next;
        }
        let second_two_ten = Utc.with_ymd_and_hms(2026, 10, 25, 1, 10, 0).unwrap();
        let next = every_five
            .next_after(second_two_ten.timestamp_millis())
            .unwrap();
        assert!(next > second_two_ten.timestamp_millis());
    }

    #[test]
    fn invalid_patterns_and_zones_name_their_field() {
        let both = Calendar::parse("61 * * * *", "Mars/Olympus").unwrap_err();
        assert!(both.contains_key("cron") && both.contains_key("timezone"));
        let fields = Calendar::parse("* * * *", "UTC").unwrap_err();
        assert!(fields["cron"].contains("5 fields"), "{fields:?}");
        let seven = Calendar::parse("0 0 0 1 1 * 2030", "UTC").unwrap_err();
        assert!(seven.contains_key("cron"));
    }
}
