//! Leader-only duties, started when this master wins leadership and stopped when it loses it:
//!
//! - **liveness monitor**: declares an executor dead (a Raft command) once it has been silent for
//!   the TTL; the state machine then marks its attempts lost and the tasks pending again;
//! - **scheduler**: feeds a snapshot of the state to the pure planner and commits its placements
//!   through Raft *before* any executor hears of them (each with a fresh fencing token);
//! - **dispatcher**: starts committed assignments on their executors, retrying with backoff, and
//!   stops the attempts of cancelled or failed jobs;
//! - **retention** (issue 14): proposes collections of what is due, in bounded batches at a
//!   bounded rate, and has the deleted jobs' output deleted (`super::retention`).
//!
//! Every decision is made by the pure [`core::Core`] (golden scenarios in `testdata/`); this
//! module is the shell: it follows leadership ([`watch`]), reads the clock, holds the Raft handle
//! and the RPC clients, and executes the core's effects in order ([`rpc`] sends the calls).
//!
//! A new leader first confirms its leadership (read-index) and gives every executor a full fresh
//! TTL before it may declare any dead. Everything the duties know that is not in the replicated
//! state (last-seen times, dispatch retries) is rebuilt from scratch by each new leader.

pub mod core;
mod rpc;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::mpsc;

use self::core::{Core, Dispatched, Effect, Now, TICK};
use super::liveness::Liveness;
use super::node::{now_ms, LocalError, Node};
use crate::master::config::ExecutorTimings;
use crate::shutdown::{self, Shutdown};
use crate::state::{Command, Retention};

/// Watches Raft leadership and runs the duties exactly while this master leads.
pub async fn watch(
    node: Arc<Node>,
    liveness: Arc<Liveness>,
    timings: ExecutorTimings,
    retention: Retention,
    mut stop: Shutdown,
) {
    let mut rx = node.raft.metrics();
    let mut running: Option<(u64, shutdown::Trigger, tokio::task::JoinHandle<()>)> = None;
    loop {
        let (leading, term) = {
            let m = rx.borrow_and_update();
            (m.state == ServerState::Leader && m.current_leader == Some(node.id), m.current_term)
        };
        let keep = matches!(&running, Some((t, _, h)) if leading && *t == term && !h.is_finished());
        if !keep {
            if let Some((t, trigger, _)) = running.take() {
                tracing::info!(term = t, "leader duties stopping");
                trigger.fire();
            }
            if leading {
                tracing::info!(term, "leader duties starting");
                let (trigger, sd) = shutdown::channel();
                let h = tokio::spawn(run(
                    node.clone(),
                    term,
                    liveness.clone(),
                    timings.clone(),
                    retention,
                    sd,
                ));
                running = Some((term, trigger, h));
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = stop.wait() => break,
        }
    }
    if let Some((_, trigger, _)) = running {
        trigger.fire();
    }
}

/// The shell of one term's duties: the core and what executes its effects.
struct Duties {
    node: Arc<Node>,
    liveness: Arc<Liveness>,
    core: Core,
    /// Where dispatch tasks report how their start ended.
    tx: mpsc::UnboundedSender<Dispatched>,
}

/// One term's duties: take over, then a round per tick, per applied entry and per dispatch answer,
/// until `stop` fires or leadership is lost.
async fn run(
    node: Arc<Node>,
    term: u64,
    liveness: Arc<Liveness>,
    timings: ExecutorTimings,
    retention: Retention,
    mut stop: Shutdown,
) {
    if !take_over(&node, term, &liveness, &mut stop).await {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ttl = Duration::from_millis(timings.ttl_ms);
    let core = Core::new(ttl, Instant::now()).with_retention(retention);
    let mut d = Duties { node: node.clone(), liveness, core, tx };
    let mut applied_rx = node.raft.metrics();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_applied = None;
    loop {
        // A tick plans everything (retry backoffs expire without any state change); other wakeups
        // plan only what changed. The metrics watch also moves on every replication heartbeat:
        // only a newly applied entry is worth a round.
        let full = tokio::select! {
            _ = stop.wait() => return,
            _ = tick.tick() => true,
            r = applied_rx.changed() => {
                if r.is_err() {
                    return;
                }
                let applied = applied_rx.borrow_and_update().last_applied;
                if applied == last_applied {
                    continue;
                }
                last_applied = applied;
                false
            }
            Some(res) = rx.recv() => { d.on_dispatch(res); false }
        };
        while let Ok(res) = rx.try_recv() {
            d.on_dispatch(res);
        }
        if let Err(LocalError::NotLeader) = d.round(full).await {
            return;
        }
    }
}

/// Confirms leadership with a quorum and catches up with everything committed, then starts
/// every executor's grace period. False: the duties must not run (stopped, or no longer leader).
async fn take_over(node: &Node, term: u64, liveness: &Liveness, stop: &mut Shutdown) -> bool {
    // Stopped duties of an older term may still be here (their catch-up does not watch `stop`):
    // they must neither act nor move `ready_term` back (which would make the current term's
    // leader refuse every heartbeat as "catching up", for good).
    let caught_up = tokio::select! {
        r = node.linearize() => r.is_ok(),
        _ = stop.wait() => false,
    };
    if !caught_up || stop.is_fired() {
        return false;
    }
    node.ready_term.fetch_max(term, std::sync::atomic::Ordering::SeqCst);
    let applied = node.applied.read().expect("poisoned");
    core::grant_grace(&applied.state, liveness, Instant::now());
    true
}

impl Duties {
    fn on_dispatch(&mut self, res: Dispatched) {
        let tries = self.core.on_dispatch(&res, Instant::now());
        match res {
            Dispatched::Started(_) => {}
            Dispatched::Failed(token, why) => tracing::debug!(token, ?tries, "start failed: {why}"),
            Dispatched::Refused(token, why) => tracing::info!(token, "start refused: {why}"),
        }
    }

    /// One round: the core decides, this executes its effects in order. Returns NotLeader when
    /// leadership is gone. Without a tick, a new job or a change of the executors, it looks at no
    /// executor and no job: its cost does not grow with the cluster.
    async fn round(&mut self, tick: bool) -> Result<(), LocalError> {
        let now = Now { at: Instant::now(), wall: now_ms() };
        let unplaceable = self.core.sweep(&self.liveness, now.at, tick);
        // A round after an apply that changed nothing about the executors plans only the new
        // jobs: light, so it runs right here. Ticks (dead scans, full passes) and re-plans after
        // a change go off the async worker: a pass over a large state holds the state's read
        // lock, and apply (waiting for the write lock) must not pin the runtime's other worker
        // meanwhile.
        let light = !tick
            && self
                .node
                .applied
                .try_read()
                .is_ok_and(|a| self.core.executors_unchanged(&a.state, &self.liveness));
        let (core, liveness) = (&mut self.core, &*self.liveness);
        let effects = crate::store::with_read(&self.node.applied, light, |applied| {
            let planned = core.plan(&applied.state, liveness, now, tick, unplaceable, !light);
            // The second clock read: it times the planning pass and dates the dispatch.
            let planned_at = Now { at: Instant::now(), ..now };
            core.dispatch(&applied.state, liveness, planned, planned_at, tick)
        });
        for effect in effects {
            match effect {
                Effect::Propose(commands) => self.propose(commands, now.at).await?,
                Effect::Start { to, req } => rpc::start(&self.node, self.tx.clone(), to, *req),
                Effect::Stop { to, token } => rpc::stop(&self.node, to, token),
                Effect::Collect(cmd) => {
                    let ttl = self.core.ttl();
                    match super::retention::commit(&self.node, &self.liveness, ttl, *cmd).await {
                        Err(LocalError::NotLeader) => return Err(LocalError::NotLeader),
                        Err(LocalError::Status(s)) => {
                            tracing::info!("retention: collection not committed: {}", s.message())
                        }
                        Ok(_) => {}
                    }
                }
                Effect::DeleteOutput { to, jobs } => {
                    super::retention::delete_output(&self.node, to, jobs)
                }
            }
        }
        Ok(())
    }

    /// Commits the round's commands (the core puts them before any RPC of the round) and
    /// counts them in the metrics.
    async fn propose(&self, commands: Vec<Command>, started: Instant) -> Result<(), LocalError> {
        let m = crate::metrics::get();
        for cmd in &commands {
            match cmd {
                Command::ExecutorDead { id, .. } => {
                    let ttl_ms = self.core.ttl().as_millis() as u64;
                    tracing::warn!(executor = %id, ttl_ms, "executor silent past its TTL: declaring it dead");
                    let lost =
                        self.node.applied.read().expect("poisoned").state.live_attempts_on(id);
                    m.reschedules.with_label_values(&["executor_dead"]).inc_by(lost.len() as u64);
                }
                Command::TaskLost { .. } => {
                    m.reschedules.with_label_values(&["start_failed"]).inc();
                }
                Command::AssignTasks { assignments, .. } => {
                    m.placements.inc_by(assignments.len() as u64);
                }
                _ => {}
            }
        }
        // The leader's jitter draw for the retry backoff of whatever these lose (`state::policy`).
        let commands = commands
            .into_iter()
            .map(|c| match c {
                Command::ExecutorDead { .. } | Command::TaskLost { .. } => {
                    c.with_jitter(rand::random())
                }
                c => c,
            })
            .collect();
        let r = self.node.write(commands).await;
        let label = if r.is_ok() { "ok" } else { "error" };
        m.schedule_seconds.with_label_values(&[label]).observe(started.elapsed().as_secs_f64());
        r.map(|_| ())
    }
}
