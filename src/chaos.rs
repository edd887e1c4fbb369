//! Planted bugs for the chaos suite (`jepsen/`), to prove its checkers catch real violations.
//!
//! Off unless the process environment sets `TRIAD_CHAOS_BUG` to one of:
//! - `ack-before-commit`: a master acknowledges a submission before it is committed;
//! - `skip-fencing`: executors never fence themselves and the leader never tells an executor to
//!   kill a stale attempt.
//! - `cron-no-dedup`: a cron firing is applied without its dedup key (cron, scheduled time), and a
//!   new leader proposes its predecessor's last firing of every cron again (as a leader unsure
//!   whether that firing committed would), so a time proposed twice creates two jobs.
//! - `no-fsync`: the Raft log tells openraft an append (or a vote) is done as soon as it is
//!   written to the OS, before any `fdatasync`; the log is synced only every 500 ms, on the next
//!   append after that (what sled's background flusher did for the old log). A power loss then
//!   forgets entries a quorum acknowledged, and votes.
//!
//! Never set this in production: each one breaks a SPEC guarantee on purpose.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    AckBeforeCommit,
    SkipFencing,
    CronNoDedup,
    NoFsync,
}

/// Is this planted bug switched on in this process?
pub fn on(bug: Bug) -> bool {
    static BUG: OnceLock<Option<Bug>> = OnceLock::new();
    let active = *BUG.get_or_init(|| {
        let b = match std::env::var("TRIAD_CHAOS_BUG").as_deref() {
            Ok("ack-before-commit") => Some(Bug::AckBeforeCommit),
            Ok("skip-fencing") => Some(Bug::SkipFencing),
            Ok("cron-no-dedup") => Some(Bug::CronNoDedup),
            Ok("no-fsync") => Some(Bug::NoFsync),
            _ => None,
        };
        if let Some(b) = b {
            tracing::warn!(bug = ?b, "planted chaos bug active: this process breaks a guarantee on purpose");
        }
        b
    });
    active == Some(bug)
}
