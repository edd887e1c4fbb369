//! The executor's housekeeping loop: it measures the work dir's free space every few seconds
//! (so a full disk makes the executor unhealthy before starts fail, and healthy again once
//! there is room) and deletes attempt output older than `[output] output_ttl`.
//!
//! Invariants:
//! - **Bounded and stoppable.** Each pass runs in the blocking pool and is awaited before the
//!   next; the loop ends when the executor stops.
//! - **Expiry is a backstop.** Output normally goes with its job (the leader's `DeleteOutput`);
//!   expiry catches what a lost call, or an executor down at the time, left behind.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Agent;
use crate::shutdown::Shutdown;

/// How often the work dir's free space is measured.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest gap between two expiry passes (shorter when `output_ttl` is short).
const EXPIRE_EVERY_MAX: Duration = Duration::from_secs(60);

/// Runs until `stop` fires.
pub async fn run(agent: Arc<Agent>, mut stop: Shutdown) {
    let ttl = agent.cfg.output.ttl;
    let expire_every = (ttl / 10).clamp(Duration::from_secs(1), EXPIRE_EVERY_MAX);
    let mut disk_tick = tokio::time::interval(DISK_CHECK_EVERY);
    let mut expire_tick = tokio::time::interval(expire_every);
    disk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    expire_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = disk_tick.tick() => {
                let disk = agent.runner.disk().clone();
                let problem = tokio::task::spawn_blocking(move || disk.check()).await.ok().flatten();
                crate::metrics::executor().disk_unhealthy.set(problem.is_some() as i64);
            }
            _ = expire_tick.tick() => {
                let runner = agent.runner.clone();
                let pass = tokio::task::spawn_blocking(move || {
                    runner.expire_output(ttl, SystemTime::now())
                })
                .await;
                match pass {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        crate::metrics::executor().output_expired.inc_by(n as u64);
                        tracing::info!(attempts = n, ?ttl, "deleted expired attempt output");
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "expiring attempt output"),
                    Err(e) => tracing::warn!(error = %e, "expiring attempt output"),
                }
            }
            _ = stop.wait() => return,
        }
    }
}
