//! Fencing: the self-fencing window and start leases, the contract between the leader (which
//! gives starts up) and the executor (which refuses late starts and fences itself). Both sides
//! use this module, so the rule is written once (guarantee 4 against delayed requests).
//!
//! A StartAttempt can sit in a socket buffer for seconds (a partition, a paused process) and
//! arrive after the leader gave up on it and placed the task elsewhere. Timers on the executor's
//! side ("refuse starts for a while after a silence") only narrow that window. Instead every
//! start names the latest heartbeat the leader had received from this executor (its `seq`; the
//! registration is numbered the same way, so work can start before the first beat), and:
//!
//! - the executor runs a start only while `now < sent(seq) + window`, where `sent` is when this
//!   process first sent that beat and `window` is the self-fencing window
//!   ([`fence_window`] of the TTL);
//! - the leader gives up on a start (the attempt is lost, the task placed again) only once
//!   `window` has passed since it *received* that beat — received after it was sent — or by
//!   declaring the executor dead, a full TTL after the last beat it heard.
//!
//! So by the time a task can have a successor, no executor accepts its old start any more,
//! however late the request arrives. Clocks are each side's own monotonic clock; only their
//! rates are assumed alike (the window is 60 % of the TTL, the rest is margin).
//!
//! Invariants: beat numbers increase within a process and are never reused; the log keeps the
//! send time of every beat younger than the window (and at most [`MAX_BEATS`] of them), so a
//! start naming a forgotten or unknown beat is refused — the leader retries with a fresher one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most beats remembered (a beat per 50 ms over a 60 s window fits).
pub const MAX_BEATS: usize = 1200;

/// The send times of this process's recent heartbeats.
#[derive(Debug, Default)]
pub struct BeatLog {
    last: u64,
    sent: VecDeque<(u64, Instant)>,
}

/// Why a start's lease does not hold.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseError {
    /// The start names no beat (a leader that has not heard this executor yet).
    Unstamped,
    /// The beat is not one this process remembers sending (another process's, or long gone).
    Unknown(u64),
    /// The beat was sent `age` ago, longer than the window.
    Expired { seq: u64, age: Duration },
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Unstamped => write!(f, "the start names no heartbeat of this executor"),
            LeaseError::Unknown(seq) => write!(
                f,
                "the start names heartbeat {seq}, which this executor process does not know"
            ),
            LeaseError::Expired { seq, age } => {
                write!(f, "the start names heartbeat {seq}, sent {} ms ago: older than the fencing window", age.as_millis())
            }
        }
    }
}

/// Beat numbers of a process start past a random base below this (see [`BeatLog::starting_after`]).
pub const MAX_BEAT_BASE: u64 = 1 << 40;

impl BeatLog {
    /// A log whose first beat is `base + 1`. An executor starts at a random base below
    /// [`MAX_BEAT_BASE`], so that beat numbers cannot be told from how many beats it has sent (its
    /// `/metrics` counts them) or from its uptime: a start must name a recent beat, and only the
    /// leader, which received it, knows one.
    pub fn starting_after(base: u64) -> BeatLog {
        BeatLog { last: base, sent: VecDeque::new() }
    }

    /// Numbers a beat about to be sent at `now`, forgetting beats older than `window`.
    pub fn record(&mut self, now: Instant, window: Duration) -> u64 {
        self.last += 1;
        while self.sent.front().is_some_and(|&(_, at)| now.saturating_duration_since(at) >= window)
            || self.sent.len() >= MAX_BEATS
        {
            self.sent.pop_front();
        }
        self.sent.push_back((self.last, now));
        self.last
    }

    /// May a start naming beat `seq` run at `now`?
    pub fn check(&self, seq: u64, now: Instant, window: Duration) -> Result<(), LeaseError> {
        if seq == 0 {
            return Err(LeaseError::Unstamped);
        }
        // Beats are in increasing order: binary search by number.
        let at = match self.sent.binary_search_by_key(&seq, |&(s, _)| s) {
            Ok(i) => self.sent[i].1,
            Err(_) => return Err(LeaseError::Unknown(seq)),
        };
        let age = now.saturating_duration_since(at);
        if age < window {
            Ok(())
        } else {
            Err(LeaseError::Expired { seq, age })
        }
    }
}

/// The leader's side of the rule: may it give up on a start whose latest request named a beat it
/// received at `stamp_received` (none: no request was ever sent)?
pub fn may_give_up(stamp_received: Option<Instant>, now: Instant, window: Duration) -> bool {
    stamp_received.is_none_or(|at| now.saturating_duration_since(at) >= window)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(3);

    #[test]
    fn beats_are_numbered_after_the_base() {
        let t0 = Instant::now();
        let mut log = BeatLog::starting_after(1 << 33);
        let s1 = log.record(t0, W);
        assert_eq!(s1, (1 << 33) + 1);
        assert_eq!(log.record(t0, W), s1 + 1);
        assert_eq!(log.check(1, t0, W), Err(LeaseError::Unknown(1)), "beat 1 of a count");
        assert_eq!(log.check(s1, t0, W), Ok(()));
    }

    #[test]
    fn a_start_runs_only_within_the_window_of_the_beat_it_names() {
        let t0 = Instant::now();
        let mut log = BeatLog::default();
        let s1 = log.record(t0, W);
        let s2 = log.record(t0 + Duration::from_secs(1), W);
        assert!(s2 > s1 && s1 > 0, "beat numbers increase from 1");
        assert_eq!(log.check(s1, t0 + Duration::from_millis(2999), W), Ok(()));
        assert_eq!(log.check(s1, t0 + W, W), Err(LeaseError::Expired { seq: s1, age: W }));
        // The same moment is fine for the newer beat: a retry with a fresher stamp runs.
        assert_eq!(log.check(s2, t0 + W, W), Ok(()));
        assert_eq!(log.check(0, t0, W), Err(LeaseError::Unstamped));
        assert_eq!(
            log.check(99, t0, W),
            Err(LeaseError::Unknown(99)),
            "a beat never sent (another process's)"
        );
    }

    #[test]
    fn old_beats_are_forgotten_and_then_refused() {
        let t0 = Instant::now();
        let mut log = BeatLog::default();
        let old = log.record(t0, W);
        let later = t0 + W + Duration::from_secs(1);
        let new = log.record(later, W);
        assert_eq!(log.check(old, later, W), Err(LeaseError::Unknown(old)));
        assert_eq!(log.check(new, later, W), Ok(()));
        // Bounded however fast beats come.
        for i in 0..(MAX_BEATS as u64 * 2) {
            log.record(later + Duration::from_micros(i), W);
        }
        assert!(log.sent.len() <= MAX_BEATS);
    }

    #[test]
    fn the_leader_gives_up_only_after_the_window_since_it_received_the_beat() {
        let t0 = Instant::now();
        assert!(may_give_up(None, t0, W), "nothing was ever sent: nothing can arrive late");
        assert!(!may_give_up(Some(t0), t0 + W - Duration::from_millis(1), W));
        assert!(may_give_up(Some(t0), t0 + W, W));
    }

    /// The rule's point, as a property over delays: whatever the network delay of the beat and
    /// of the start, an executor accepts the start only before the leader may give it up.
    #[test]
    fn no_delay_lets_a_given_up_start_run() {
        let t0 = Instant::now();
        for beat_delay_ms in [0u64, 1, 10, 500, 2999, 3000, 10_000] {
            for start_delay_ms in [0u64, 1, 100, 1000, 2999, 3000, 60_000] {
                let mut log = BeatLog::default();
                let seq = log.record(t0, W);
                let received = t0 + Duration::from_millis(beat_delay_ms);
                // The leader sends the start right when it received the beat; it arrives later.
                let arrives = received + Duration::from_millis(start_delay_ms);
                let runs = log.check(seq, arrives, W).is_ok();
                let given_up_before = may_give_up(Some(received), arrives, W);
                assert!(
                    !(runs && given_up_before),
                    "beat delay {beat_delay_ms} ms, start delay {start_delay_ms} ms"
                );
            }
        }
    }
}
