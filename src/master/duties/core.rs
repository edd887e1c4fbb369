//! The leader duties' decisions, pure: given the replicated state, the liveness table, what this
//! leader has dispatched so far and the time, which commands to propose and which attempts to
//! start or stop. No clock, no I/O, no Raft: the shell ([`super`]) reads the clock, executes the
//! [`Effect`]s in order and feeds dispatch answers back with [`Core::on_dispatch`]. The golden
//! scenarios in `testdata/` drive this exactly as the shell does.
//!
//! A round is two calls, [`Core::plan`] (dead scan and placement) and [`Core::dispatch`] (starts,
//! stops, give-ups, and the effects in the order they must run). They are two so that the shell
//! can time the planning pass between them: its cost sets how often full passes may run.
//!
//! Rules (each kept exactly as the chaos suite proved them):
//! - **Placements before starts**: a placement is proposed in the round's one Raft entry, and its
//!   start is sent only by a later round that finds the attempt `Assigned` in the applied state.
//!   [`Effect::Propose`], when present, comes first; the shell runs nothing after a failed one.
//! - **Dead only after a full TTL of this leader's silence**: [`grant_grace`] gives every executor
//!   a fresh TTL when a leader takes over; the dead scan runs on ticks only, and is skipped when
//!   nothing can have changed since a clean one ([`Core::plan`]).
//! - **A start is given up only a fencing window after the heartbeat it named was received**
//!   (`fencing::may_give_up`), and only after [`MAX_START_TRIES`] failed tries or a
//!   refusal, so a start request still in the network is refused by the executor by then.
//! - **Each cancelled attempt is stopped once** per leader (heartbeat reconciliation kills what a
//!   lost stop missed).
//! - **Retention (issue 14)**: on ticks, at most one collection per [`GC_SPACING`] (per
//!   [`GC_BUSY_SPACING`] while the last one was a full batch), of at most [`GC_BATCH`] entries
//!   of each kind, in its own Raft entry after the round's others: collection keeps up with up
//!   to `GC_BATCH / GC_BUSY_SPACING` deletions a second and never crowds out submissions. The
//!   deleted jobs' output is then deleted on the executors that ran them ([`Core::collected`]).
//!   Each collection also names the finished runs of [`GC_CRONS`] crons past their history
//!   limits (issue 17), resuming the walk of the crons where the last collection left it.
//! - **Batch duties** (issue 16): each tick proposes `ExpireJob` for every job past its deadline,
//!   every round `ResolveDependencies` for every waiting job whose dependencies all ended (the
//!   state machine re-checks both against the command's `now` and its own state), both before
//!   the round's placements; the stop scan covers every terminal job (a deadline or a failed task
//!   ends a job like a cancel) and each newly suspended job once.
//! - **Planning cadence**: a round after an apply plans only newly submitted jobs unless the
//!   executors changed; full passes (every pending task) run on ticks only when they can place
//!   something new, and as a rate-limited safety net.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::super::liveness::{Liveness, View};
use crate::api::pb;
use crate::scheduler::{self, ExecutorView, PendingTask, PlanInput};
use crate::state::{
    Assignment, AttemptState, Collected, Command, ExecutorState, JobId, Millis, Retention, State,
    TaskState, Token,
};

/// Retention: most jobs (and, separately, tombstones and executors) one collection names.
pub const GC_BATCH: usize = 1000;
/// Crons whose history limits one collection reads (a slice of a walk resumed on the next one):
/// at most `GC_CRONS * MAX_RUNS` run lookups per collection, whatever the number of crons.
pub const GC_CRONS: usize = 64;
/// Retention: a collection is proposed at most this often...
pub const GC_SPACING: Duration = Duration::from_secs(1);
/// ...or this often while the last one was a full batch (a backlog drains at 4000 jobs/s).
pub const GC_BUSY_SPACING: Duration = Duration::from_millis(250);
/// Retention: most job ids one DeleteOutput request carries.
pub const DELETE_OUTPUT_BATCH: usize = 1000;

/// Most placements committed in one Raft entry.
pub const MAX_PLACEMENTS_PER_ROUND: usize = 2000;
/// A start that failed this many times is given up: the attempt is reported lost.
pub const MAX_START_TRIES: u32 = 6;
/// A failed start is retried after `START_RETRY_BASE << tries` (tries capped at
/// [`START_RETRY_MAX_SHIFT`]): 200 ms, 400 ms, ... 6.4 s.
const START_RETRY_BASE: Duration = Duration::from_millis(100);
const START_RETRY_MAX_SHIFT: u32 = 6;
/// The duties loop runs at least this often even when nothing is applied.
pub use crate::timings::LEADER_TICK as TICK;
/// A full planning pass (every pending task) costs time proportional to the backlog while
/// holding the state's read lock, which apply needs, so it runs only when it can place something
/// a partial pass cannot: when the executors or their loads changed (at once), or when a retry
/// backoff seen by the last pass has ended (at most 1/FULL_PASS_SPACING of the time).
const FULL_PASS_SPACING: u32 = 20;
/// A change of the executors or their loads (any applied command but a submission: placements,
/// reports, registrations) calls for a full pass, which runs at once unless the last one was
/// long: then not before CHANGE_PASS_SPACING of its lengths after it (at most 1/(1 + this) of the
/// time in full passes). With 300,000 pending tasks that fit nowhere, a pass takes ~1 s on a busy
/// 2-core machine; run after every placement and report, passes back to back kept a core and
/// the state's read lock busy for good, and the new leader was deposed again and again.
const CHANGE_PASS_SPACING: u32 = 4;
/// Besides those, a full pass runs as a safety net at most 1/SAFETY_PASS_SPACING of the time and
/// at least every SAFETY_PASS_EVERY. A backlog that cannot be placed thus costs apply a stall of
/// one pass per second or less, instead of one every 20 pass-lengths (which showed in the
/// submission p99 with 10^5 pending jobs).
const SAFETY_PASS_SPACING: u32 = 1000;
use crate::timings::SAFETY_PASS_EVERY;
/// Cancelled attempts younger than this are stopped by a new leader too (older ones are
/// reconciled by heartbeats anyway).
pub const STOP_HORIZON_MS: u64 = 10 * 60 * 1000;
/// Each scan for cancelled attempts re-reads this much before where the last one ended, for
/// cancels stamped before but applied after it.
pub const STOP_SCAN_OVERLAP_MS: u64 = 5_000;
/// Why a start given up on is reported lost.
pub const START_GIVEN_UP: &str = "the executor could not start the attempt";

/// The time of a round, read once by the shell: the monotonic instant (liveness, retries,
/// leases) and the leader's wall clock in ms (what commands carry).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub at: Instant,
    pub wall: Millis,
}

/// What the shell must do, in this order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Commit these through Raft as one entry (dead executors, given-up starts, placements).
    /// Nothing after it may run unless it committed.
    Propose(Vec<Command>),
    /// Send this StartAttempt to executor `to`; answer with [`Core::on_dispatch`].
    Start { to: Worker, req: Box<pb::StartAttemptRequest> },
    /// Stop this attempt on executor `to` (best effort, no answer needed).
    Stop { to: Worker, token: Token },
    /// Retention: commit this collection in its own entry, then run [`Core::collected`] on its
    /// outcome. Always the round's last effect.
    Collect(Box<Command>),
    /// Retention: tell executor `to` to delete the output of these deleted jobs (best effort,
    /// with a deadline; executors expire output after `output_ttl` anyway).
    DeleteOutput { to: Worker, jobs: Vec<JobId> },
}

/// How a start request ended, as the dispatch task reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dispatched {
    Started(Token),
    /// Retry later (with backoff).
    Failed(Token, String),
    /// The executor refused for good (stale epoch, draining, lease): the attempt is lost.
    Refused(Token, String),
}

/// Which pending tasks a round's placement looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Nothing new to place and no capacity change: no planning at all.
    Skipped,
    /// Only the jobs submitted after this seq.
    NewJobs { after: u64 },
    /// Every pending task.
    Full,
}

/// The first half of a round, handed to [`Core::dispatch`].
#[derive(Debug)]
pub struct Planned {
    /// When the round started (to time a full pass).
    started: Instant,
    pub pass: Pass,
    /// `ExecutorDead` commands.
    dead: Vec<Command>,
    placements: Vec<Assignment>,
}

/// A start this leader is dispatching (an attempt `Assigned` in the state).
struct Pending {
    job: JobId,
    index: u32,
    tries: u32,
    /// When the next request may go out; none: never (it was accepted, the entry waits for the
    /// Started report to land, or for the attempt to leave `Assigned` otherwise).
    next_try: Option<Instant>,
    in_flight: bool,
    /// When this leader received the heartbeat its latest request for the start named (none:
    /// no request sent yet). The start is given up only a fencing window after it
    /// (`fencing`), so a request still in the network is refused by then.
    stamp: Option<Instant>,
}

/// Everything the duties remember between rounds: leader memory, rebuilt by each new leader.
pub struct Core {
    ttl: Duration,
    /// What the last plan saw of the executors: the state's executor-change count and the
    /// liveness generation. When both are unchanged, only newly submitted jobs can be placed,
    /// so a round plans just those.
    executors_seen: (u64, u64),
    /// Jobs up to this seq have been considered by a plan.
    planned_seq: u64,
    /// Jobs (by seq) with tasks that fit on no executor as of `executors_seen`: skipped until the
    /// executors or their loads change, so a backlog that cannot be placed costs nothing per round.
    unplaceable: HashSet<u64>,
    /// Earliest time of the next full pass for an ended backoff (see [`FULL_PASS_SPACING`]).
    next_full: Instant,
    /// Earliest time of the next full pass for a change of the executors or their loads (see
    /// [`CHANGE_PASS_SPACING`]).
    next_change_full: Instant,
    /// Time of the next safety-net full pass (see [`SAFETY_PASS_SPACING`]).
    next_safety: Instant,
    /// The earliest end of a retry backoff (leader wall ms) among the tasks the last passes left
    /// out for it: a full pass is due then.
    backoff_due: Option<Millis>,
    starts: HashMap<Token, Pending>,
    /// Cancelled attempts already stopped, among those the stop scan still covers.
    stopped: HashSet<Token>,
    /// Where the next scan for cancelled attempts to stop starts (leader wall ms; none: this
    /// leader has not scanned yet, so it looks back [`STOP_HORIZON_MS`]).
    stop_scan_from: Option<Millis>,
    /// Suspended jobs (by seq) whose attempts this leader has stopped (forgotten on resume).
    suspended_scanned: HashSet<u64>,
    /// The state's executor-change count at the last dead scan that found no one to declare
    /// dead (none: scan at the next tick). See [`Core::needs_dead_scan`].
    dead_scan_clean: Option<u64>,
    /// Retention: the cluster's policy (none: this leader collects nothing by itself).
    retention: Option<Retention>,
    /// Retention: no collection before this.
    next_gc: Instant,
    /// Retention of cron histories: the next collection reads the crons after this one (none:
    /// from the first), [`GC_CRONS`] of them.
    cron_scan_from: Option<String>,
}

/// A new leader's grace: every executor in the state gets a full fresh TTL from `now` before this
/// leader may declare it dead (a failover never kills executors that beat to the old leader).
pub fn grant_grace(state: &State, liveness: &Liveness, now: Instant) {
    let ids: Vec<_> = state.executors().map(|e| e.id.clone()).collect();
    liveness.reset(&ids, now);
}

/// How long an executor may be silent and still be given work: its own fencing window less a
/// tick, so that no start sent after a tick's sweep reaches an executor refusing it for silence.
/// (Shorter than the TTL, which [`Core::needs_dead_scan`] relies on.)
pub fn placement_window(ttl: Duration) -> Duration {
    crate::timings::fence_window(ttl).saturating_sub(TICK)
}

impl Core {
    /// The duties of a leader that took over at `now` (after [`grant_grace`]).
    pub fn new(ttl: Duration, now: Instant) -> Core {
        Core {
            ttl,
            executors_seen: (u64::MAX, u64::MAX),
            planned_seq: 0,
            unplaceable: HashSet::new(),
            next_full: now,
            next_change_full: now,
            next_safety: now,
            backoff_due: None,
            starts: HashMap::new(),
            stopped: HashSet::new(),
            stop_scan_from: None,
            suspended_scanned: HashSet::new(),
            dead_scan_clean: None,
            retention: None,
            next_gc: now,
            cron_scan_from: None,
        }
    }

    /// Retention: this leader collects under `policy` (its first collection on its first tick).
    pub fn with_retention(mut self, policy: Retention) -> Core {
        self.retention = Some(policy);
        self
    }

    /// Retention: the collection due on this tick, if one may be proposed now.
    fn collection(&mut self, state: &State, now: Now) -> Option<Command> {
        let policy = self.retention?;
        if now.at < self.next_gc {
            return None;
        }
        let after = self.cron_scan_from.as_deref();
        let cmd = state.collection_due(&policy, now.wall, GC_BATCH, after, GC_CRONS);
        self.cron_scan_from = state.cron_scan_end(after, GC_CRONS);
        let full = match &cmd {
            Some(Command::CollectGarbage { jobs, tombstones, executors, cron_runs, .. }) => {
                let most = [jobs.len(), tombstones.len(), executors.len(), cron_runs.len()];
                most.into_iter().max().unwrap_or(0) >= GC_BATCH
            }
            _ => false,
        };
        self.next_gc = now.at + if full { GC_BUSY_SPACING } else { GC_SPACING };
        cmd
    }

    /// Retention: after a collection (or a deletion) committed, the DeleteOutput calls for the
    /// jobs it deleted, one per executor that ran their attempts and is still known (batches of
    /// [`DELETE_OUTPUT_BATCH`]), by executor id. Pure, like every decision here.
    pub fn collected(state: &State, collected: &Collected) -> Vec<Effect> {
        let mut by_executor: std::collections::BTreeMap<&str, Vec<JobId>> = Default::default();
        for d in &collected.jobs {
            for e in &d.executors {
                by_executor.entry(e.as_str()).or_default().push(d.id);
            }
        }
        let mut effects = Vec::new();
        for (id, jobs) in by_executor {
            let Some(e) = state.executor(id) else { continue };
            if matches!(e.state, ExecutorState::Dead | ExecutorState::Left) {
                continue; // nothing is listening; its output expires by its own `output_ttl`
            }
            for chunk in jobs.chunks(DELETE_OUTPUT_BATCH) {
                effects.push(Effect::DeleteOutput { to: Worker::of(e), jobs: chunk.to_vec() });
            }
        }
        effects
    }

    /// The TTL executors are declared dead after.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records how a start request ended; returns its failed tries so far (none: not tracked).
    pub fn on_dispatch(&mut self, result: &Dispatched, now: Instant) -> Option<u32> {
        let token = match result {
            Dispatched::Started(t) | Dispatched::Failed(t, _) | Dispatched::Refused(t, _) => t,
        };
        let p = self.starts.get_mut(token)?;
        p.in_flight = false;
        match result {
            // Keep the entry until the Started report lands, with no further tries.
            Dispatched::Started(_) => p.next_try = None,
            Dispatched::Failed(..) => {
                p.tries += 1;
                p.next_try =
                    Some(now + START_RETRY_BASE * (1 << p.tries.min(START_RETRY_MAX_SHIFT)));
            }
            Dispatched::Refused(..) => p.tries = MAX_START_TRIES,
        }
        Some(p.tries)
    }

    /// Are the executors and their placeability as the last plan saw them? Then a round that is
    /// no tick can place only newly submitted jobs: it is light (it looks at no executor and no
    /// old job), so the shell may run it on the async worker.
    pub fn executors_unchanged(&self, state: &State, liveness: &Liveness) -> bool {
        (state.executor_changes(), liveness.generation()) == self.executors_seen
    }

    /// On ticks, marks executors silent for the [`placement_window`] unplaceable; returns how
    /// many entries are unplaceable (0 on other rounds).
    pub fn sweep(&self, liveness: &Liveness, now: Instant, tick: bool) -> usize {
        if tick {
            liveness.sweep(placement_window(self.ttl), now)
        } else {
            0
        }
    }

    /// Must this tick's dead scan look at every executor? Not when the last scan found no one
    /// to declare dead, the executors have not changed since (so every alive executor in the
    /// state had a fresh liveness entry then), and the sweep just found every entry placeable
    /// (so every entry is still fresh: see the liveness invariants). In the steady state of
    /// many heartbeating executors that skips a hash lookup per executor ten times a second.
    fn needs_dead_scan(&self, state: &State, unplaceable: usize) -> bool {
        unplaceable > 0 || self.dead_scan_clean != Some(state.executor_changes())
    }

    /// The first half of a round: the dead scan (ticks only) and placement. `unplaceable` is what
    /// [`Core::sweep`] returned this round. `may_full`: whether this round may run a full pass
    /// (the shell runs a round that may not on the async worker, so it must stay light: a full
    /// pass it would need waits for the next round, whose executors then differ from
    /// [`Core::executors_unchanged`]'s, so the shell runs that one off the async workers).
    pub fn plan(
        &mut self,
        state: &State,
        liveness: &Liveness,
        now: Now,
        tick: bool,
        unplaceable: usize,
        may_full: bool,
    ) -> Planned {
        let dead = if tick && self.needs_dead_scan(state, unplaceable) {
            self.dead_scan(state, &liveness.view(), now)
        } else {
            Vec::new()
        };
        let seen = (state.executor_changes(), liveness.generation());
        let changed = seen != self.executors_seen;
        let backoff_ended = self.backoff_due.is_some_and(|due| due <= now.wall);
        let full = may_full
            && ((changed && now.at >= self.next_change_full)
                || (tick
                    && now.at >= self.next_full
                    && (backoff_ended || now.at >= self.next_safety)));
        if full {
            if changed {
                self.unplaceable.clear();
            }
            // Only a full pass has seen these executors: until one has, rounds know they changed.
            self.executors_seen = seen;
        }
        let after = if full { None } else { Some(self.planned_seq) };
        self.planned_seq = state.next_seq().saturating_sub(1);
        let (pass, placements) = match after {
            Some(s) if s >= self.planned_seq => (Pass::Skipped, Vec::new()),
            _ => {
                let pass = after.map_or(Pass::Full, |after| Pass::NewJobs { after });
                (pass, self.place(state, &liveness.view(), now.wall, after))
            }
        };
        Planned { started: now.at, pass, dead, placements }
    }

    /// `ExecutorDead` for every alive or draining executor not heard from within the TTL.
    fn dead_scan(&mut self, state: &State, live: &View<'_>, now: Now) -> Vec<Command> {
        let dead: Vec<Command> = state
            .executors()
            .filter(|e| matches!(e.state, ExecutorState::Alive | ExecutorState::Draining))
            .filter(|e| !live.is_fresh(&e.id, self.ttl, now.at))
            .map(|e| Command::ExecutorDead { id: e.id.clone(), epoch: e.epoch, now: now.wall })
            .collect();
        self.dead_scan_clean = dead.is_empty().then(|| state.executor_changes());
        dead
    }

    /// Runs the planner over the pending tasks (of jobs after `after`, or all), remembering the
    /// jobs that fit nowhere and the next backoff end among those left out.
    fn place(
        &mut self,
        state: &State,
        live: &View<'_>,
        wall: Millis,
        after: Option<u64>,
    ) -> Vec<Assignment> {
        let input = planner_input(state, live, wall, after, &self.unplaceable);
        let plan = scheduler::plan(&input, MAX_PLACEMENTS_PER_ROUND);
        // Not cut short by the limit: every unassigned task was tried and fits nowhere.
        if plan.assignments.len() < MAX_PLACEMENTS_PER_ROUND {
            let placed: HashSet<(JobId, u32)> =
                plan.assignments.iter().map(|a| (a.job, a.index)).collect();
            self.unplaceable.extend(
                input.pending.iter().filter(|t| !placed.contains(&(t.job, t.index))).map(|t| t.seq),
            );
        }
        let unplaceable = &self.unplaceable;
        let next = state.next_backoff_end(wall, after, |seq| !unplaceable.contains(&seq));
        self.backoff_due = match after {
            None => next,
            Some(_) => self.backoff_due.into_iter().chain(next).min(),
        };
        plan.assignments
    }

    /// The second half of a round: starts due, stops (ticks only), starts given up on, and the
    /// effects in execution order. `now.at` is when planning ended: a full pass's length sets
    /// the cadence of the next ones, and the dispatch decisions are dated after it.
    pub fn dispatch(
        &mut self,
        state: &State,
        liveness: &Liveness,
        planned: Planned,
        now: Now,
        tick: bool,
    ) -> Vec<Effect> {
        if planned.pass == Pass::Full {
            let took = now.at.saturating_duration_since(planned.started);
            self.next_full = now.at + TICK.max(took * FULL_PASS_SPACING);
            self.next_change_full = now.at + took * CHANGE_PASS_SPACING;
            self.next_safety = now.at + SAFETY_PASS_EVERY.max(took * SAFETY_PASS_SPACING);
        }
        let starts = self.starts_due(state, &liveness.view(), now.at);
        let stops = if tick { self.stops_due(state, now.wall) } else { Vec::new() };
        let mut commands = planned.dead;
        commands.extend(self.given_up(now));
        commands.extend(batch_commands(state, now.wall, tick));
        if !planned.placements.is_empty() {
            commands.push(Command::AssignTasks { assignments: planned.placements, now: now.wall });
        }
        let mut effects = Vec::with_capacity(1 + starts.len() + stops.len());
        if !commands.is_empty() {
            effects.push(Effect::Propose(commands));
        }
        effects
            .extend(starts.into_iter().map(|(to, req)| Effect::Start { to, req: Box::new(req) }));
        effects.extend(stops.into_iter().map(|(to, token)| Effect::Stop { to, token }));
        if tick {
            effects.extend(self.collection(state, now).map(|c| Effect::Collect(Box::new(c))));
        }
        effects
    }

    /// Start requests for `Assigned` attempts that are due a (re)try, each naming the newest
    /// beat heard from its executor; forgets starts whose attempt is no longer `Assigned`.
    fn starts_due(
        &mut self,
        state: &State,
        live: &View<'_>,
        now: Instant,
    ) -> Vec<(Worker, pb::StartAttemptRequest)> {
        let mut to_start = Vec::new();
        let mut assigned = HashSet::new();
        for a in state.live_attempts() {
            if a.state != TaskState::Assigned {
                continue;
            }
            assigned.insert(a.token);
            let p = self.starts.entry(a.token).or_insert(Pending {
                job: a.job,
                index: a.index,
                tries: 0,
                next_try: Some(now),
                in_flight: false,
                stamp: None,
            });
            let due = p.next_try.is_some_and(|t| t <= now);
            if p.in_flight || p.tries >= MAX_START_TRIES || !due {
                continue;
            }
            let Some((to, mut req)) = start_request(state, &a.job, a.index) else { continue };
            // Not before this leader has heard a beat of the executor's current registration:
            // the start must name one (its lease). The next beat brings it.
            let Some(stamp) = live.stamp(&a.executor, req.epoch) else { continue };
            req.lease_seq = stamp.seq;
            p.stamp = Some(stamp.received);
            p.in_flight = true;
            to_start.push((to, req));
        }
        // Forget attempts that started, finished or were lost.
        self.starts.retain(|t, _| assigned.contains(t));
        to_start
    }

    /// `TaskLost` for the starts given up on (out of tries or refused, none in flight), each only
    /// a fencing window after the beat its latest request named was received, so the task is
    /// placed again only when no executor can accept the old request any more. By token, so the
    /// proposal does not depend on hash order.
    fn given_up(&self, now: Now) -> Vec<Command> {
        let window = crate::timings::fence_window(self.ttl);
        let mut lost: Vec<(Token, &Pending)> = self
            .starts
            .iter()
            .filter(|(_, p)| {
                !p.in_flight
                    && p.tries >= MAX_START_TRIES
                    && crate::fencing::may_give_up(p.stamp, now.at, window)
            })
            .map(|(t, p)| (*t, p))
            .collect();
        lost.sort_by_key(|(t, _)| *t);
        lost.into_iter()
            .map(|(token, p)| Command::TaskLost {
                job: p.job,
                index: p.index,
                token,
                reason: START_GIVEN_UP.into(),
                now: now.wall,
            })
            .collect()
    }

    /// Cancelled attempts to stop (each once). The scan covers jobs cancelled since the last
    /// scan (with an overlap for commands applied late), so its cost follows the cancel rate,
    /// not the number of jobs finished lately; heartbeat reconciliation stops whatever it misses.
    fn stops_due(&mut self, state: &State, wall: Millis) -> Vec<(Worker, Token)> {
        let since = match self.stop_scan_from {
            None => wall.saturating_sub(STOP_HORIZON_MS),
            Some(from) => from.min(wall).saturating_sub(STOP_SCAN_OVERLAP_MS),
        };
        let mut to_stop = Vec::new();
        let mut seen = HashSet::new();
        let mut seen_suspended = HashSet::new();
        // Every terminal job: a deadline or a failed task ends one like a cancel does.
        for job in state.jobs_recently_finished(since) {
            for a in job.tasks.iter().flat_map(|t| &t.attempts) {
                if a.state == AttemptState::Cancelled && a.started_at.is_some() {
                    seen.insert(a.token);
                    if self.stopped.insert(a.token) {
                        if let Some(e) = state.executor(&a.executor) {
                            to_stop.push((Worker::of(e), a.token));
                        }
                    }
                }
            }
        }
        // A suspended job's cancelled attempts, scanned once per suspension: nothing of it is
        // placed (so nothing new starts) until it is resumed.
        for job in state.suspended_jobs() {
            seen_suspended.insert(job.seq);
            if self.suspended_scanned.contains(&job.seq) {
                continue;
            }
            for a in job.tasks.iter().filter_map(|t| t.current()) {
                if a.state == AttemptState::Cancelled && a.started_at.is_some() {
                    if let Some(e) = state.executor(&a.executor) {
                        to_stop.push((Worker::of(e), a.token));
                    }
                }
            }
        }
        self.suspended_scanned = seen_suspended;
        // Tokens that left the window are never scanned again.
        self.stopped.retain(|t| seen.contains(t));
        self.stop_scan_from = Some(wall);
        to_stop
    }
}

/// The batch duties' commands: on ticks an `ExpireJob` per job past its deadline at `wall`; on
/// every round a `ResolveDependencies` per waiting job whose dependencies all ended (a chain
/// moves on as soon as a link ends, not a tick later).
fn batch_commands(state: &State, wall: Millis, tick: bool) -> Vec<Command> {
    let mut out: Vec<Command> = Vec::new();
    if tick {
        out.extend(state.deadlines_due(wall).map(|j| Command::ExpireJob { id: j.id, now: wall }));
    }
    out.extend(
        state
            .dependencies_resolvable()
            .map(|j| Command::ResolveDependencies { id: j.id, now: wall }),
    );
    out
}

/// An executor's worker API: its id (which its certificate must name) and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worker {
    pub id: String,
    pub addr: String,
}

impl Worker {
    fn of(e: &crate::state::Executor) -> Worker {
        Worker { id: e.id.clone(), addr: e.addr.clone() }
    }
}

/// The StartAttempt call for the current attempt of a task, with the executor to send it to (the
/// lease is filled in by the caller).
fn start_request(
    state: &State,
    job_id: &JobId,
    index: u32,
) -> Option<(Worker, pb::StartAttemptRequest)> {
    let job = state.job(job_id)?;
    let task = job.tasks.get(index as usize)?;
    let attempt = task.current()?;
    let exec = state.executor(&attempt.executor)?;
    Some((
        Worker::of(exec),
        crate::api::convert::start_attempt_to_pb(job, index, attempt, exec.epoch),
    ))
}

/// The planner's view of the state: placeable executors are alive and were heard from within
/// their fencing window at the last sweep; pending tasks of every job, or only of jobs submitted
/// after `after_seq`.
pub fn planner_input(
    state: &State,
    seen: &View<'_>,
    wall: Millis,
    after_seq: Option<u64>,
    skip: &HashSet<u64>,
) -> PlanInput {
    let pending: Vec<PendingTask> = state
        .pending_tasks_where(wall, after_seq, |seq| !skip.contains(&seq))
        .map(|(job, index)| PendingTask {
            job: job.id,
            index,
            priority: job.spec.priority,
            seq: job.seq,
            demand: job.spec.resources,
            constraints: job.spec.constraints.clone(),
            job_headroom: state.headroom(job),
        })
        .collect();
    if pending.is_empty() {
        // Nothing to place: the executors' view (a copy of every executor) is not built at all.
        return PlanInput { executors: Vec::new(), pending };
    }
    let executors = state
        .executors()
        .filter(|e| e.state != ExecutorState::Left && e.state != ExecutorState::Dead)
        .map(|e| ExecutorView {
            id: e.id.clone(),
            capacity: e.capacity,
            used: state.used_resources(&e.id),
            labels: e.labels.clone(),
            // Within the executor's self-fencing window, not the whole TTL: an executor silent
            // for longer refuses new work anyway.
            placeable: e.state == ExecutorState::Alive && seen.is_placeable(&e.id),
        })
        .collect();
    PlanInput { executors, pending }
}
