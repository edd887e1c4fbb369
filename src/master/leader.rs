//! Leader-only duties, started when this master wins leadership and stopped when it loses it:
//!
//! - **liveness monitor**: declares an executor dead (a Raft command) once it has been silent for
//!   the TTL; the state machine then marks its attempts lost and the tasks pending again;
//! - **scheduler**: feeds a snapshot of the state to the pure planner and commits its placements
//!   through Raft *before* any executor hears of them (each with a fresh fencing token);
//! - **dispatcher**: starts committed assignments on their executors, retrying with backoff, and
//!   stops the attempts of cancelled or failed jobs.
//!
//! A new leader first confirms its leadership (read-index) and gives every executor a full fresh
//! TTL before it may declare any dead. Everything the duties know that is not in the replicated
//! state (last-seen times, dispatch retries) is rebuilt from scratch by each new leader.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::mpsc;
use tonic::Code;

use super::liveness::{Liveness, View};
use super::node::{now_ms, LocalError, Node};
use crate::api::pb;
use crate::api::pb::worker_service_client::WorkerServiceClient;
use crate::master::config::ExecutorTimings;
use crate::scheduler::{self, ExecutorView, PendingTask, PlanInput};
use crate::shutdown::{self, Shutdown};
use crate::state::{AttemptState, Command, ExecutorState, JobState, State, Token};

/// Most placements committed in one Raft entry.
const MAX_PLACEMENTS_PER_ROUND: usize = 2000;
/// Deadline of one StartAttempt/StopAttempt call.
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(2);
/// A start that failed this many times is given up: the attempt is reported lost.
const MAX_START_TRIES: u32 = 6;
/// The duties loop runs at least this often even when nothing is applied.
const TICK: Duration = Duration::from_millis(100);
/// A full planning pass (every pending task) costs time proportional to the backlog while
/// holding the state's read lock, which apply needs, so it runs only when it can place something
/// a partial pass cannot: when the executors or their loads changed (at once), or when a retry
/// backoff seen by the last pass has ended (at most 1/FULL_PASS_SPACING of the time).
const FULL_PASS_SPACING: u32 = 20;
/// Besides those, a full pass runs as a safety net at most 1/SAFETY_PASS_SPACING of the time and
/// at least every SAFETY_PASS_EVERY. A backlog that cannot be placed thus costs apply a stall of
/// one pass per second or less, instead of one every 20 pass-lengths (which showed in the
/// submission p99 with 10^5 pending jobs).
const SAFETY_PASS_SPACING: u32 = 1000;
const SAFETY_PASS_EVERY: Duration = Duration::from_secs(1);
/// Cancelled attempts younger than this are stopped by a new leader too (older ones are
/// reconciled by heartbeats anyway).
const STOP_HORIZON_MS: u64 = 10 * 60 * 1000;
/// Each scan for cancelled attempts re-reads this much before where the last one ended, for
/// cancels stamped before but applied after it.
const STOP_SCAN_OVERLAP_MS: u64 = 5_000;

/// Watches Raft leadership and runs the duties exactly while this master leads.
pub async fn watch(
    node: Arc<Node>,
    liveness: Arc<Liveness>,
    timings: ExecutorTimings,
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
                let h =
                    tokio::spawn(run(node.clone(), term, liveness.clone(), timings.clone(), sd));
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

/// What a dispatch task reports back to the loop.
enum DispatchResult {
    Started(Token),
    /// Retry later.
    Failed(Token, String),
    /// The executor refused for good (stale epoch, draining): the attempt is lost.
    Refused(Token, String),
}

struct Pending {
    tries: u32,
    next_try: Instant,
    in_flight: bool,
    /// When this leader received the heartbeat its latest request for the start named (none:
    /// no request sent yet). The start is given up only a fencing window after it
    /// (`executor::lease`), so a request still in the network is refused by then.
    stamp: Option<Instant>,
}

struct Duties {
    node: Arc<Node>,
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
    /// Time of the next safety-net full pass (see [`SAFETY_PASS_SPACING`]).
    next_safety: Instant,
    /// The earliest end of a retry backoff (leader wall ms) among the tasks the last passes left
    /// out for it: a full pass is due then.
    backoff_due: Option<u64>,
    liveness: Arc<Liveness>,
    ttl: Duration,
    starts: HashMap<Token, Pending>,
    stopped: HashSet<Token>,
    /// Where the next scan for cancelled attempts to stop starts (leader wall ms; 0: not yet).
    stop_scan_from: u64,
    /// The state's executor-change count at the last dead scan that found no one to declare
    /// dead (none: scan at the next tick). See [`Duties::needs_dead_scan`].
    dead_scan_clean: Option<u64>,
    tx: mpsc::UnboundedSender<DispatchResult>,
}

async fn run(
    node: Arc<Node>,
    term: u64,
    liveness: Arc<Liveness>,
    timings: ExecutorTimings,
    mut stop: Shutdown,
) {
    // Confirm leadership with a quorum and catch up with everything committed before acting.
    // Stopped duties of an older term may still be here (their catch-up does not watch `stop`):
    // they must neither act nor move `ready_term` back (which would make the current term's
    // leader refuse every heartbeat as "catching up", for good).
    let caught_up = tokio::select! {
        r = node.linearize() => r.is_ok(),
        _ = stop.wait() => false,
    };
    if !caught_up || stop.is_fired() {
        return;
    }
    node.ready_term.fetch_max(term, std::sync::atomic::Ordering::SeqCst);
    {
        let applied = node.applied.read().expect("poisoned");
        let ids: Vec<_> = applied.state.executors().map(|e| e.id.clone()).collect();
        liveness.reset(&ids, Instant::now());
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut d = Duties {
        node: node.clone(),
        executors_seen: (u64::MAX, u64::MAX),
        planned_seq: 0,
        unplaceable: HashSet::new(),
        next_full: Instant::now(),
        next_safety: Instant::now(),
        backoff_due: None,
        liveness,
        ttl: Duration::from_millis(timings.ttl_ms),
        starts: HashMap::new(),
        stopped: HashSet::new(),
        stop_scan_from: 0,
        dead_scan_clean: None,
        tx,
    };
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
            Some(res) = rx.recv() => { d.on_result(res); false }
        };
        while let Ok(res) = rx.try_recv() {
            d.on_result(res);
        }
        if let Err(LocalError::NotLeader) = d.round(full).await {
            return;
        }
    }
}

impl Duties {
    fn on_result(&mut self, res: DispatchResult) {
        match res {
            DispatchResult::Started(token) => {
                if let Some(p) = self.starts.get_mut(&token) {
                    p.in_flight = false;
                    // Keep the entry until the Started report lands, with no further tries.
                    p.next_try = Instant::now() + Duration::from_secs(3600);
                }
            }
            DispatchResult::Failed(token, why) => {
                if let Some(p) = self.starts.get_mut(&token) {
                    p.in_flight = false;
                    p.tries += 1;
                    p.next_try = Instant::now() + Duration::from_millis(100 << p.tries.min(6));
                    tracing::debug!(token, tries = p.tries, "start failed: {why}");
                }
            }
            DispatchResult::Refused(token, why) => {
                if let Some(p) = self.starts.get_mut(&token) {
                    p.in_flight = false;
                    p.tries = MAX_START_TRIES;
                    tracing::info!(token, "start refused: {why}");
                }
            }
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

    /// One pass: liveness (on ticks), placement, dispatch. Returns NotLeader when leadership is
    /// gone. Without a tick, a new job or a change of the executors, it looks at no executor and
    /// no job: its cost does not grow with the cluster.
    async fn round(&mut self, tick: bool) -> Result<(), LocalError> {
        let now = Instant::now();
        let wall = now_ms();
        let node = self.node.clone();
        // Not placeable from a tick before the executor's own fencing window closes, so no
        // start is sent to an executor that refuses it for silence. (The window is shorter than
        // the TTL, which `needs_dead_scan` relies on.)
        let unplaceable = if tick {
            self.liveness.sweep(crate::executor::fence_window(self.ttl).saturating_sub(TICK), now)
        } else {
            0
        };
        // A round after an apply that changed nothing about the executors plans only the new
        // jobs: light, so it runs right here. Ticks (dead scans, full passes) and re-plans after
        // a change go off the async worker: a pass over a large state holds the state's read
        // lock, and apply (waiting for the write lock) must not pin the runtime's other worker
        // meanwhile.
        let light = !tick
            && node.applied.try_read().is_ok_and(|a| {
                (a.state.executor_changes(), self.liveness.generation()) == self.executors_seen
            });
        let (dead, placements, to_start, to_stop, to_lose) =
            crate::store::with_read(&node.applied, light, |applied| {
                let state = &applied.state;
                let dead: Vec<Command> = if tick && self.needs_dead_scan(state, unplaceable) {
                    let live = self.liveness.view();
                    let dead: Vec<Command> = state
                        .executors()
                        .filter(|e| {
                            matches!(e.state, ExecutorState::Alive | ExecutorState::Draining)
                        })
                        .filter(|e| !live.is_fresh(&e.id, self.ttl, now))
                        .map(|e| Command::ExecutorDead {
                            id: e.id.clone(),
                            epoch: e.epoch,
                            now: wall,
                        })
                        .collect();
                    self.dead_scan_clean = dead.is_empty().then(|| state.executor_changes());
                    dead
                } else {
                    Vec::new()
                };
                let seen = (state.executor_changes(), self.liveness.generation());
                if seen != self.executors_seen {
                    self.unplaceable.clear();
                }
                let backoff_ended = self.backoff_due.is_some_and(|due| due <= wall);
                let full = seen != self.executors_seen
                    || (tick
                        && now >= self.next_full
                        && (backoff_ended || now >= self.next_safety));
                let after = if full { None } else { Some(self.planned_seq) };
                self.executors_seen = seen;
                self.planned_seq = state.next_seq().saturating_sub(1);
                let plan = match after {
                    // Nothing new to place and no capacity change: skip planning entirely.
                    Some(s) if s >= self.planned_seq => scheduler::Plan::default(),
                    _ => {
                        let input = planner_input(
                            state,
                            &self.liveness.view(),
                            wall,
                            after,
                            &self.unplaceable,
                        );
                        let plan = scheduler::plan(&input, MAX_PLACEMENTS_PER_ROUND);
                        // Not cut short by the limit: every unassigned task was tried and fits nowhere.
                        if plan.assignments.len() < MAX_PLACEMENTS_PER_ROUND {
                            let placed: HashSet<(crate::state::JobId, u32)> =
                                plan.assignments.iter().map(|a| (a.job, a.index)).collect();
                            self.unplaceable.extend(
                                input
                                    .pending
                                    .iter()
                                    .filter(|t| !placed.contains(&(t.job, t.index)))
                                    .map(|t| t.seq),
                            );
                        }
                        let unplaceable = &self.unplaceable;
                        let next =
                            state.next_backoff_end(wall, after, |seq| !unplaceable.contains(&seq));
                        self.backoff_due = if full {
                            next
                        } else {
                            self.backoff_due.into_iter().chain(next).min()
                        };
                        if full {
                            let took = now.elapsed();
                            self.next_full = Instant::now() + TICK.max(took * FULL_PASS_SPACING);
                            self.next_safety =
                                Instant::now() + SAFETY_PASS_EVERY.max(took * SAFETY_PASS_SPACING);
                        }
                        plan
                    }
                };
                let (to_start, to_stop) = self.dispatch_work(state, wall, tick);
                // Starts given up on: report the attempt lost so the task is retried elsewhere.
                let window = crate::executor::fence_window(self.ttl);
                let to_lose: Vec<Command> = self
                    .starts
                    .iter()
                    .filter(|(_, p)| {
                        !p.in_flight
                            && p.tries >= MAX_START_TRIES
                            && crate::executor::lease::may_give_up(p.stamp, now, window)
                    })
                    .filter_map(|(token, _)| to_start_lookup(state, *token))
                    .map(|(job, index, token)| Command::TaskLost {
                        job,
                        index,
                        token,
                        reason: "the executor could not start the attempt".into(),
                        now: wall,
                    })
                    .collect();
                (dead, plan.assignments, to_start, to_stop, to_lose)
            });
        let m = crate::metrics::get();
        for cmd in &dead {
            if let Command::ExecutorDead { id, .. } = cmd {
                tracing::warn!(executor = %id, ttl_ms = self.ttl.as_millis() as u64, "executor silent past its TTL: declaring it dead");
                let lost =
                    self.node.applied.read().expect("poisoned").state.live_attempts_on(id).len();
                m.reschedules.with_label_values(&["executor_dead"]).inc_by(lost as u64);
            }
        }
        m.reschedules.with_label_values(&["start_failed"]).inc_by(to_lose.len() as u64);
        m.placements.inc_by(placements.len() as u64);
        let mut commands = dead;
        commands.extend(to_lose);
        if !placements.is_empty() {
            commands.push(Command::AssignTasks { assignments: placements, now: wall });
        }
        if !commands.is_empty() {
            let r = self.node.write(commands).await;
            let label = if r.is_ok() { "ok" } else { "error" };
            m.schedule_seconds.with_label_values(&[label]).observe(now.elapsed().as_secs_f64());
            r?;
        }
        for req in to_start {
            self.start(req);
        }
        for (addr, token) in to_stop {
            self.stop(addr, token);
        }
        Ok(())
    }

    /// Attempts to start, and (when `scan_stops`, on ticks) cancelled attempts to stop. The stop
    /// scan covers jobs cancelled since the last scan (with an overlap for commands applied
    /// late), so its cost follows the cancel rate, not the number of jobs finished lately;
    /// heartbeat reconciliation stops whatever it misses.
    fn dispatch_work(
        &mut self,
        state: &State,
        wall: u64,
        scan_stops: bool,
    ) -> (Vec<(String, pb::StartAttemptRequest)>, Vec<(String, Token)>) {
        let now = Instant::now();
        let mut to_start = Vec::new();
        let mut assigned = HashSet::new();
        let live = self.liveness.view();
        for a in state.live_attempts() {
            if a.state != crate::state::TaskState::Assigned {
                continue;
            }
            assigned.insert(a.token);
            let p = self.starts.entry(a.token).or_insert(Pending {
                tries: 0,
                next_try: now,
                in_flight: false,
                stamp: None,
            });
            if p.in_flight || p.tries >= MAX_START_TRIES || p.next_try > now {
                continue;
            }
            let Some((addr, mut req)) = start_request(state, &a.job, a.index) else { continue };
            // Not before this leader has heard a beat of the executor's current registration:
            // the start must name one (its lease). The next beat brings it.
            let Some(stamp) = live.stamp(&a.executor, req.epoch) else { continue };
            req.lease_seq = stamp.seq;
            p.stamp = Some(stamp.received);
            p.in_flight = true;
            to_start.push((addr, req));
        }
        drop(live);
        // Forget attempts that started, finished or were lost.
        self.starts.retain(|t, _| assigned.contains(t));

        let mut to_stop = Vec::new();
        if scan_stops {
            let since = match self.stop_scan_from {
                0 => wall.saturating_sub(STOP_HORIZON_MS),
                from => from.min(wall).saturating_sub(STOP_SCAN_OVERLAP_MS),
            };
            let mut seen = HashSet::new();
            for job in
                state.jobs_recently_finished(since).filter(|j| j.state == JobState::Cancelled)
            {
                for a in job.tasks.iter().flat_map(|t| &t.attempts) {
                    if a.state == AttemptState::Cancelled && a.started_at.is_some() {
                        seen.insert(a.token);
                        if self.stopped.insert(a.token) {
                            if let Some(e) = state.executor(&a.executor) {
                                to_stop.push((e.addr.clone(), a.token));
                            }
                        }
                    }
                }
            }
            // Tokens that left the window are never scanned again.
            self.stopped.retain(|t| seen.contains(t));
            self.stop_scan_from = wall;
        }
        (to_start, to_stop)
    }

    fn start(&self, (addr, req): (String, pb::StartAttemptRequest)) {
        let tx = self.tx.clone();
        let channels = self.node.channels.clone();
        tokio::spawn(async move {
            let token = req.token;
            let started = Instant::now();
            let res = async {
                let chan =
                    channels.get(&addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let mut r = tonic::Request::new(req);
                r.set_timeout(DISPATCH_TIMEOUT);
                tokio::time::timeout(
                    DISPATCH_TIMEOUT,
                    WorkerServiceClient::new(chan).start_attempt(r),
                )
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("start timed out"))?
            }
            .await;
            let label = if res.is_ok() { "ok" } else { "error" };
            crate::metrics::get()
                .dispatch_seconds
                .with_label_values(&[label])
                .observe(started.elapsed().as_secs_f64());
            let _ = tx.send(match res {
                Ok(_) => DispatchResult::Started(token),
                Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::InvalidArgument) => {
                    DispatchResult::Refused(token, s.message().to_string())
                }
                Err(s) => DispatchResult::Failed(token, s.message().to_string()),
            });
        });
    }

    fn stop(&self, addr: String, token: Token) {
        let channels = self.node.channels.clone();
        tokio::spawn(async move {
            let Ok(chan) = channels.get(&addr) else { return };
            let mut r = tonic::Request::new(pb::StopAttemptRequest { token });
            r.set_timeout(DISPATCH_TIMEOUT);
            // Best effort: heartbeat reconciliation kills it later if this is lost.
            let _ = tokio::time::timeout(
                DISPATCH_TIMEOUT,
                WorkerServiceClient::new(chan).stop_attempt(r),
            )
            .await;
        });
    }
}

fn to_start_lookup(state: &State, token: Token) -> Option<(crate::state::JobId, u32, Token)> {
    state.live_attempts().into_iter().find(|a| a.token == token).map(|a| (a.job, a.index, a.token))
}

/// The StartAttempt call for the current attempt of a task, with the executor's address.
fn start_request(
    state: &State,
    job_id: &crate::state::JobId,
    index: u32,
) -> Option<(String, pb::StartAttemptRequest)> {
    let job = state.job(job_id)?;
    let task = job.tasks.get(index as usize)?;
    let attempt = task.current()?;
    let exec = state.executor(&attempt.executor)?;
    let (start, end) = crate::state::task_range(index, job.spec.task_count);
    Some((
        exec.addr.clone(),
        pb::StartAttemptRequest {
            job_id: job.id.to_string(),
            task_index: index,
            task_count: job.spec.task_count,
            attempt: attempt.number,
            token: attempt.token,
            command: job.spec.command.clone(),
            args: job.spec.args.clone(),
            env: job.spec.env.clone().into_iter().collect(),
            shell: job.spec.shell,
            timeout_ms: job.spec.timeout_ms,
            range_start: uuid::Uuid::from_u128(start).to_string(),
            range_end: uuid::Uuid::from_u128(end).to_string(),
            epoch: exec.epoch,
            lease_seq: 0,
        },
    ))
}

/// The planner's view of the state: placeable executors are alive and were heard from within
/// their fencing window at the last sweep; pending tasks of every job, or only of jobs submitted
/// after `after_seq`.
pub fn planner_input(
    state: &State,
    seen: &View<'_>,
    wall: u64,
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
