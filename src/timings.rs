//! Every duration triad uses that relates to another one, in one place, with the relations
//! written down and checked: at compile time where both sides are constants, at start-up
//! ([`check_master`]) where one side comes from a master's configuration.
//!
//! The chains that matter:
//! - **Executor liveness**: heartbeat interval < fencing window ([`SELF_FENCE_FRACTION`] of the
//!   TTL) < TTL. An executor that misses beats kills its attempts once the window has passed
//!   without an acknowledged beat; the leader declares it dead only a full TTL after the last
//!   beat it heard, so the margin between the two covers clock-rate differences and the kill.
//!   A heartbeat at or past the window would fence a healthy executor between two beats.
//! - **Request deadlines**: leader wait < forward deadline < client call deadline < client
//!   retry budget. A follower waits up to the leader wait for a leader and then forwards with
//!   the forward deadline; the leader's own commit is bounded by the leader wait. Each layer
//!   thus answers (with its own, precise error) before the layer above it gives up.
//! - **Raft**: heartbeat < election minimum < election maximum, with room for the voters' lease
//!   (checked in `master::config`, since all three come from the config).
//!
//! Leaf module: imports nothing from the crate, so every layer may use it.

use std::time::Duration;

/// The self-fencing window is this fraction of the executor TTL: attempts are killed once
/// heartbeats have gone unacknowledged this long, leaving the rest of the TTL as margin for
/// clock-rate differences and the kill itself.
pub const SELF_FENCE_FRACTION: f64 = 0.6;

/// The self-fencing window of a TTL: attempts die after this long without an acknowledged beat,
/// a start runs only this long after the beat it names was sent, and the leader gives a start up
/// only this long after it received that beat (see `crate::fencing`).
pub fn fence_window(ttl: Duration) -> Duration {
    ttl.mul_f64(SELF_FENCE_FRACTION)
}

/// [`fence_window`] in whole milliseconds, rounded down, for compile-time checks and messages.
pub const fn fence_window_ms(ttl_ms: u64) -> u64 {
    // 0.6 as an exact ratio; the const assertion below keeps it in step with the fraction.
    ttl_ms / 5 * 3 + ttl_ms % 5 * 3 / 5
}

// ---- Executor liveness (defaults of `master::config::ExecutorTimings`) ----

/// An executor not heard from for this long is declared dead (the default `ttl_ms`).
pub const DEFAULT_EXECUTOR_TTL: Duration = Duration::from_secs(5);
/// The heartbeat interval executors are told to use (the default `heartbeat_ms`). An executor
/// also assumes these two until its registration tells it the leader's values.
pub const DEFAULT_EXECUTOR_HEARTBEAT: Duration = Duration::from_secs(1);
/// Deadline (and retry budget) of one heartbeat call: shorter than the heartbeat interval, so a
/// slow master costs one beat, not a queue of them (the executor's heartbeat client).
pub const HEARTBEAT_CALL_TIMEOUT: Duration = Duration::from_millis(800);

// ---- Master request path ----

/// How long a request waits for a leader (and a leader for a commit) before failing
/// UNAVAILABLE: the default `raft.leader_wait_ms`.
pub const DEFAULT_LEADER_WAIT: Duration = Duration::from_secs(3);
/// Deadline of a request a follower forwarded to the leader.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for asking a peer master for its status (`ClusterStatus`).
pub const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(1000);
/// Deadline of one StartAttempt/StopAttempt call from the leader to an executor.
pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The leader duties' round interval.
pub const LEADER_TICK: Duration = Duration::from_millis(100);
/// A full planning pass at least this often, whatever changed (the leader's safety net).
pub const SAFETY_PASS_EVERY: Duration = Duration::from_secs(1);
/// How often gRPC health re-evaluates the leader's lease without a Raft metrics change.
pub const HEALTH_TICK: Duration = Duration::from_millis(250);

// ---- Client ----

/// Deadline of one client call to one master.
pub const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(6);
/// How long a client keeps trying masters in turn before giving up.
pub const CLIENT_RETRY_FOR: Duration = Duration::from_secs(20);
/// A `WatchEvents` stream carries at least one message this often (a progress mark when idle).
pub const EVENTS_IDLE_MARK: Duration = Duration::from_secs(2);
/// A client gives up on a `WatchEvents` stream silent this long and resumes on another master.
pub const EVENTS_IDLE_TIMEOUT: Duration = Duration::from_secs(6);
/// Connect timeout of every gRPC channel (`api::channel`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// HTTP/2 keep-alive ping interval and its timeout on every gRPC channel.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

// ---- Stopping ----

/// How long a master's graceful stop may take per step (server, duties, Raft) before in-flight
/// work is dropped. Longer than the executor's kill grace: a master has no processes to kill,
/// but its in-flight requests are bounded by the leader wait (3 s by default).
pub const MASTER_STOP_GRACE: Duration = Duration::from_secs(3);
/// Grace between SIGTERM and SIGKILL when an executor stops an attempt: the job's time to clean
/// up, short enough that a stop completes well within a fencing window.
pub const EXECUTOR_KILL_GRACE: Duration = Duration::from_secs(2);
/// How long a stopping executor keeps trying to deliver its last reports and to deregister.
pub const EXECUTOR_FAREWELL: Duration = Duration::from_secs(5);
/// How long `triad dev` waits for its child processes to exit after SIGTERM before SIGKILL:
/// longer than every stop above (a master's steps, an executor's kill grace plus farewell).
pub const DEV_STOP_GRACE: Duration = Duration::from_secs(5);
/// How long `triad dev` waits for its cluster to come up.
pub const DEV_READY_TIMEOUT: Duration = Duration::from_secs(30);

// ---- Compile-time relations ----

const fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

const _: () = {
    // The fencing window leaves a margin before the TTL and is well above zero.
    assert!(SELF_FENCE_FRACTION > 0.0 && SELF_FENCE_FRACTION < 1.0);
    assert!(fence_window_ms(1000) == 600 && fence_window_ms(5) == 3, "fence_window_ms is 0.6");
    // Executor liveness defaults: heartbeat < fencing window < TTL.
    assert!(ms(DEFAULT_EXECUTOR_HEARTBEAT) < fence_window_ms(ms(DEFAULT_EXECUTOR_TTL)));
    assert!(fence_window_ms(ms(DEFAULT_EXECUTOR_TTL)) < ms(DEFAULT_EXECUTOR_TTL));
    // One heartbeat call ends before the next beat is due.
    assert!(ms(HEARTBEAT_CALL_TIMEOUT) < ms(DEFAULT_EXECUTOR_HEARTBEAT));
    // Request deadlines: leader wait < forward < client call < client retry budget.
    assert!(ms(DEFAULT_LEADER_WAIT) < ms(FORWARD_TIMEOUT));
    assert!(ms(FORWARD_TIMEOUT) < ms(CLIENT_CALL_TIMEOUT));
    assert!(ms(CLIENT_CALL_TIMEOUT) < ms(CLIENT_RETRY_FOR));
    // An idle event stream is marked well before its client would give up on it.
    assert!(2 * ms(EVENTS_IDLE_MARK) < ms(EVENTS_IDLE_TIMEOUT));
    // A peer's status arrives (or is given up) before a client's status call does.
    assert!(ms(PEER_STATUS_TIMEOUT) < ms(CLIENT_CALL_TIMEOUT));
    // The leader's round is finer than its safety pass.
    assert!(ms(LEADER_TICK) < ms(SAFETY_PASS_EVERY));
    // `triad dev` outwaits the processes it stops.
    assert!(ms(DEV_STOP_GRACE) >= ms(MASTER_STOP_GRACE));
    assert!(ms(DEV_STOP_GRACE) >= ms(EXECUTOR_KILL_GRACE));
};

// ---- Start-up relations of configured values ----

/// Checks a master's executor timings and leader wait against each other and against the
/// constants above; the error names both values of the broken relation.
pub fn check_master(ttl_ms: u64, heartbeat_ms: u64, leader_wait_ms: u64) -> Result<(), String> {
    check_executor_liveness(ttl_ms, heartbeat_ms)?;
    let forward = ms(FORWARD_TIMEOUT);
    if leader_wait_ms == 0 || leader_wait_ms >= forward {
        return Err(format!(
            "raft.leader_wait_ms ({leader_wait_ms}) must be above 0 and shorter than the forward \
             deadline ({forward} ms): a forwarded request must get the leader's answer, not time out"
        ));
    }
    Ok(())
}

/// heartbeat < fencing window (< TTL, by [`SELF_FENCE_FRACTION`]).
pub fn check_executor_liveness(ttl_ms: u64, heartbeat_ms: u64) -> Result<(), String> {
    let window = fence_window_ms(ttl_ms);
    if heartbeat_ms == 0 || heartbeat_ms >= window {
        return Err(format!(
            "executors.heartbeat_ms ({heartbeat_ms}) must be above 0 and shorter than the fencing \
             window ({window} ms, {} % of executors.ttl_ms {ttl_ms}): a healthy executor would \
             fence itself between two beats",
            (SELF_FENCE_FRACTION * 100.0) as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass() {
        check_master(ms(DEFAULT_EXECUTOR_TTL), ms(DEFAULT_EXECUTOR_HEARTBEAT), 3000).unwrap();
    }

    #[test]
    fn fence_window_ms_agrees_with_fence_window() {
        for ttl in [0u64, 1, 4, 5, 7, 100, 999, 1000, 5000, 12_345, 3_600_000] {
            let exact = fence_window(Duration::from_millis(ttl)).as_millis() as u64;
            // mul_f64 may land a nanosecond either side of a whole millisecond.
            assert!(exact.abs_diff(fence_window_ms(ttl)) <= 1, "ttl {ttl}");
        }
    }

    #[test]
    fn a_heartbeat_at_or_past_the_fencing_window_is_refused_naming_both() {
        let e = check_executor_liveness(5000, 3000).unwrap_err();
        assert!(e.contains("heartbeat_ms (3000)") && e.contains("3000 ms") && e.contains("5000"));
        let e = check_executor_liveness(1000, 5000).unwrap_err();
        assert!(e.contains("heartbeat_ms (5000)") && e.contains("ttl_ms 1000"), "{e}");
        assert!(check_executor_liveness(5000, 0).is_err());
        check_executor_liveness(5000, 2999).unwrap();
    }

    #[test]
    fn a_leader_wait_at_or_past_the_forward_deadline_is_refused_naming_both() {
        let e = check_master(5000, 1000, 5000).unwrap_err();
        assert!(e.contains("leader_wait_ms (5000)") && e.contains("(5000 ms)"), "{e}");
        assert!(check_master(5000, 1000, 0).is_err());
        check_master(5000, 1000, 4999).unwrap();
    }
}
