//! triad's own Raft timers, replacing openraft 0.9's: the followers' election timer and the
//! leader's heartbeat.
//!
//! Why: openraft 0.9 checks a follower's election timeout only on its tick (1.5 heartbeats), waits
//! for the leader lease *plus* the timeout, and draws the timeout once per process. Two survivors
//! whose timeouts happen to be close therefore split the vote, and then split it again a whole
//! timeout later, which is where failovers over a second came from. This timer
//! - campaigns a random `[min, max)` after this master last heard from a leader (or granted a
//!   vote), checked every few milliseconds;
//! - draws a new timeout for every campaign, so a split vote is settled by the next draw;
//! - waits one `max` longer after a voter answered with a longer log than ours (openraft's
//!   "smaller log" rule: let the better-informed master win instead of bumping terms; openraft
//!   waits `2 * max`, which made such a failover take a second).
//!
//! The leader's heartbeat is sent from here too, every `heartbeat` (openraft's `heartbeat_interval`
//! also bounds every append-entries call, and triad needs that bound far longer than the period:
//! a follower answers an append only after its flush).
//!
//! Invariants: the voters' leader lease (openraft's `election_timeout_max`, set by the master to
//! below `min`) has expired by the time anyone campaigns, so a master that merely missed a few
//! heartbeats is refused without disturbing the leader's voters. [`Timer`] is pure (time and the
//! random draw come in as arguments); [`run`] is the shell that reads Raft's metrics and triggers
//! openraft, and stops on shutdown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::{NodeId, Raft};
use crate::shutdown::Shutdown;

/// How often the shell looks at the timer.
pub const POLL: Duration = Duration::from_millis(5);

/// When this master next campaigns, unless it hears from a leader first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    min: Duration,
    max: Duration,
    /// The last time a leader (or a candidate this master voted for) was heard.
    heard: Instant,
    /// The timeout drawn for the current wait.
    timeout: Duration,
    /// Added to this wait only: one `max` at start (no leader heard yet) and after a voter showed
    /// a longer log. Hearing a leader or campaigning ends it.
    extra: Duration,
}

impl Timer {
    /// A timer started at `now`; `draw` in [0, 1) picks the first timeout. The first wait is one
    /// `max` longer than later ones, so a restarted master gives the sitting leader time to reach
    /// it before it campaigns.
    pub fn new(min: Duration, max: Duration, now: Instant, draw: f64) -> Self {
        let mut t = Timer { min, max, heard: now, timeout: Duration::ZERO, extra: max };
        t.timeout = t.pick(draw);
        t
    }

    fn pick(&self, draw: f64) -> Duration {
        self.min + (self.max - self.min).mul_f64(draw.clamp(0.0, 1.0))
    }

    /// A leader's append-entries or snapshot, or a vote this master granted.
    pub fn heard(&mut self, now: Instant) {
        self.extra = Duration::ZERO;
        if now > self.heard {
            self.heard = now;
        }
    }

    /// A voter refused our vote because its log is longer than ours: wait longer this time.
    pub fn greater_log(&mut self, now: Instant, draw: f64) {
        self.heard = self.heard.max(now);
        self.timeout = self.pick(draw);
        self.extra = self.max;
    }

    /// Is it time to campaign?
    pub fn due(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// This master has just started a campaign: the next one, if this fails, comes after a fresh
    /// random timeout.
    pub fn campaigned(&mut self, now: Instant, draw: f64) {
        self.heard = now;
        self.extra = Duration::ZERO;
        self.timeout = self.pick(draw);
    }

    /// When the current wait ends.
    pub fn deadline(&self) -> Instant {
        self.heard + self.timeout + self.extra
    }
}

/// The timer shared by the Raft server (which hears leaders), the network (which sees vote
/// answers) and the loop that campaigns.
#[derive(Clone)]
pub struct Election(Arc<Mutex<Timer>>);

impl Election {
    pub fn new(min: Duration, max: Duration) -> Self {
        Election(Arc::new(Mutex::new(Timer::new(min, max, Instant::now(), rand::random()))))
    }

    pub fn heard(&self) {
        self.0.lock().expect("election timer poisoned").heard(Instant::now());
    }

    pub fn greater_log(&self) {
        self.0.lock().expect("election timer poisoned").greater_log(Instant::now(), rand::random());
    }

    fn poll(&self, now: Instant, may_campaign: bool, draw: f64) -> bool {
        let mut t = self.0.lock().expect("election timer poisoned");
        if !may_campaign {
            // A leader, a learner or a stopped node: nothing to wait for.
            t.heard(now);
            return false;
        }
        if t.due(now) {
            t.campaigned(now, draw);
            return true;
        }
        false
    }
}

/// Sends the leader's heartbeats, and campaigns when the timer says so; stops on shutdown or when
/// Raft stops.
pub async fn run(
    raft: Raft,
    id: NodeId,
    election: Election,
    heartbeat: Duration,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let (leader, may_campaign) = {
            let m = raft.metrics();
            let m = m.borrow();
            let voter = m.membership_config.membership().voter_ids().any(|v| v == id);
            (
                m.state == ServerState::Leader,
                voter && matches!(m.state, ServerState::Follower | ServerState::Candidate),
            )
        };
        let now = Instant::now();
        if !leader {
            last_beat = None;
        } else if last_beat.is_none_or(|t| now >= t + heartbeat) {
            last_beat = Some(now);
            if raft.trigger().heartbeat().await.is_err() {
                return; // Raft has stopped.
            }
        }
        if election.poll(now, may_campaign, rand::random()) {
            tracing::info!(id, "no leader heard within the election timeout: campaigning");
            if raft.trigger().elect().await.is_err() {
                return; // Raft has stopped.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_millis(350);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_wait_is_one_max_longer() {
        let t0 = Instant::now();
        let t = Timer::new(MIN, MAX, t0, 0.0);
        assert!(!t.due(t0 + ms(599)));
        assert!(t.due(t0 + ms(600)));
        let mut t = Timer::new(MIN, MAX, t0, 0.999);
        assert!(!t.due(t0 + ms(699)));
        // Once a leader was heard, waits are back to [min, max) after it.
        t.heard(t0 + ms(100));
        assert!(!t.due(t0 + ms(100) + MAX - ms(1)));
        assert!(t.due(t0 + ms(100) + MAX));
    }

    #[test]
    fn hearing_a_leader_pushes_the_campaign_back() {
        let t0 = Instant::now();
        let mut t = Timer::new(MIN, MAX, t0, 0.5);
        t.campaigned(t0, 0.0); // timeout 250 ms from t0
        t.heard(t0 + ms(200));
        assert!(!t.due(t0 + ms(449)));
        assert!(t.due(t0 + ms(450)));
        // An older instant (a late-arriving report) never moves it back.
        t.heard(t0 + ms(10));
        assert!(!t.due(t0 + ms(449)));
    }

    #[test]
    fn every_campaign_draws_a_new_timeout() {
        let t0 = Instant::now();
        let mut t = Timer::new(MIN, MAX, t0, 0.0);
        t.campaigned(t0, 0.0);
        assert_eq!(t.deadline(), t0 + MIN);
        t.campaigned(t0 + MIN, 0.5);
        assert_eq!(t.deadline(), t0 + MIN + ms(300));
        t.campaigned(t0, 2.0); // out-of-range draws are clamped
        assert_eq!(t.deadline(), t0 + MAX);
    }

    #[test]
    fn a_longer_log_elsewhere_backs_off_by_one_max() {
        let t0 = Instant::now();
        let mut t = Timer::new(MIN, MAX, t0, 0.0);
        t.campaigned(t0, 0.0);
        t.greater_log(t0 + ms(5), 0.0);
        assert!(!t.due(t0 + ms(5) + MAX + MIN - ms(1)));
        assert!(t.due(t0 + ms(5) + MAX + MIN));
        // Only for that wait: once a leader is heard, waits are back to [min, max).
        t.heard(t0 + ms(10));
        assert!(t.due(t0 + ms(10) + MIN));
    }

    #[test]
    fn leaders_and_learners_never_campaign() {
        let t0 = Instant::now();
        let e = Election(Arc::new(Mutex::new(Timer::new(MIN, MAX, t0, 0.0))));
        // Far past the deadline, but not allowed to campaign: not due, and the wait restarts.
        assert!(!e.poll(t0 + ms(10_000), false, 0.0));
        let restarted = t0 + ms(10_000);
        assert!(
            !e.poll(restarted + MIN - ms(1), true, 0.0),
            "the wait restarted when it could not campaign"
        );
        assert!(e.poll(restarted + MIN, true, 0.0));
        // Having campaigned, the next campaign waits a fresh timeout.
        assert!(!e.poll(restarted + MIN + ms(1), true, 0.0));
        assert!(e.poll(restarted + MIN * 2, true, 0.0));
    }
}
