//! Executor liveness, in leader memory only (heartbeats are not Raft entries).
//!
//! Invariant: an executor is declared dead only by the leader that has heard nothing from it for a
//! full TTL *of its own leadership*: [`Liveness::reset`] gives everyone a fresh grace period when
//! a leader takes over, so a failover never kills executors that were heartbeating to the old one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::state::ExecutorId;

#[derive(Default)]
pub struct Liveness {
    last_seen: Mutex<HashMap<ExecutorId, Instant>>,
}

impl Liveness {
    /// Records a heartbeat (or registration) from `id` at `at`.
    pub fn seen(&self, id: &str, at: Instant) {
        let mut map = self.last_seen.lock().expect("poisoned");
        match map.get_mut(id) {
            Some(t) => *t = at,
            None => {
                map.insert(id.to_string(), at);
            }
        }
    }

    /// Starts every listed executor's grace period at `at` (a sighting newer than `at`, e.g. a
    /// registration racing with the start of leadership, is kept).
    pub fn reset<'a>(&self, ids: impl IntoIterator<Item = &'a ExecutorId>, at: Instant) {
        let mut map = self.last_seen.lock().expect("poisoned");
        for id in ids {
            let t = map.entry(id.clone()).or_insert(at);
            *t = (*t).max(at);
        }
    }

    /// Has `id` been heard from within `ttl` of `now`? Unknown executors have not.
    pub fn is_fresh(&self, id: &str, ttl: Duration, now: Instant) -> bool {
        self.last_seen.lock().expect("poisoned").get(id).is_some_and(|t| now.saturating_duration_since(*t) < ttl)
    }

    /// When `id` was last heard from.
    pub fn last_seen(&self, id: &str) -> Option<Instant> {
        self.last_seen.lock().expect("poisoned").get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_until_ttl_and_reset_gives_a_new_grace_period() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(5);
        assert!(!l.is_fresh("a", ttl, t0), "unknown executors are not fresh");
        l.seen("a", t0);
        assert!(l.is_fresh("a", ttl, t0 + Duration::from_secs(4)));
        assert!(!l.is_fresh("a", ttl, t0 + Duration::from_secs(5)));
        let ids = vec!["a".to_string(), "b".to_string()];
        l.reset(&ids, t0 + Duration::from_secs(10));
        assert!(l.is_fresh("b", ttl, t0 + Duration::from_secs(14)));
        assert!(!l.is_fresh("b", ttl, t0 + Duration::from_secs(15)));
    }
}
