//! Linearizability of submits, reads and cancels, per idempotency key (guarantee 6).
//!
//! Keys are independent, so each key's ops are checked on their own against a model of "the job
//! of this key" by a Wing & Gong search with memoisation of (linearized set, model state), as in
//! Porcupine/Knossos:
//!
//! - **Model state**: not created yet, or created with a job id (possibly not yet known, when an
//!   `info` submit created it) and a job state that is a *lower bound*: executors advance jobs
//!   outside client ops, so the job may be in any state reachable from it along
//!   `pending -> running -> succeeded|failed|cancelled` (pending may also go straight to a
//!   terminal state; terminal states are final).
//! - **Submit** `ok` with id `j`: creates the job (pending) as `j`, or requires the existing job to
//!   be `j`. Every submit of a key must name the same job.
//! - **Read** `ok` of `j` returning `s`: the job must exist as `j` and `s` be reachable; the state
//!   becomes `s`. `not-found` is legal only while the job does not exist (reads are issued with an
//!   id from an ok submit, which precedes them in real time, so in practice it is a violation).
//! - **Cancel** `ok` of `j` returning `s`: the job must exist as `j` and `s` be a terminal state
//!   reachable from the current one (a live job becomes `cancelled`; a finished one keeps its
//!   state); the state becomes `s`.
//! - `info` ops may take effect at any point after their invocation, or never; `fail` ops never
//!   did; `info`/`fail` reads observe nothing and are dropped. An `ok` op with no observed value
//!   (a runner bug, flagged by `well_formed`) is treated as `info`.
//!
//! The search is bounded: a key with more than [`MAX_OPS_PER_KEY`] ops, or whose search visits
//! more than [`MAX_STATES_PER_KEY`] configurations, is reported as unknown (not valid).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::job_state::{self as js, CANCELLED, PENDING};
use super::{pair_ops, Completed, Report, Verdict};
use crate::history::{Call, Op, OpType};

/// Keys with more ops than this are not searched (reported unknown).
pub const MAX_OPS_PER_KEY: usize = 512;
/// Search budget per key: distinct (linearized set, model state) configurations.
pub const MAX_STATES_PER_KEY: usize = 300_000;

const UNKNOWN_ID: u32 = u32::MAX;

/// The model: the job of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Model {
    created: bool,
    /// Interned job id, or `UNKNOWN_ID` when an `info` submit created the job.
    id: u32,
    /// Lower bound of the job's state.
    state: u8,
}

const INIT: Model = Model { created: false, id: UNKNOWN_ID, state: PENDING };

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// `Some(id)` when ok; `None` when info.
    Submit(Option<u32>),
    /// `None` = not-found.
    Read(u32, Option<u8>),
    /// `Some(state)` when ok; `None` when info.
    Cancel(u32, Option<u8>),
}

struct LinOp {
    start: u64,
    /// `u64::MAX` for info ops.
    end: u64,
    /// `ok` ops must be linearized; `info` ops may be.
    required: bool,
    action: Action,
    desc: String,
}

impl Model {
    /// The job exists as `id` (binding an unknown id).
    fn is(self, id: u32) -> Option<Model> {
        match self {
            Model { created: false, .. } => None,
            m if m.id == UNKNOWN_ID => Some(Model { id, ..m }),
            m if m.id == id => Some(m),
            _ => None,
        }
    }

    /// The state after `a`, or `None` if `a` cannot happen now.
    fn step(self, a: Action) -> Option<Model> {
        match a {
            Action::Submit(id) if !self.created => {
                Some(Model { created: true, id: id.unwrap_or(UNKNOWN_ID), state: PENDING })
            }
            Action::Submit(Some(id)) => self.is(id),
            Action::Submit(None) => Some(self),
            Action::Read(_, None) => (!self.created).then_some(self),
            Action::Read(id, Some(s)) | Action::Cancel(id, Some(s)) => {
                let m = self.is(id)?;
                let cancel_ok = matches!(a, Action::Cancel(..)) && !js::is_terminal(s);
                (js::reachable(m.state, s) && !cancel_ok).then_some(Model { state: s, ..m })
            }
            Action::Cancel(id, None) => match self.is(id) {
                Some(m) if !js::is_terminal(m.state) => Some(Model { state: CANCELLED, ..m }),
                _ => Some(self), // no such job (yet), or already finished: no effect
            },
        }
    }

    fn describe(self, ids: &[String]) -> String {
        if !self.created {
            return "job not created".into();
        }
        let id = ids.get(self.id as usize).map_or("<id unknown>", |s| s.as_str());
        format!("job {id} at least {}", js::name(self.state))
    }
}

enum Outcome {
    Linearizable,
    Violation(String),
    Unknown(String),
}

/// Checks that each key's submits, reads and cancels are linearizable (see the module doc).
pub fn linearizable(history: &[Op]) -> Verdict {
    let mut r = Report::new("linearizable");
    let (ops, _) = pair_ops(history);
    let mut by_key: BTreeMap<&str, Vec<Completed<'_>>> = BTreeMap::new();
    for op in ops {
        if let Some(k) = super::key_of(op.call()) {
            by_key.entry(k).or_default().push(op);
        }
    }
    let (mut checked_ops, mut unknown, mut max_states) = (0usize, 0usize, 0usize);
    for (key, ops) in &by_key {
        let mut ids: Vec<String> = Vec::new();
        let mut lin = Vec::new();
        for op in ops {
            match to_lin_op(op, &mut ids) {
                Ok(Some(l)) => lin.push(l),
                Ok(None) => {}
                Err(e) => r.violation(format!("key {key}: {e}")),
            }
        }
        checked_ops += lin.len();
        match search(&mut lin, &ids, &mut max_states) {
            Outcome::Linearizable => {}
            Outcome::Violation(m) => r.violation(format!("key {key}: not linearizable: {m}")),
            Outcome::Unknown(m) => {
                unknown += 1;
                r.violation(format!("key {key}: unknown (not checked): {m}"))
            }
        }
    }
    r.stat("keys", by_key.len());
    r.stat("ops", checked_ops);
    r.stat("unknown_keys", unknown);
    r.stat("max_states_per_key", max_states);
    r.verdict()
}

/// The op as the search sees it; `Ok(None)` for ops that cannot have had an effect.
fn to_lin_op(op: &Completed<'_>, ids: &mut Vec<String>) -> Result<Option<LinOp>, String> {
    let mut intern = |id: &str| match ids.iter().position(|i| i == id) {
        Some(i) => i as u32,
        None => {
            ids.push(id.to_string());
            (ids.len() - 1) as u32
        }
    };
    let parse =
        |s: &str| js::parse(s).ok_or_else(|| format!("{}: unknown job state {s:?}", op.describe()));
    let kind = op.kind();
    if kind == OpType::Fail {
        return Ok(None);
    }
    let ok = kind == OpType::Ok;
    let action = match op.call() {
        Call::Submit { job_id, .. } => {
            Action::Submit(job_id.as_deref().filter(|_| ok).map(&mut intern))
        }
        Call::Read { job_id, state, .. } => match (ok, state.as_deref()) {
            (true, Some("not-found")) => Action::Read(intern(job_id), None),
            (true, Some(s)) => Action::Read(intern(job_id), Some(parse(s)?)),
            _ => return Ok(None),
        },
        Call::Cancel { job_id, state, .. } => {
            let s = match state.as_deref().filter(|_| ok) {
                Some(s) => Some(parse(s)?),
                None => None,
            };
            Action::Cancel(intern(job_id), s)
        }
        Call::FinalRead { .. } | Call::LeaderPoll { .. } => return Ok(None),
    };
    let required = !matches!(action, Action::Submit(None) | Action::Cancel(_, None));
    let end = if required { op.end() } else { u64::MAX };
    Ok(Some(LinOp { start: op.start(), end, required, action, desc: op.describe() }))
}

/// Wing & Gong with memoisation. An op may be linearized next iff no other unlinearized op
/// completed before it was invoked; the history is linearizable once every required op is.
fn search(ops: &mut [LinOp], ids: &[String], max_states: &mut usize) -> Outcome {
    if ops.len() > MAX_OPS_PER_KEY {
        return Outcome::Unknown(format!("{} ops (more than {MAX_OPS_PER_KEY})", ops.len()));
    }
    ops.sort_by_key(|o| o.start);
    let required = ops.iter().filter(|o| o.required).count();
    if required == 0 {
        return Outcome::Linearizable;
    }
    let words = ops.len().div_ceil(64);
    let has = |bits: &[u64], i: usize| bits[i / 64] >> (i % 64) & 1 == 1;
    let mut visited: HashSet<(Vec<u64>, Model)> = HashSet::new();
    let mut stack = vec![(vec![0u64; words], INIT, 0usize)];
    visited.insert((vec![0u64; words], INIT));
    // Deepest point reached, for the report: (required ops linearized, model, blocking op).
    let mut best: (usize, Model, usize) = (0, INIT, 0);
    let mut budget_hit = false;
    while let Some((bits, m, done)) = stack.pop() {
        if done == required {
            *max_states = (*max_states).max(visited.len());
            return Outcome::Linearizable;
        }
        // Earliest completion among the required ops not linearized yet: nothing invoked after
        // it may go before it.
        let (first, min_end) = (0..ops.len())
            .filter(|&i| ops[i].required && !has(&bits, i))
            .map(|i| (i, ops[i].end))
            .min_by_key(|&(_, e)| e)
            .unwrap_or((0, u64::MAX));
        if done >= best.0 {
            best = (done, m, first);
        }
        let mut info_results: HashMap<Model, ()> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            if op.start > min_end {
                break;
            }
            if has(&bits, i) {
                continue;
            }
            let Some(next) = m.step(op.action) else { continue };
            if !op.required && (next == m || info_results.insert(next, ()).is_some()) {
                continue; // a no-op, or equivalent to another info op already tried from here
            }
            let mut nb = bits.clone();
            nb[i / 64] |= 1 << (i % 64);
            if visited.contains(&(nb.clone(), next)) {
                continue;
            }
            if visited.len() >= MAX_STATES_PER_KEY {
                budget_hit = true;
                break;
            }
            visited.insert((nb.clone(), next));
            stack.push((nb, next, done + op.required as usize));
        }
        if budget_hit {
            break;
        }
    }
    *max_states = (*max_states).max(visited.len());
    if budget_hit {
        return Outcome::Unknown(format!(
            "search budget of {MAX_STATES_PER_KEY} states exhausted ({} ops)",
            ops.len()
        ));
    }
    let (done, m, blocked) = best;
    Outcome::Violation(format!(
        "at best {done} of {required} acknowledged ops linearize, reaching {}; then `{}` cannot be placed",
        m.describe(ids),
        ops[blocked].desc
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    fn check(h: &H) -> Verdict {
        linearizable(&h.build())
    }

    #[test]
    fn a_concurrent_good_history_passes() {
        let mut h = H::new();
        h.submit_info(1, "k1", 0); // timed out, maybe created it
        h.submit(2, "k1", 5, 30, "j1");
        h.submit(3, "k1", 10, 20, "j1"); // concurrent retry; same id
        h.read(4, "k1", "j1", 25, 60, "running"); // overlaps with the cancel below
        h.read(5, "k1", "j1", 31, 40, "pending");
        h.cancel(6, "k1", "j1", 41, 70, "cancelled");
        h.read(7, "k1", "j1", 80, 90, "cancelled");
        h.submit(8, "k2", 0, 10, "j2");
        h.read(8, "k2", "j2", 11, 20, "succeeded");
        h.cancel(8, "k2", "j2", 21, 30, "succeeded"); // cancel of a finished job keeps its state
        h.submit_fail(9, "k3", 0, 5);
        let v = check(&h);
        assert!(v.valid, "{v:?}");
        assert_eq!(v.stats["keys"], 3usize.into());
    }

    #[test]
    fn an_info_submit_may_create_the_job_before_its_ok_retry() {
        let mut h = H::new();
        h.submit_info(1, "k1", 0);
        h.submit(2, "k1", 50, 60, "j1");
        h.read(2, "k1", "j1", 70, 80, "succeeded");
        assert!(check(&h).valid);
    }

    #[test]
    fn an_info_cancel_may_or_may_not_have_happened() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.cancel_info(2, "k1", "j1", 20);
        h.read(3, "k1", "j1", 30, 40, "running");
        h.read(3, "k1", "j1", 50, 60, "cancelled");
        assert!(check(&h).valid);
    }

    #[test]
    fn two_ok_submits_with_different_ids_fail() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.submit(2, "k1", 20, 30, "j2");
        let v = check(&h);
        assert!(!v.valid);
        assert!(mentions(&v, "key k1: not linearizable"), "{v:?}");
    }

    #[test]
    fn a_read_regressing_from_running_to_pending_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(1, "k1", "j1", 20, 30, "running");
        h.read(1, "k1", "j1", 40, 50, "pending");
        let v = check(&h);
        assert!(!v.valid);
        assert!(mentions(&v, "read k1/j1 -> pending"), "{v:?}");
    }

    #[test]
    fn a_read_after_a_cancel_showing_running_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.cancel(1, "k1", "j1", 20, 30, "cancelled");
        h.read(2, "k1", "j1", 40, 50, "running");
        assert!(!check(&h).valid);
    }

    #[test]
    fn a_changed_terminal_state_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(1, "k1", "j1", 20, 30, "succeeded");
        h.read(2, "k1", "j1", 40, 50, "failed");
        assert!(!check(&h).valid);
    }

    #[test]
    fn not_found_after_the_submit_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(2, "k1", "j1", 20, 30, "not-found");
        assert!(!check(&h).valid);
        // ... but concurrent with the submit it is fine.
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(2, "k1", "j1", 5, 30, "not-found");
        assert!(check(&h).valid);
    }

    #[test]
    fn a_cancel_returning_a_live_state_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.cancel(1, "k1", "j1", 20, 30, "running");
        assert!(!check(&h).valid);
    }

    #[test]
    fn a_stale_read_that_is_fine_per_process_but_impossible_in_real_time_fails() {
        // Process 1 sees running; *after* that read completed, process 2 (which never saw
        // running itself) sees pending. Each process's own sequence is monotonic.
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(1, "k1", "j1", 20, 30, "running");
        h.read(2, "k1", "j1", 40, 50, "pending");
        h.read(2, "k1", "j1", 60, 70, "running");
        let v = check(&h);
        assert!(!v.valid, "{v:?}");
        // The same observations with the reads overlapping are linearizable.
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(1, "k1", "j1", 20, 45, "running");
        h.read(2, "k1", "j1", 40, 50, "pending");
        h.read(2, "k1", "j1", 60, 70, "running");
        assert!(check(&h).valid);
    }

    #[test]
    fn unknown_states_are_reported() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(1, "k1", "j1", 20, 30, "exploded");
        let v = check(&h);
        assert!(!v.valid);
        assert!(mentions(&v, "unknown job state"), "{v:?}");
    }

    #[test]
    fn many_concurrent_info_ops_stay_tractable() {
        let mut h = H::new();
        for p in 0..60 {
            h.submit_info(p, "k1", p);
        }
        for p in 60..70 {
            h.cancel_info(p, "k1", "j1", p);
        }
        h.submit(100, "k1", 0, 200, "j1");
        for i in 0..100 {
            h.read(
                101 + i % 6,
                "k1",
                "j1",
                210 + i * 10,
                215 + i * 10,
                if i < 50 { "running" } else { "cancelled" },
            );
        }
        let v = check(&h);
        assert!(v.valid, "{v:?}");
    }

    #[test]
    fn too_many_ops_are_unknown_not_valid() {
        let mut h = H::new();
        h.submit(0, "k1", 0, 5, "j1");
        for i in 0..MAX_OPS_PER_KEY as u64 {
            h.read(1, "k1", "j1", 10 + i * 10, 15 + i * 10, "pending");
        }
        let v = check(&h);
        assert!(!v.valid);
        assert!(mentions(&v, "unknown"), "{v:?}");
    }

    /// A sequential legal history of one key: (op, observed state) with the executor advancing
    /// the job between ops. `steps` drives the choices.
    fn sequential(steps: &[(u8, u8)]) -> H {
        let mut h = H::new();
        let mut t = 0;
        let mut state = PENDING;
        h.submit(0, "k", t, t + 5, "j");
        t += 10;
        for &(op, adv) in steps {
            // The executor may advance the job (never out of a terminal state).
            if !js::is_terminal(state) {
                let target = adv % 5;
                if target >= state && adv % 3 == 0 {
                    state = target;
                }
            }
            let p = (op % 4) as u64;
            match op % 5 {
                0 => {
                    h.submit(p, "k", t, t + 5, "j");
                }
                1 => {
                    if !js::is_terminal(state) {
                        state = CANCELLED;
                    }
                    h.cancel(p, "k", "j", t, t + 5, js::name(state));
                }
                2 => {
                    h.submit_info(p + 10 + t, "k", t);
                }
                _ => {
                    h.read(p, "k", "j", t, t + 5, js::name(state));
                }
            }
            t += 10;
        }
        h
    }

    proptest! {
        #[test]
        fn sequential_legal_histories_are_linearizable(steps in proptest::collection::vec((0u8..5, 0u8..15), 0..40)) {
            let v = check(&sequential(&steps));
            prop_assert!(v.valid, "{:?}", v);
        }

        #[test]
        fn one_impossible_value_is_rejected(steps in proptest::collection::vec((0u8..5, 0u8..15), 1..40), pick in 0usize..1000, how in 0u8..3) {
            let mut ops = sequential(&steps).build();
            // Mutate one ok read/cancel/submit (not the first submit) to an impossible value.
            let candidates: Vec<usize> = (0..ops.len())
                .filter(|&i| ops[i].kind == OpType::Ok && i > 1)
                .collect();
            prop_assume!(!candidates.is_empty());
            let i = candidates[pick % candidates.len()];
            // The job's state as observed by the previous ok read/cancel (a lower bound).
            let prev = ops[..i].iter().rev().find_map(|o| match (&o.kind, &o.call) {
                (OpType::Ok, Call::Read { state: Some(s), .. } | Call::Cancel { state: Some(s), .. }) => js::parse(s),
                _ => None,
            }).unwrap_or(PENDING);
            match &mut ops[i].call {
                Call::Submit { job_id, .. } => *job_id = Some("other".into()),
                Call::Read { state, .. } => {
                    *state = Some(match (how, prev) {
                        (0, _) => "not-found".into(),
                        (_, p) if js::is_terminal(p) => js::name(if p == CANCELLED { js::FAILED } else { CANCELLED }).into(),
                        (_, js::RUNNING) => "pending".into(),
                        _ => "not-found".into(),
                    })
                }
                Call::Cancel { state, .. } => *state = Some(if how == 0 || !js::is_terminal(prev) { "running".into() } else { "pending".into() }),
                _ => unreachable!(),
            }
            let v = linearizable(&ops);
            prop_assert!(!v.valid, "mutated op {} accepted: {:?}", i, ops[i]);
        }
    }
}

#[cfg(test)]
mod perf {
    use super::super::testutil::*;
    use super::*;

    /// One hot key, 6 processes with heavily overlapping reads, then an impossible read at the
    /// end (forcing the whole space to be explored).
    fn hot_key(n: u64, bad_end: bool) -> Vec<Op> {
        let mut h = H::new();
        h.submit(0, "k", 0, 10, "j");
        for i in 0..n {
            let p = 1 + i % 6;
            let t = 20 + i * 10;
            let s = if i < n / 3 {
                "pending"
            } else if i < 2 * n / 3 {
                "running"
            } else {
                "succeeded"
            };
            h.read(p, "k", "j", t, t + 55, s);
        }
        for p in 0..20 {
            h.submit_info(100 + p, "k", 5 + p);
        }
        h.cancel_info(200, "k", "j", 30);
        if bad_end {
            h.read(7, "k", "j", 20 + n * 10 + 100, 20 + n * 10 + 110, "running");
        }
        h.build()
    }

    #[test]
    fn a_hot_key_is_tractable() {
        let t = std::time::Instant::now();
        let v = linearizable(&hot_key(400, false));
        assert!(v.valid, "{v:?}");
        let v = linearizable(&hot_key(400, true));
        assert!(!v.valid, "{v:?}");
        assert!(!mentions(&v, "unknown"), "{v:?}");
        eprintln!("hot key: {:?}, {:?} {:?}", t.elapsed(), v.stats, v.details);
    }
}
