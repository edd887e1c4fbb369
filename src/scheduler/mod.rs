//! The placement planner: a pure function from a snapshot of executors and pending tasks to a
//! list of assignments (Nomad style: snapshot in, plan out).
//!
//! It knows nothing of `State`, Raft or clocks. The leader builds a [`PlanInput`] from its state,
//! calls [`plan`], and proposes the result as one `AssignTasks` command; the state machine then
//! re-checks every assignment, so the planner is an optimiser, not the last line of defence.
//!
//! Rules, all of which hold for every plan:
//! - Tasks are considered in order (priority desc, seq asc, index asc, job id asc).
//! - A task only goes to a `placeable` executor whose labels contain every `k=v` constraint and
//!   whose `used` + already planned + demand fits its capacity on slots, cpu and memory (exact,
//!   unsaturated arithmetic).
//! - Among those, it goes to the least loaded one (spread). Load is compared lexicographically:
//!   the exact ratio (used + planned) / capacity on slots, then cpu, then memory, then the number
//!   of tasks planned on it in this call (so zero-demand tasks spread too), then the executor id.
//!   The load is taken before the task is added, so one ordering serves every demand; for equal
//!   capacities it is the same as comparing loads after placement.
//! - No floats, no rounding, no hash order: equal input gives an equal plan, whatever the order of
//!   the input vectors (given unique executor ids).
//! - A task that fits nowhere is skipped and counted in [`Plan::unplaced`]; it never blocks a
//!   later task that fits (no head-of-line blocking). Loads only grow during planning, so a
//!   skipped task also fits nowhere given the final plan: the plan is maximal.
//! - At most `max_assignments` assignments; `plan(i, k)` is exactly the first `k` assignments of
//!   `plan(i, usize::MAX)`. Tasks left unexamined at that limit are not counted as unplaced.
//! - A `(job, index)` listed twice is considered once (its first occurrence in task order).
//! - No job gets more placements than its `job_headroom` (per-job parallelism): the tasks past it
//!   are held back, neither placed nor counted unplaced, and never take capacity from others.
//!
//! Cost: tasks with equal constraints share a class: the compatible executors in a `BTreeSet`
//! ordered by load, built once per call (from a label index, so a rare constraint is cheap). A
//! placement takes the first member that fits (usually the first) and re-keys that executor in
//! the classes it belongs to, O(log E) each. A demand that fit nowhere is remembered per class,
//! so a job whose tasks fit nowhere costs one scan, not one per task.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet};

use crate::state::{labels_satisfy, Assignment, ExecutorId, JobId, Resources};

/// An executor as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorView {
    pub id: ExecutorId,
    pub capacity: Resources,
    /// Sum of the demands of the attempts it already holds.
    pub used: Resources,
    pub labels: BTreeMap<String, String>,
    /// Alive, not draining, heard from recently. Non-placeable executors get nothing.
    pub placeable: bool,
}

/// A task that may be placed now (backoff elapsed, job not terminal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTask {
    pub job: JobId,
    pub index: u32,
    /// Higher goes first.
    pub priority: i32,
    /// Job submission order: first come, first served within a priority.
    pub seq: u64,
    pub demand: Resources,
    /// Every `k=v` must be among the executor's labels.
    pub constraints: BTreeMap<String, String>,
    /// How many more tasks of this job may be placed (its parallelism less its live tasks;
    /// `u32::MAX`: no cap). The same for every task of a job; the plan never exceeds it.
    pub job_headroom: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanInput {
    pub executors: Vec<ExecutorView>,
    /// Already filtered to tasks placeable now.
    pub pending: Vec<PendingTask>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// In task order (the order they were decided).
    pub assignments: Vec<Assignment>,
    /// Tasks examined that fit on no executor.
    pub unplaced: usize,
}

/// Plans placements for `input.pending` on `input.executors`; see the module doc for the rules.
pub fn plan(input: &PlanInput, max_assignments: usize) -> Plan {
    let mut out = Plan::default();
    let mut execs = placeable_executors(input);
    let tasks = tasks_in_order(input);
    let mut classes: Vec<Class> = Vec::new();
    let mut class_of: BTreeMap<&BTreeMap<String, String>, usize> = BTreeMap::new();
    let mut by_label = None;
    let mut placed_per_job: BTreeMap<crate::state::JobId, u32> = BTreeMap::new();

    for t in tasks {
        if out.assignments.len() >= max_assignments {
            break;
        }
        if placed_per_job.get(&t.job).copied().unwrap_or(0) >= t.job_headroom {
            continue; // the job's parallelism is used up
        }
        let c = match class_of.get(&t.constraints) {
            Some(&c) => c,
            None => {
                let index = by_label.get_or_insert_with(|| LabelIndex::new(&execs));
                let c = Class::build(&t.constraints, classes.len(), &mut execs, index);
                classes.push(c);
                class_of.insert(&t.constraints, classes.len() - 1);
                classes.len() - 1
            }
        };
        let class = &mut classes[c];
        // Loads only grow, so a demand at least as large as one that fit nowhere fits nowhere.
        let known_misfit = class.misfits.iter().any(|m| m.fits_in(t.demand));
        let found = if known_misfit {
            None
        } else {
            // Least loaded first; usually the first member fits.
            class
                .members
                .iter()
                .map(|k| k.rank)
                .find(|&r| execs[r].load.fits_with(t.demand, execs[r].view.capacity))
        };
        let Some(rank) = found else {
            if !known_misfit {
                class.misfits.push(t.demand);
            }
            out.unplaced += 1;
            continue;
        };
        let executor = place(&mut execs, &mut classes, rank, t);
        *placed_per_job.entry(t.job).or_default() += 1;
        out.assignments.push(Assignment { job: t.job, index: t.index, executor });
    }
    out
}

/// Only placeable executors matter; sorting by id makes the position (`rank`) the final
/// tie-break and the result independent of input order.
fn placeable_executors(input: &PlanInput) -> Vec<Exec<'_>> {
    let mut execs: Vec<Exec> = input
        .executors
        .iter()
        .filter(|e| e.placeable)
        .map(|view| Exec { view, load: view.used, planned: 0, classes: Vec::new() })
        .collect();
    execs.sort_by(|a, b| a.view.id.cmp(&b.view.id));
    execs
}

/// The pending tasks in placement order (priority, then oldest job, then lowest index), each
/// task once.
fn tasks_in_order(input: &PlanInput) -> Vec<&PendingTask> {
    let mut tasks: Vec<&PendingTask> = input.pending.iter().collect();
    tasks.sort_by(|a, b| {
        (Reverse(a.priority), a.seq, a.index, a.job).cmp(&(
            Reverse(b.priority),
            b.seq,
            b.index,
            b.job,
        ))
    });
    let mut seen = BTreeSet::new();
    tasks.retain(|t| seen.insert((t.job, t.index)));
    tasks
}

/// Places `t` on the executor at `rank` (it fits): its load grows, and it moves to its new place
/// in every class it belongs to. Returns the executor's id.
fn place(execs: &mut [Exec], classes: &mut [Class], rank: usize, t: &PendingTask) -> String {
    let e = &mut execs[rank];
    let old = e.key(rank);
    e.load = e.load.plus(t.demand); // exact: it fit
    e.planned += 1;
    let new = e.key(rank);
    for &c in &e.classes {
        classes[c].members.remove(&old);
        classes[c].members.insert(new);
    }
    e.view.id.clone()
}

/// The executors compatible with one set of constraints, ordered by load.
struct Class {
    /// Exact current keys of its members.
    members: BTreeSet<Key>,
    /// Demands that fit on no member, so that repeats (the other tasks of the job) skip the scan.
    misfits: Vec<Resources>,
}

impl Class {
    /// Members are the executors whose labels satisfy `constraints` and that are not already over
    /// capacity (those can never take anything, loads only grow).
    fn build(
        constraints: &BTreeMap<String, String>,
        id: usize,
        execs: &mut [Exec],
        index: &LabelIndex,
    ) -> Class {
        let mut members = BTreeSet::new();
        for rank in index.candidates(constraints, execs.len()) {
            let e = &mut execs[rank];
            if labels_satisfy(&e.view.labels, constraints) && e.load.fits_in(e.view.capacity) {
                members.insert(e.key(rank));
                e.classes.push(id);
            }
        }
        Class { members, misfits: Vec::new() }
    }
}

/// Executor ranks by label, so that a class with a rare constraint (`host=x`) is built without
/// scanning every executor.
struct LabelIndex<'a>(BTreeMap<(&'a str, &'a str), Vec<usize>>);

impl<'a> LabelIndex<'a> {
    fn new(execs: &[Exec<'a>]) -> Self {
        let mut m: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for (rank, e) in execs.iter().enumerate() {
            for (k, v) in &e.view.labels {
                m.entry((k, v)).or_default().push(rank);
            }
        }
        LabelIndex(m)
    }

    /// A superset of the executors satisfying `constraints`: those with its rarest label.
    fn candidates(&self, constraints: &BTreeMap<String, String>, all: usize) -> Vec<usize> {
        let rarest = constraints
            .iter()
            .map(|(k, v)| self.0.get(&(k.as_str(), v.as_str())).map_or(&[][..], |v| v));
        match rarest.min_by_key(|r| r.len()) {
            Some(r) => r.to_vec(),
            None => (0..all).collect(),
        }
    }
}

struct Exec<'a> {
    view: &'a ExecutorView,
    /// `used` plus everything planned on it so far.
    load: Resources,
    /// Tasks planned on it in this call.
    planned: usize,
    /// The classes it is a member of, where it is re-keyed on each placement.
    classes: Vec<usize>,
}

impl Exec<'_> {
    fn key(&self, rank: usize) -> Key {
        let (l, cap) = (self.load, self.view.capacity);
        Key {
            slots: Ratio::new(l.slots.into(), cap.slots.into()),
            cpu: Ratio::new(l.cpu_millis.into(), cap.cpu_millis.into()),
            memory: Ratio::new(l.memory_mib, cap.memory_mib),
            planned: self.planned,
            rank,
        }
    }
}

/// Spread order: lexicographic, least loaded first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    slots: Ratio,
    cpu: Ratio,
    memory: Ratio,
    planned: usize,
    rank: usize,
}

/// `num / den`, compared exactly by cross-multiplication (u64 * u64 fits in u128).
#[derive(Clone, Copy, Debug)]
struct Ratio {
    num: u64,
    den: u64,
}

impl Ratio {
    /// A zero capacity only ever holds a zero load (else nothing fits), which counts as empty.
    fn new(num: u64, den: u64) -> Ratio {
        Ratio { num, den: den.max(1) }
    }
}

impl Ord for Ratio {
    fn cmp(&self, o: &Ratio) -> Ordering {
        (u128::from(self.num) * u128::from(o.den)).cmp(&(u128::from(o.num) * u128::from(self.den)))
    }
}
impl PartialOrd for Ratio {
    fn partial_cmp(&self, o: &Ratio) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Ratio {
    fn eq(&self, o: &Ratio) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Ratio {}

#[cfg(test)]
mod tests;
