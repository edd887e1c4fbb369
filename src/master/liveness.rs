//! Executor liveness, in leader memory only (heartbeats are not Raft entries).
//!
//! Invariants:
//! - An executor is declared dead only by the leader that has heard nothing from it for a full
//!   TTL *of its own leadership*: [`Liveness::reset`] gives everyone a fresh grace period when a
//!   leader takes over, so a failover never kills executors that were heartbeating to the old one.
//! - [`Liveness::generation`] changes whenever an executor's *placeability* (heard from within
//!   the placement window) may have flipped: on a heartbeat after a silence and when a
//!   [`Liveness::sweep`] finds one newly silent. Between changes a heartbeat costs one map
//!   update, and the scheduler can tell "nothing changed" without looking at any executor.
//! - An executor that says it is unhealthy (its work dir has no room: `HeartbeatRequest.
//!   unhealthy`) is not placeable while it says so, however fresh; the flag flipping moves the
//!   generation like a silence does.
//! - Every placeable entry is fresh: [`Liveness::sweep`] is given a placement window no longer
//!   than the TTL, and `seen`/`reset` mark an entry placeable only with a current time. So when
//!   a sweep reports no unplaceable entry, no executor in the table can be past its TTL, and the
//!   leader's dead scan has nothing to find among them.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::state::ExecutorId;

struct Seen {
    at: Instant,
    /// As of the last sweep (or the heartbeat that ended a silence).
    placeable: bool,
    /// The newest numbered heartbeat heard from the executor: what the starts sent to it name
    /// (see `fencing`).
    stamp: Option<Stamp>,
    /// Its last heartbeat said it cannot take new work (no room in its work dir).
    unhealthy: bool,
    /// When this leader last actually heard it (a heartbeat or registration; unlike `at`, not
    /// moved by [`Liveness::reset`]): what `ListExecutors` shows as the last heartbeat.
    heard: Option<Instant>,
}

/// A numbered heartbeat as the leader received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The registration epoch the beat was sent under.
    pub epoch: u64,
    /// The beat's number (`HeartbeatRequest.seq`, never 0 here).
    pub seq: u64,
    /// When this leader received it.
    pub received: Instant,
}

#[derive(Default)]
struct Inner {
    last_seen: HashMap<ExecutorId, Seen>,
    generation: u64,
}

impl Inner {
    /// Records a sighting of `id` at `at` (placeable again, the generation moved if that
    /// flipped), then lets `update` change its entry. One hash lookup when the entry exists.
    fn sighting(&mut self, id: &str, at: Instant, update: impl FnOnce(&mut Seen)) {
        match self.last_seen.get_mut(id) {
            Some(s) => {
                s.at = s.at.max(at);
                s.heard = Some(s.heard.map_or(at, |h| h.max(at)));
                if !s.placeable {
                    s.placeable = true;
                    self.generation += 1;
                }
                update(s);
            }
            None => {
                let mut s =
                    Seen { at, placeable: true, stamp: None, unhealthy: false, heard: Some(at) };
                update(&mut s);
                self.last_seen.insert(id.to_string(), s);
                self.generation += 1;
            }
        }
    }
}

#[derive(Default)]
pub struct Liveness {
    inner: Mutex<Inner>,
}

/// The liveness table, locked: for reading many executors with one lock.
pub struct View<'a>(MutexGuard<'a, Inner>);

impl View<'_> {
    /// Has `id` been heard from within `ttl` of `now`? Unknown executors have not.
    pub fn is_fresh(&self, id: &str, ttl: Duration, now: Instant) -> bool {
        self.0.last_seen.get(id).is_some_and(|s| now.saturating_duration_since(s.at) < ttl)
    }

    /// May `id` be given work: heard from within the placement window as of the last sweep?
    pub fn is_placeable(&self, id: &str) -> bool {
        self.0.last_seen.get(id).is_some_and(|s| s.placeable && !s.unhealthy)
    }

    /// When this leader last heard from `id` (a heartbeat or its registration); none before it
    /// has (a leadership's grace period is not a sighting).
    pub fn last_heard(&self, id: &str) -> Option<Instant> {
        self.0.last_seen.get(id).and_then(|s| s.heard)
    }

    /// The newest beat heard from `id` under registration `epoch`: none before this leader has
    /// heard one (a start may then not be sent yet).
    pub fn stamp(&self, id: &str, epoch: u64) -> Option<Stamp> {
        self.0.last_seen.get(id).and_then(|s| s.stamp).filter(|st| st.epoch == epoch)
    }
}

impl Liveness {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("poisoned")
    }

    /// Records a heartbeat (or registration) from `id` at `at`.
    pub fn seen(&self, id: &str, at: Instant) {
        self.lock().sighting(id, at, |_| {});
    }

    /// Records heartbeat number `seq` (0: unnumbered) of `id`'s registration `epoch`, received
    /// at `at`: a sighting, and the stamp later starts name when newer than the one held.
    pub fn beat(&self, id: &str, epoch: u64, seq: u64, at: Instant) {
        self.lock().sighting(id, at, |s| {
            if seq != 0 && s.stamp.is_none_or(|st| st.epoch != epoch || st.seq < seq) {
                s.stamp = Some(Stamp { epoch, seq, received: at });
            }
        });
    }

    /// Records whether `id`'s last heartbeat said it is unhealthy (takes no new work); a flip
    /// moves the generation, so the planner looks again.
    pub fn set_unhealthy(&self, id: &str, unhealthy: bool) {
        let mut inner = self.lock();
        let flipped = match inner.last_seen.get_mut(id) {
            Some(s) if s.unhealthy != unhealthy => {
                s.unhealthy = unhealthy;
                true
            }
            _ => false,
        };
        if flipped {
            inner.generation += 1;
        }
    }

    /// Starts every listed executor's grace period at `at` (a sighting newer than `at`, e.g. a
    /// registration racing with the start of leadership, is kept).
    pub fn reset<'a>(&self, ids: impl IntoIterator<Item = &'a ExecutorId>, at: Instant) {
        let mut inner = self.lock();
        for id in ids {
            let s = inner.last_seen.entry(id.clone()).or_insert(Seen {
                at,
                placeable: true,
                stamp: None,
                unhealthy: false,
                heard: None,
            });
            s.at = s.at.max(at);
            s.placeable = true;
        }
        inner.generation += 1;
    }

    /// Marks executors silent for `window` or longer as not placeable (changing the generation
    /// if any was placeable), and returns how many entries are not placeable now. One lock, one
    /// pass, no hashing: call it on a timer, not per request.
    pub fn sweep(&self, window: Duration, now: Instant) -> usize {
        let mut inner = self.lock();
        let (mut flipped, mut unplaceable) = (false, 0);
        for s in inner.last_seen.values_mut() {
            if s.placeable && now.saturating_duration_since(s.at) >= window {
                s.placeable = false;
                flipped = true;
            }
            unplaceable += usize::from(!s.placeable);
        }
        if flipped {
            inner.generation += 1;
        }
        unplaceable
    }

    /// Retention: drops `id`'s entry if it has been silent for `ttl` (a forgotten executor's;
    /// one just seen, e.g. registering again, stays).
    pub fn forget_silent(&self, id: &str, ttl: Duration, now: Instant) {
        let mut inner = self.lock();
        if inner.last_seen.get(id).is_some_and(|s| now.saturating_duration_since(s.at) >= ttl) {
            inner.last_seen.remove(id);
            inner.generation += 1;
        }
    }

    /// Changes whenever some executor's placeability may have flipped (see the module doc).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The table, locked, for reading many executors at once.
    pub fn view(&self) -> View<'_> {
        View(self.lock())
    }

    /// Has `id` been heard from within `ttl` of `now`? Unknown executors have not.
    #[cfg(test)]
    pub fn is_fresh(&self, id: &str, ttl: Duration, now: Instant) -> bool {
        self.view().is_fresh(id, ttl, now)
    }

    /// The newest beat heard from `id` under `epoch` (see [`View::stamp`]).
    #[cfg(test)]
    pub fn stamp(&self, id: &str, epoch: u64) -> Option<Stamp> {
        self.view().stamp(id, epoch)
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

    #[test]
    fn an_unhealthy_executor_is_not_placeable_until_it_says_it_is_well_again() {
        let l = Liveness::default();
        let t0 = Instant::now();
        l.beat("a", 1, 1, t0);
        assert!(l.view().is_placeable("a"));
        let g = l.generation();
        l.set_unhealthy("a", true);
        assert!(!l.view().is_placeable("a"), "no room in its work dir: no new work");
        assert_ne!(l.generation(), g, "the planner must look again");
        let g = l.generation();
        l.set_unhealthy("a", true);
        assert_eq!(l.generation(), g, "no flip, no new generation");
        l.set_unhealthy("a", false);
        assert!(l.view().is_placeable("a"));
        l.set_unhealthy("unknown", true);
        assert!(!l.view().is_placeable("unknown"));
    }

    #[test]
    fn starts_name_the_newest_beat_of_the_current_epoch() {
        let l = Liveness::default();
        let t0 = Instant::now();
        l.seen("a", t0);
        assert_eq!(l.stamp("a", 1), None, "a registration is no beat");
        l.beat("a", 1, 5, t0);
        l.beat("a", 1, 4, t0 + Duration::from_secs(1)); // reordered: the older number is ignored
        assert_eq!(l.stamp("a", 1), Some(Stamp { epoch: 1, seq: 5, received: t0 }));
        l.beat("a", 1, 0, t0 + Duration::from_secs(2)); // unnumbered: a sighting only
        assert_eq!(l.stamp("a", 1).map(|s| s.seq), Some(5));
        assert!(l.is_fresh("a", Duration::from_secs(1), t0 + Duration::from_millis(2500)));
        assert_eq!(l.stamp("a", 2), None, "another epoch's beat names nothing for this one");
        l.beat("a", 2, 1, t0 + Duration::from_secs(3)); // a new process numbers from 1 again
        assert_eq!(l.stamp("a", 2).map(|s| s.seq), Some(1));
        // A new leader's grace period keeps no stamp from before: it never had one.
        let fresh = Liveness::default();
        fresh.reset(&["a".to_string()], t0);
        assert_eq!(fresh.stamp("a", 2), None);
    }

    #[test]
    fn the_generation_moves_only_when_placeability_flips() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(2);
        l.seen("a", t0);
        let g = l.generation();
        assert!(l.view().is_placeable("a"));
        // Heartbeats of a placeable executor and sweeps that find nothing new change nothing.
        l.seen("a", t0 + Duration::from_secs(1));
        assert_eq!(l.sweep(window, t0 + Duration::from_secs(2)), 0);
        assert_eq!(l.generation(), g);
        assert!(l.view().is_placeable("a"));
        // Silent for the window: the sweep flips it, once, and counts it while it stays silent.
        assert_eq!(l.sweep(window, t0 + Duration::from_secs(3)), 1);
        let g2 = l.generation();
        assert!(g2 > g);
        assert!(!l.view().is_placeable("a"));
        assert_eq!(l.sweep(window, t0 + Duration::from_secs(4)), 1);
        assert_eq!(l.generation(), g2);
        // Heard from again: placeable, and the generation moves.
        l.seen("a", t0 + Duration::from_secs(5));
        assert!(l.view().is_placeable("a"));
        assert!(l.generation() > g2);
        // A new executor moves it too; an unknown one is neither fresh nor placeable.
        let g3 = l.generation();
        l.seen("b", t0 + Duration::from_secs(5));
        assert!(l.generation() > g3);
        assert!(!l.view().is_placeable("c"));
    }
}
