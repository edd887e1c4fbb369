//! The executor's heartbeat and fencing decisions, pure: when to beat, when to self-fence and
//! what to kill, what a leader's answer means, and which starts may still run. No clock, no I/O:
//! the shell ([`super`]) reads the clock, sends the beats and executes the [`Act`]s.
//!
//! Invariants (the executor's half of fencing; the leader's half is in `master::duties`):
//! - **Self-fencing**: when no beat has been acknowledged for the fencing window
//!   ([`crate::timings::fence_window`], 60 % of the TTL), every attempt is killed, with a grace
//!   short enough to finish well inside the rest of the TTL; the leader will have declared this
//!   executor dead (or is about to) and rescheduled the work. The loop wakes as the window
//!   closes, not a beat interval late.
//! - **An acknowledgement dates from the beat's sending**, not its answer: a slow answer must not
//!   stretch the window. Acks only move forward.
//! - **Start leases**: a start runs only within the fencing window of the beat (or registration)
//!   it names, as this process sent it ([`crate::fencing`]).
//! - An answer that does not know this executor (re-register) acknowledges nothing and kills
//!   every attempt before registering again: its attempts were rescheduled.

use std::time::{Duration, Instant};

use crate::api::pb;
use crate::fencing::{BeatLog, LeaseError};
use crate::timings::{fence_window, EXECUTOR_KILL_GRACE as STOP_GRACE};

/// An attempt's fencing token, as the wire carries it (the executor does not use the state
/// machine's types).
type Token = u64;

/// Until the first registration answers: the TTL and beat interval assumed.
const DEFAULT_TTL: Duration = crate::timings::DEFAULT_EXECUTOR_TTL;
const DEFAULT_INTERVAL: Duration = crate::timings::DEFAULT_EXECUTOR_HEARTBEAT;
/// Bounds on what a leader may ask for (a TTL below this, or a beat interval outside these, is
/// a misconfiguration the executor survives).
const MIN_TTL: Duration = Duration::from_millis(100);
const MIN_INTERVAL: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// The loop wakes this long after the fencing window closes, so it finds it closed.
const FENCE_WAKE_SLACK: Duration = Duration::from_millis(5);

/// The executor's heartbeat memory: timings the leader gave, the last acknowledgement, the
/// numbered beats sent, and when the next beat is due.
#[derive(Debug)]
pub struct Pulse {
    /// When the newest acknowledged beat was sent (or the registration was answered).
    last_ack: Instant,
    ttl: Duration,
    interval: Duration,
    beats: BeatLog,
    next_beat: Instant,
}

/// What the heartbeat loop does when it wakes.
#[derive(Debug, PartialEq, Eq)]
pub struct Wake {
    /// Self-fence: kill these attempts with this grace (no beat acknowledged within the window).
    pub fence: Option<(Vec<Token>, Duration)>,
    /// Send beat number `seq` now.
    pub beat: Option<u64>,
}

/// What a leader's answer to a beat asks of the executor, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Act {
    /// The leader no longer knows this registration: take no start until registered again.
    Unregistered,
    /// Kill an attempt (SIGKILL after `grace`), counted under `cause`.
    Kill { token: Token, cause: &'static str, grace: Duration },
    /// Register again (a new epoch).
    Register,
}

impl Pulse {
    /// A process that started at `now`: acknowledged as of now (nothing runs yet), first beat an
    /// interval after the registration.
    pub fn new(now: Instant) -> Pulse {
        Pulse {
            last_ack: now,
            ttl: DEFAULT_TTL,
            interval: DEFAULT_INTERVAL,
            beats: BeatLog::default(),
            next_beat: now + DEFAULT_INTERVAL,
        }
    }

    /// The same, numbering its beats (and registrations) after `base` (see
    /// [`BeatLog::starting_after`]).
    pub fn with_beats_after(self, base: u64) -> Pulse {
        Pulse { beats: BeatLog::starting_after(base), ..self }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// [`fence_window`] of the TTL this executor was given.
    pub fn fence_window(&self) -> Duration {
        fence_window(self.ttl)
    }

    pub fn since_ack(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_ack)
    }

    /// No beat acknowledged within the fencing window: take no new work, kill what runs.
    pub fn is_fenced(&self, now: Instant) -> bool {
        self.since_ack(now) > self.fence_window()
    }

    /// How long a self-fenced attempt gets between SIGTERM and SIGKILL. A self-fence races the
    /// leader's TTL: the rest of it after the fencing window is all the time there is, so the
    /// kill takes at most a quarter of that.
    pub fn self_fence_grace(&self) -> Duration {
        STOP_GRACE.min(self.ttl.saturating_sub(self.fence_window()) / 4)
    }

    /// Numbers a registration about to be sent at `now` like a beat, so that work can be started
    /// under it at once.
    pub fn number_registration(&mut self, now: Instant) -> u64 {
        let window = self.fence_window();
        self.beats.record(now, window)
    }

    /// The heartbeat loop starts at `now`: the first beat is an interval away.
    pub fn start_beating(&mut self, now: Instant) {
        self.next_beat = now + self.interval;
    }

    /// The registration was answered at `now` with these timings (clamped to sane bounds).
    pub fn registered(&mut self, ttl_ms: u64, heartbeat_ms: u64, now: Instant) {
        self.ttl = Duration::from_millis(ttl_ms).max(MIN_TTL);
        self.interval = Duration::from_millis(heartbeat_ms).clamp(MIN_INTERVAL, MAX_INTERVAL);
        self.last_ack = now;
    }

    /// May a start that names beat `seq` run at `now`?
    pub fn check_lease(&self, seq: u64, now: Instant) -> Result<(), LeaseError> {
        self.beats.check(seq, now, self.fence_window())
    }

    /// How long to sleep from `now`: until the next beat, or until just after the fencing window
    /// closes if that comes first. (Once fenced, no start is accepted, so there is nothing new
    /// to kill before the beat.)
    pub fn wait(&self, now: Instant) -> Duration {
        let wait = self.next_beat.saturating_duration_since(now);
        match self.fence_window().checked_sub(self.since_ack(now)) {
            Some(open) => wait.min(open + FENCE_WAKE_SLACK),
            None => wait,
        }
    }

    /// The loop woke at `now` with `live` attempts running: self-fence first (after a pause the
    /// old attempts must die before anyone is talked to), then beat if one is due. With
    /// `skip_fencing` (a planted chaos bug) nothing is killed.
    pub fn wake(&mut self, now: Instant, live: &[Token], skip_fencing: bool) -> Wake {
        let fence = (!skip_fencing && self.is_fenced(now) && !live.is_empty())
            .then(|| (live.to_vec(), self.self_fence_grace()));
        let beat = (now >= self.next_beat).then(|| {
            self.next_beat = now + self.interval;
            let window = self.fence_window();
            self.beats.record(now, window)
        });
        Wake { fence, beat }
    }

    /// The leader answered the beat sent at `sent`, while `live` attempts run.
    pub fn answered(
        &mut self,
        answer: &pb::HeartbeatResponse,
        sent: Instant,
        live: &[Token],
        skip_fencing: bool,
    ) -> Vec<Act> {
        let mut acts = Vec::new();
        if answer.reregister {
            acts.push(Act::Unregistered);
        } else {
            self.last_ack = self.last_ack.max(sent);
        }
        acts.extend(answer.kill_tokens.iter().map(|&token| Act::Kill {
            token,
            cause: "leader",
            grace: STOP_GRACE,
        }));
        if answer.reregister {
            if !skip_fencing {
                acts.extend(live.iter().map(|&token| Act::Kill {
                    token,
                    cause: "reregister",
                    grace: STOP_GRACE,
                }));
            }
            acts.push(Act::Register);
        }
        acts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A pulse registered at `t0` with a 1000 ms TTL (fencing window 600 ms) and 100 ms beats.
    fn registered(t0: Instant) -> Pulse {
        let mut p = Pulse::new(t0);
        p.registered(1000, 100, t0);
        p.start_beating(t0);
        p
    }

    fn ok() -> pb::HeartbeatResponse {
        pb::HeartbeatResponse::default()
    }

    #[test]
    fn beats_every_interval_and_self_fences_at_sixty_percent_of_the_ttl() {
        let t0 = Instant::now();
        let mut p = registered(t0);
        assert_eq!(p.wait(t0), 100 * MS);
        assert_eq!(p.wake(t0 + 99 * MS, &[7], false), Wake { fence: None, beat: None });
        let w = p.wake(t0 + 100 * MS, &[7], false);
        assert_eq!(w.fence, None);
        assert!(w.beat.is_some());
        // No answer ever comes: still open at 600 ms, fenced just after it.
        assert!(!p.is_fenced(t0 + 599 * MS));
        assert!(p.is_fenced(t0 + 601 * MS));
        // Wakes as the window closes, not at the next beat, when that comes first.
        let mut q = Pulse::new(t0);
        q.registered(1000, 5000, t0);
        q.start_beating(t0);
        let window = q.fence_window();
        assert_eq!(q.wait(t0 + 500 * MS), window - 500 * MS + FENCE_WAKE_SLACK);
        let w = q.wake(t0 + 605 * MS, &[7, 8], false);
        let grace = (1000 * MS - window) / 4;
        assert_eq!(w.fence, Some((vec![7, 8], grace)), "grace: a quarter of the TTL's rest");
        assert_eq!(w.beat, None);
        // Nothing running: nothing to kill. A planted bug skips the kill.
        assert_eq!(q.wake(t0 + 605 * MS, &[], false).fence, None);
        assert_eq!(q.wake(t0 + 605 * MS, &[7], true).fence, None);
    }

    #[test]
    fn an_ack_dates_from_the_beat_sent_not_the_answer() {
        let t0 = Instant::now();
        let mut p = registered(t0);
        let sent = t0 + 500 * MS;
        // The answer arrives 400 ms later: the window runs from 500, not 900.
        assert_eq!(p.answered(&ok(), sent, &[1], false), vec![]);
        assert!(!p.is_fenced(t0 + 1099 * MS));
        assert!(p.is_fenced(t0 + 1101 * MS));
        // A late answer to an older beat never moves the ack back.
        p.answered(&ok(), t0 + 200 * MS, &[1], false);
        assert!(!p.is_fenced(t0 + 1099 * MS));
    }

    #[test]
    fn an_answer_that_does_not_know_us_kills_everything_and_registers_again() {
        let t0 = Instant::now();
        let mut p = registered(t0);
        let answer =
            pb::HeartbeatResponse { reregister: true, kill_tokens: vec![3], ..Default::default() };
        let acts = p.answered(&answer, t0 + 500 * MS, &[3, 4], false);
        let kill = |token, cause| Act::Kill { token, cause, grace: STOP_GRACE };
        assert_eq!(
            acts,
            vec![
                Act::Unregistered,
                kill(3, "leader"),
                kill(3, "reregister"),
                kill(4, "reregister"),
                Act::Register
            ]
        );
        assert!(p.is_fenced(t0 + 601 * MS), "not an acknowledgement");
        let answer = pb::HeartbeatResponse { kill_tokens: vec![9], ..Default::default() };
        assert_eq!(p.answered(&answer, t0, &[9], false), vec![kill(9, "leader")]);
    }

    #[test]
    fn a_start_runs_only_within_the_window_of_the_beat_it_names() {
        let t0 = Instant::now();
        let mut p = Pulse::new(t0);
        let reg = p.number_registration(t0);
        p.registered(1000, 100, t0 + 50 * MS);
        p.start_beating(t0 + 50 * MS);
        assert_eq!(p.check_lease(reg, t0 + 599 * MS), Ok(()), "the registration is a beat");
        assert!(matches!(p.check_lease(reg, t0 + 600 * MS), Err(LeaseError::Expired { .. })));
        let beat = p.wake(t0 + 150 * MS, &[], false).beat.expect("due");
        assert_eq!(p.check_lease(beat, t0 + 700 * MS), Ok(()));
        assert_eq!(p.check_lease(beat + 1, t0 + 700 * MS), Err(LeaseError::Unknown(beat + 1)));
        assert_eq!(p.check_lease(0, t0), Err(LeaseError::Unstamped));
    }

    #[test]
    fn a_leaders_timings_are_clamped() {
        let t0 = Instant::now();
        let mut p = Pulse::new(t0);
        p.registered(1, 1, t0);
        assert_eq!((p.ttl(), p.interval()), (MIN_TTL, MIN_INTERVAL));
        p.registered(10_000, 3_600_000, t0);
        assert_eq!((p.ttl(), p.interval()), (10_000 * MS, MAX_INTERVAL));
    }
}
