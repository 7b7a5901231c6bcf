//! `configure`: mirrors a queue's engine settings into Redis (`configure.lua`).

use super::{Engine, EngineResult, EngineScript};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("configure");

/// The engine-relevant part of a queue definition, mirrored into Redis.
#[derive(Debug, Clone)]
pub struct EngineConf {
    pub push: bool,
    pub paused: bool,
    pub on_exhausted: &'static str,
    pub retention_s: u64,
    /// `rate_limit`: lane heads started per second and the bucket size
    /// (`None`: unlimited).
    pub rate_limit: Option<(u32, u32)>,
    /// `max_active_lanes` (`None`: unlimited).
    pub max_active: Option<u32>,
    /// Increases with every change of the definition (ms of its last
    /// update): an older copy never overwrites a newer one.
    pub version: u64,
}

impl Engine {
    /// Mirrors a queue's engine settings into Redis and re-indexes it;
    /// `false` if Redis already had a newer version.
    pub async fn configure(&self, queue: &QueueRef, conf: &EngineConf) -> EngineResult<bool> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation
            .arg(if conf.push { "1" } else { "0" })
            .arg(if conf.paused { "1" } else { "0" })
            .arg(conf.on_exhausted)
            .arg(conf.retention_s)
            .arg(conf.version)
            .arg(conf.rate_limit.map_or(0, |(rate, _)| rate))
            .arg(conf.rate_limit.map_or(0, |(_, burst)| burst))
            .arg(conf.max_active.unwrap_or(0));
        let applied: i64 = self.run(&invocation).await?;
        Ok(applied == 1)
    }
}
