//! `redrive`: dead jobs go back into their lanes in seq order (`redrive.lua`).

use super::{Engine, EngineResult, EngineScript};
use crate::queue::model::QueueRef;

static SCRIPT: EngineScript = EngineScript::new("redrive");

/// Dead jobs one script run moves at most: with the lane-walk budget of
/// `lib.lua`, a run stays within a few milliseconds of Redis time however
/// many dead jobs there are, so other clients of Redis never wait long.
pub const REDRIVE_STEP: usize = 64;

impl Engine {
    /// One bounded run: up to `max` dead jobs back into their lanes. Returns
    /// how many moved, how many are still dead, and whether the lane-walk
    /// budget stopped the run early.
    pub async fn redrive_step(
        &self,
        queue: &QueueRef,
        max: usize,
    ) -> EngineResult<(u64, u64, bool)> {
        let mut invocation = self.invocation(&SCRIPT, queue);
        invocation.arg(max);
        let (moved, left, stopped): (u64, u64, u64) = self.run(&invocation).await?;
        Ok((moved, left, stopped == 1))
    }

    /// Moves the queue's dead jobs back into their lanes, in seq order, in
    /// bounded script runs; at most as many as were dead when it started (a
    /// job that dies again meanwhile stays dead). Returns how many moved.
    pub async fn redrive(&self, queue: &QueueRef) -> EngineResult<u64> {
        let mut moved_total = 0;
        let mut limit: Option<u64> = None;
        loop {
            let step = match limit {
                Some(limit) => (limit - moved_total).min(REDRIVE_STEP as u64),
                None => REDRIVE_STEP as u64,
            };
            let (moved, left, stopped) = self.redrive_step(queue, step as usize).await?;
            let limit = *limit.get_or_insert(moved + left);
            moved_total += moved;
            if moved_total >= limit || (moved == 0 && !stopped) {
                return Ok(moved_total);
            }
        }
    }
}
