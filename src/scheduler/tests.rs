//! Planner tests: table cases for each rule, then properties over random clusters checked against
//! a naive O(tasks × executors) reference planner.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use uuid::Uuid;

use super::*;

// ---------- builders ----------

fn res(slots: u32, cpu_millis: u32, memory_mib: u64) -> Resources {
    Resources { slots, cpu_millis, memory_mib }
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn exec(id: &str, capacity: Resources) -> ExecutorView {
    ExecutorView {
        id: id.into(),
        capacity,
        used: Resources::default(),
        labels: BTreeMap::new(),
        placeable: true,
    }
}

fn job(n: u128) -> JobId {
    Uuid::from_u128(n)
}

/// Task `index` of job `n` (seq `n`, priority 0, one slot, no constraints).
fn task(n: u128, index: u32) -> PendingTask {
    PendingTask {
        job: job(n),
        index,
        priority: 0,
        seq: n as u64,
        demand: res(1, 0, 0),
        constraints: BTreeMap::new(),
        job_headroom: u32::MAX,
    }
}

fn tasks(n: u128, count: u32, demand: Resources) -> Vec<PendingTask> {
    (0..count).map(|i| PendingTask { demand, ..task(n, i) }).collect()
}

fn input(executors: Vec<ExecutorView>, pending: Vec<PendingTask>) -> PlanInput {
    PlanInput { executors, pending }
}

fn run(i: &PlanInput) -> Plan {
    plan(i, usize::MAX)
}

/// Assignment count per executor id.
fn per_exec(p: &Plan) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in &p.assignments {
        *m.entry(a.executor.clone()).or_insert(0) += 1;
    }
    m
}

fn counts(kv: &[(&str, usize)]) -> BTreeMap<String, usize> {
    kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn placed(p: &Plan) -> Vec<(u128, u32, &str)> {
    p.assignments.iter().map(|a| (a.job.as_u128(), a.index, a.executor.as_str())).collect()
}

// ---------- table tests ----------

#[test]
fn empty_input_gives_empty_plan() {
    assert_eq!(run(&PlanInput::default()), Plan::default());
    assert_eq!(run(&input(vec![exec("a", res(4, 0, 0))], vec![])), Plan::default());
}

#[test]
fn no_executors_leaves_everything_unplaced() {
    let p = run(&input(vec![], tasks(1, 3, res(1, 0, 0))));
    assert_eq!(p, Plan { assignments: vec![], unplaced: 3 });
}

#[test]
fn slots_are_exhausted() {
    let p = run(&input(vec![exec("a", res(3, 0, 0))], tasks(1, 5, res(1, 0, 0))));
    assert_eq!(per_exec(&p), counts(&[("a", 3)]));
    assert_eq!(p.unplaced, 2);
    // The first three in task order win.
    assert_eq!(p.assignments.iter().map(|a| a.index).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn cpu_is_exhausted() {
    let p = run(&input(vec![exec("a", res(100, 1000, 0))], tasks(1, 5, res(1, 300, 0))));
    assert_eq!((p.assignments.len(), p.unplaced), (3, 2));
}

#[test]
fn memory_is_exhausted() {
    let p = run(&input(vec![exec("a", res(100, 0, 4096))], tasks(1, 5, res(1, 0, 1024))));
    assert_eq!((p.assignments.len(), p.unplaced), (4, 1));
}

#[test]
fn existing_usage_counts_against_capacity() {
    let mut a = exec("a", res(4, 4000, 4096));
    a.used = res(3, 1000, 0);
    let p = run(&input(vec![a.clone()], tasks(1, 3, res(1, 0, 0))));
    assert_eq!((p.assignments.len(), p.unplaced), (1, 2));
    a.used = res(0, 3500, 0);
    let p = run(&input(vec![a.clone()], tasks(1, 3, res(1, 500, 0))));
    assert_eq!((p.assignments.len(), p.unplaced), (1, 2));
    a.used = res(0, 0, 4000);
    let p = run(&input(vec![a], tasks(1, 3, res(1, 0, 100))));
    assert_eq!((p.assignments.len(), p.unplaced), (0, 3));
}

#[test]
fn overcommitted_executor_gets_nothing_not_even_zero_demand() {
    let mut a = exec("a", res(2, 0, 0));
    a.used = res(3, 0, 0);
    let p = run(&input(vec![a], tasks(1, 2, Resources::default())));
    assert_eq!((p.assignments.len(), p.unplaced), (0, 2));
}

#[test]
fn zero_capacity_dimension_accepts_zero_demand() {
    // No cpu or memory declared: slot-only tasks still fit.
    let p = run(&input(vec![exec("a", res(2, 0, 0))], tasks(1, 2, res(1, 0, 0))));
    assert_eq!(p.assignments.len(), 2);
    let p = run(&input(vec![exec("a", res(2, 0, 0))], tasks(1, 1, res(1, 1, 0))));
    assert_eq!((p.assignments.len(), p.unplaced), (0, 1));
}

#[test]
fn zero_demand_tasks_fit_on_full_executors_and_spread() {
    let mut a = exec("a", res(1, 0, 0));
    a.used = res(1, 0, 0);
    let b = ExecutorView { used: res(1, 0, 0), ..exec("b", res(1, 0, 0)) };
    let p = run(&input(vec![a, b], tasks(1, 4, Resources::default())));
    assert_eq!(per_exec(&p), counts(&[("a", 2), ("b", 2)]));
    assert_eq!(p.unplaced, 0);
}

#[test]
fn extreme_values_do_not_overflow() {
    // On each dimension, a saturating sum would make the second task look like it fits.
    let max = res(u32::MAX, u32::MAX, u64::MAX);
    for d in [res(1, 0, 0), res(0, 1, 0), res(0, 0, 1)] {
        let mut a = exec("a", max);
        a.used = res(u32::MAX - d.slots, u32::MAX - d.cpu_millis, u64::MAX - d.memory_mib);
        let p = run(&input(vec![a], tasks(1, 2, d)));
        assert_eq!((p.assignments.len(), p.unplaced), (1, 1), "demand {d:?}");
    }
    // Huge capacities still compare exactly: 1/u64::MAX is less loaded than 1/(u64::MAX - 1).
    let x = ExecutorView { used: res(0, 0, 1), ..exec("x", res(1, 0, u64::MAX - 1)) };
    let y = ExecutorView { used: res(0, 0, 1), ..exec("y", res(1, 0, u64::MAX)) };
    let p = run(&input(vec![x, y], tasks(1, 1, res(1, 0, 0))));
    assert_eq!(placed(&p), vec![(1, 0, "y")]);
}

#[test]
fn constraints_match_and_mismatch() {
    let mut a = exec("a", res(10, 0, 0));
    a.labels = labels(&[("zone", "eu"), ("gpu", "yes"), ("os", "linux")]);
    let mut b = exec("b", res(10, 0, 0));
    b.labels = labels(&[("zone", "us"), ("os", "linux")]);
    let ex = vec![a, b];
    let with = |c: &[(&str, &str)]| {
        let t = PendingTask { constraints: labels(c), ..task(1, 0) };
        run(&input(ex.clone(), vec![t]))
    };
    assert_eq!(placed(&with(&[("zone", "eu")])), vec![(1, 0, "a")]);
    assert_eq!(placed(&with(&[("zone", "us")])), vec![(1, 0, "b")]);
    // Multiple constraints must all hold on the same executor.
    assert_eq!(placed(&with(&[("zone", "eu"), ("gpu", "yes")])), vec![(1, 0, "a")]);
    assert_eq!(with(&[("zone", "us"), ("gpu", "yes")]).unplaced, 1);
    // Wrong value, missing key.
    assert_eq!(with(&[("zone", "ap")]).unplaced, 1);
    assert_eq!(with(&[("rack", "1")]).unplaced, 1);
    // Labels are not constraints: a shared label matches both, extra labels do not matter.
    assert_eq!(
        per_exec(&run(&input(ex.clone(), tasks(1, 4, res(1, 0, 0))))),
        counts(&[("a", 2), ("b", 2)])
    );
    let linux: Vec<_> = (0..4)
        .map(|i| PendingTask { constraints: labels(&[("os", "linux")]), ..task(1, i) })
        .collect();
    assert_eq!(per_exec(&run(&input(ex, linux))), counts(&[("a", 2), ("b", 2)]));
}

#[test]
fn constrained_tasks_fill_their_executors_only() {
    let mut a = exec("a", res(2, 0, 0));
    a.labels = labels(&[("gpu", "yes")]);
    let b = exec("b", res(10, 0, 0));
    let gpu: Vec<_> = (0..3)
        .map(|i| PendingTask { constraints: labels(&[("gpu", "yes")]), ..task(1, i) })
        .collect();
    let p = run(&input(vec![a, b], gpu));
    assert_eq!((per_exec(&p), p.unplaced), (counts(&[("a", 2)]), 1));
}

#[test]
fn non_placeable_executors_get_nothing() {
    let mut a = exec("a", res(10, 0, 0));
    a.placeable = false;
    let p = run(&input(vec![a.clone()], tasks(1, 3, res(1, 0, 0))));
    assert_eq!((p.assignments.len(), p.unplaced), (0, 3));
    // Even zero-demand tasks, even when it is the least loaded.
    let mut b = exec("b", res(10, 0, 0));
    b.used = res(9, 0, 0);
    let p = run(&input(vec![a, b], tasks(1, 3, Resources::default())));
    assert_eq!(per_exec(&p), counts(&[("b", 3)]));
}

#[test]
fn four_tasks_spread_two_and_two() {
    let p = run(&input(
        vec![exec("a", res(4, 0, 0)), exec("b", res(4, 0, 0))],
        tasks(1, 4, res(1, 0, 0)),
    ));
    assert_eq!(per_exec(&p), counts(&[("a", 2), ("b", 2)]));
    // Alternating, ties to the smaller id.
    assert_eq!(placed(&p), vec![(1, 0, "a"), (1, 1, "b"), (1, 2, "a"), (1, 3, "b")]);
}

#[test]
fn spread_prefers_the_least_loaded() {
    // Existing usage: the emptier executor fills up first until loads meet.
    let mut a = exec("a", res(4, 0, 0));
    a.used = res(2, 0, 0);
    let p = run(&input(vec![a, exec("b", res(4, 0, 0))], tasks(1, 4, res(1, 0, 0))));
    assert_eq!(placed(&p), vec![(1, 0, "b"), (1, 1, "b"), (1, 2, "a"), (1, 3, "b")]);
    // Load is relative to capacity: 1/10 is less than 1/2.
    let ex = vec![exec("big", res(10, 0, 0)), exec("small", res(2, 0, 0))];
    let p = run(&input(ex, tasks(1, 6, res(1, 0, 0))));
    let order: Vec<_> = p.assignments.iter().map(|a| a.executor.as_str()).collect();
    assert_eq!(order, vec!["big", "small", "big", "big", "big", "big"]);
}

#[test]
fn spread_compares_cpu_then_memory_when_slots_tie() {
    let ex = |cpu, mem| {
        let mut e = exec("", res(4, 4000, 4096));
        e.used = res(1, cpu, mem);
        e
    };
    let (a, b) = (
        ExecutorView { id: "a".into(), ..ex(2000, 0) },
        ExecutorView { id: "b".into(), ..ex(1000, 4000) },
    );
    let p = run(&input(vec![a.clone(), b.clone()], tasks(1, 1, res(1, 0, 0))));
    assert_eq!(placed(&p), vec![(1, 0, "b")]);
    let (a, b) = (
        ExecutorView { used: res(1, 1000, 1000), ..a },
        ExecutorView { used: res(1, 1000, 2000), ..b },
    );
    let p = run(&input(vec![a, b], tasks(1, 1, res(1, 0, 0))));
    assert_eq!(placed(&p), vec![(1, 0, "a")]);
}

#[test]
fn ties_go_to_the_smallest_id_whatever_the_input_order() {
    let ex = vec![exec("c", res(2, 0, 0)), exec("a", res(2, 0, 0)), exec("b", res(2, 0, 0))];
    let p = run(&input(ex, tasks(1, 1, res(1, 0, 0))));
    assert_eq!(placed(&p), vec![(1, 0, "a")]);
}

#[test]
fn higher_priority_goes_first() {
    let low = PendingTask { priority: -1, ..task(1, 0) };
    let mid = PendingTask { priority: 0, ..task(2, 0) };
    let high = PendingTask { priority: 7, ..task(3, 0) };
    let p = run(&input(vec![exec("a", res(2, 0, 0))], vec![low, mid, high]));
    assert_eq!(placed(&p), vec![(3, 0, "a"), (2, 0, "a")]);
    assert_eq!(p.unplaced, 1);
}

#[test]
fn fifo_by_seq_then_index_within_a_priority() {
    // Job 9 was submitted first (seq 1) although its id sorts last.
    let first = PendingTask { seq: 1, ..task(9, 1) };
    let first0 = PendingTask { seq: 1, ..task(9, 0) };
    let second = PendingTask { seq: 2, ..task(1, 0) };
    let p = run(&input(vec![exec("a", res(2, 0, 0))], vec![second, first, first0]));
    assert_eq!(placed(&p), vec![(9, 0, "a"), (9, 1, "a")]);
    assert_eq!(p.unplaced, 1);
}

#[test]
fn a_task_that_fits_nowhere_does_not_block_smaller_ones() {
    let big = PendingTask { priority: 10, demand: res(4, 0, 0), ..task(1, 0) };
    let mut small = tasks(2, 3, res(1, 0, 0));
    small.insert(0, big);
    let p = run(&input(vec![exec("a", res(2, 0, 0)), exec("b", res(3, 0, 0))], small));
    assert_eq!(p.assignments.len(), 3);
    assert!(p.assignments.iter().all(|a| a.job == job(2)));
    assert_eq!(p.unplaced, 1);
}

#[test]
fn many_unplaceable_tasks_then_placeable_ones() {
    let mut pending = tasks(1, 1000, res(0, 0, 1 << 20));
    pending.extend(tasks(2, 5, res(1, 0, 0)));
    let p = run(&input(vec![exec("a", res(8, 0, 1024))], pending));
    assert_eq!((p.assignments.len(), p.unplaced), (5, 1000));
}

#[test]
fn max_assignments_is_respected() {
    let i =
        input(vec![exec("a", res(10, 0, 0)), exec("b", res(10, 0, 0))], tasks(1, 10, res(1, 0, 0)));
    let full = run(&i);
    assert_eq!(full.assignments.len(), 10);
    for k in [0, 1, 3, 10, 11] {
        let p = plan(&i, k);
        assert_eq!(p.assignments, full.assignments[..k.min(10)], "k={k}");
        assert_eq!(p.unplaced, 0);
    }
    // Unplaceable tasks before the limit are counted; tasks after it are not examined.
    let mut pending = vec![PendingTask { priority: 1, demand: res(100, 0, 0), ..task(5, 0) }];
    pending.extend(tasks(1, 10, res(1, 0, 0)));
    let p = plan(&input(i.executors.clone(), pending), 2);
    assert_eq!((p.assignments.len(), p.unplaced), (2, 1));
}

#[test]
fn duplicate_tasks_are_placed_once() {
    let p = run(&input(vec![exec("a", res(10, 0, 0))], vec![task(1, 0), task(1, 0), task(1, 1)]));
    assert_eq!(placed(&p), vec![(1, 0, "a"), (1, 1, "a")]);
}

#[test]
fn mixed_demands_share_executors() {
    let mut pending = Vec::new();
    for i in 0..6 {
        let demand = if i % 2 == 0 { res(1, 0, 0) } else { res(1, 1000, 0) };
        pending.push(PendingTask { demand, ..task(1, i) });
    }
    let ex = vec![exec("a", res(3, 2000, 0)), exec("b", res(3, 2000, 0))];
    let i = input(ex, pending);
    let p = run(&i);
    check_valid(&i, &p);
    // Slot-only tasks avoid the executor whose cpu is busier; the last cpu task finds `a` out of
    // slots and `b` out of cpu.
    assert_eq!(placed(&p), vec![(1, 0, "a"), (1, 1, "b"), (1, 2, "a"), (1, 3, "b"), (1, 4, "a")]);
    assert_eq!(p.unplaced, 1);
}

#[test]
fn constraint_classes_see_each_others_placements() {
    let eu = labels(&[("zone", "eu")]);
    let ex = vec![
        ExecutorView { labels: eu.clone(), ..exec("a", res(2, 0, 0)) },
        ExecutorView { labels: eu.clone(), ..exec("b", res(2, 0, 0)) },
        exec("c", res(2, 0, 0)),
    ];
    let constrained = |n, count| -> Vec<_> {
        (0..count).map(|i| PendingTask { constraints: eu.clone(), ..task(n, i) }).collect()
    };
    let mut pending = constrained(1, 2);
    pending.extend(tasks(2, 4, res(1, 0, 0)));
    pending.extend(constrained(3, 1));
    let i = input(ex, pending);
    let p = run(&i);
    check_valid(&i, &p);
    assert_eq!(
        placed(&p),
        vec![(1, 0, "a"), (1, 1, "b"), (2, 0, "c"), (2, 1, "a"), (2, 2, "b"), (2, 3, "c")]
    );
    // The unconstrained job filled the eu executors: job 3 finds no room.
    assert_eq!(p.unplaced, 1);
}

#[test]
fn deterministic_and_independent_of_input_order() {
    let mut ex = vec![
        exec("a", res(3, 2000, 2048)),
        exec("b", res(5, 1000, 4096)),
        exec("c", res(2, 4000, 1024)),
    ];
    ex[1].labels = labels(&[("zone", "eu")]);
    let mut pending = tasks(1, 4, res(1, 500, 512));
    pending.extend(tasks(2, 3, res(1, 0, 0)));
    pending.push(PendingTask { constraints: labels(&[("zone", "eu")]), ..task(3, 0) });
    let i = input(ex.clone(), pending.clone());
    let p = run(&i);
    assert_eq!(p, run(&i));
    ex.reverse();
    pending.reverse();
    assert_eq!(p, run(&input(ex, pending)));
}

// ---------- reference planner and checks ----------

/// The rules written as directly as possible: for each task in order, scan every executor.
fn reference(i: &PlanInput, max: usize) -> Plan {
    let mut ts: Vec<&PendingTask> = i.pending.iter().collect();
    ts.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.seq.cmp(&b.seq))
            .then(a.index.cmp(&b.index))
            .then(a.job.cmp(&b.job))
    });
    let mut load: Vec<[u128; 3]> = i.executors.iter().map(|e| dims(e.used)).collect();
    let mut planned = vec![0usize; i.executors.len()];
    let mut seen = BTreeSet::new();
    let mut per_job: BTreeMap<JobId, u32> = BTreeMap::new();
    let mut out = Plan::default();
    for t in ts {
        if out.assignments.len() >= max {
            break;
        }
        if !seen.insert((t.job, t.index)) {
            continue;
        }
        if per_job.get(&t.job).copied().unwrap_or(0) >= t.job_headroom {
            continue;
        }
        let d = dims(t.demand);
        let mut best: Option<usize> = None;
        for (x, e) in i.executors.iter().enumerate() {
            let cap = dims(e.capacity);
            let ok = e.placeable
                && t.constraints.iter().all(|(k, v)| e.labels.get(k) == Some(v))
                && (0..3).all(|k| load[x][k] + d[k] <= cap[k]);
            if !ok {
                continue;
            }
            best = match best {
                None => Some(x),
                Some(y) => {
                    // Compare load / cap per dimension by cross-multiplying.
                    let (cx, cy) = (cap, dims(i.executors[y].capacity));
                    let mut ord = std::cmp::Ordering::Equal;
                    for k in 0..3 {
                        ord =
                            ord.then((load[x][k] * cy[k].max(1)).cmp(&(load[y][k] * cx[k].max(1))));
                    }
                    let ord =
                        ord.then(planned[x].cmp(&planned[y])).then(e.id.cmp(&i.executors[y].id));
                    Some(if ord.is_lt() { x } else { y })
                }
            };
        }
        match best {
            Some(x) => {
                (0..3).for_each(|k| load[x][k] += d[k]);
                planned[x] += 1;
                *per_job.entry(t.job).or_default() += 1;
                out.assignments.push(Assignment {
                    job: t.job,
                    index: t.index,
                    executor: i.executors[x].id.clone(),
                });
            }
            None => out.unplaced += 1,
        }
    }
    out
}

fn dims(r: Resources) -> [u128; 3] {
    [r.slots.into(), r.cpu_millis.into(), r.memory_mib.into()]
}

/// Capacity, constraints, placeability, uniqueness; returns final loads by executor id.
fn check_valid(i: &PlanInput, p: &Plan) -> BTreeMap<String, [u128; 3]> {
    let execs: BTreeMap<&str, &ExecutorView> =
        i.executors.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut load: BTreeMap<String, [u128; 3]> =
        i.executors.iter().map(|e| (e.id.clone(), dims(e.used))).collect();
    let mut once = BTreeSet::new();
    for a in &p.assignments {
        assert!(once.insert((a.job, a.index)), "task placed twice: {a:?}");
        let t = i
            .pending
            .iter()
            .find(|t| t.job == a.job && t.index == a.index)
            .expect("assigned an unknown task");
        let e = execs.get(a.executor.as_str()).expect("assigned to an unknown executor");
        assert!(e.placeable, "placed on non-placeable {}", e.id);
        for (k, v) in &t.constraints {
            assert_eq!(e.labels.get(k), Some(v), "constraint {k}={v} violated on {}", e.id);
        }
        let l = load.get_mut(&e.id).unwrap();
        (0..3).for_each(|k| l[k] += dims(t.demand)[k]);
    }
    // Only executors that got something: `used` alone may exceed a (shrunk) capacity.
    let got = per_exec(p);
    for (id, l) in &load {
        let e = execs[id.as_str()];
        if got.contains_key(id) {
            assert!(
                (0..3).all(|k| l[k] <= dims(e.capacity)[k]),
                "{id} over capacity: {l:?} > {:?}",
                e.capacity
            );
        }
    }
    load
}

// ---------- properties ----------

const VOCAB: [(&str, &[&str]); 2] = [("zone", &["a", "b"]), ("gpu", &["yes"])];

fn label_set() -> impl Strategy<Value = BTreeMap<String, String>> {
    (proptest::option::of(0..2usize), proptest::bool::weighted(0.3)).prop_map(|(zone, gpu)| {
        let mut m = BTreeMap::new();
        if let Some(z) = zone {
            m.insert(VOCAB[0].0.to_string(), VOCAB[0].1[z].to_string());
        }
        if gpu {
            m.insert(VOCAB[1].0.to_string(), VOCAB[1].1[0].to_string());
        }
        m
    })
}

fn executors() -> impl Strategy<Value = Vec<ExecutorView>> {
    let one = (
        (
            0u32..6,
            prop::sample::select(vec![0u32, 1000, 2000, 4000]),
            prop::sample::select(vec![0u64, 1024, 4096]),
        ),
        (0u32..8, 0u32..5000, 0u64..5000),
        label_set(),
        proptest::bool::weighted(0.8),
    );
    prop::collection::vec(one, 0..8).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(n, ((s, c, m), (us, uc, um), labels, placeable))| ExecutorView {
                id: format!("e{n}"),
                capacity: res(s, c, m),
                // Mostly within capacity, sometimes over (capacity shrank on re-registration).
                used: res(us % (s + 2), uc % (c + 2), um % (m + 2)),
                labels,
                placeable,
            })
            .collect()
    })
}

fn demand() -> impl Strategy<Value = Resources> {
    (
        0u32..3,
        prop::sample::select(vec![0u32, 500, 1000]),
        prop::sample::select(vec![0u64, 512, 2048]),
    )
        .prop_map(|(s, c, m)| res(s, c, m))
}

/// Up to 6 jobs (priority, seq, constraints, default demand); tasks pick a job and mostly use its
/// demand, sometimes their own, so demands vary within a constraint class.
fn pending() -> impl Strategy<Value = Vec<PendingTask>> {
    let headroom = prop_oneof![3 => Just(u32::MAX), 1 => 0u32..3];
    let jobs = prop::collection::vec((-2i32..3, 0u64..4, label_set(), demand(), headroom), 1..6);
    let picks =
        prop::collection::vec((0usize..6, proptest::option::weighted(0.2, demand())), 0..40);
    (jobs, picks).prop_map(|(jobs, picks)| {
        let mut next = vec![0u32; jobs.len()];
        picks
            .into_iter()
            .map(|(j, own)| {
                let j = j % jobs.len();
                let (priority, seq, constraints, d, job_headroom) = jobs[j].clone();
                next[j] += 1;
                PendingTask {
                    job: job(j as u128 + 1),
                    index: next[j] - 1,
                    priority,
                    seq,
                    demand: own.unwrap_or(d),
                    constraints,
                    job_headroom,
                }
            })
            .collect()
    })
}

fn max_assignments() -> impl Strategy<Value = usize> {
    prop_oneof![Just(usize::MAX), 0usize..30]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn plans_are_valid_bounded_and_maximal(ex in executors(), pend in pending(), max in max_assignments()) {
        let i = input(ex, pend);
        let p = plan(&i, max);
        let load = check_valid(&i, &p);
        prop_assert!(p.assignments.len() <= max);
        prop_assert!(p.assignments.len() + p.unplaced <= i.pending.len());
        // Parallelism: no job gets more than its headroom.
        let mut per_job: BTreeMap<JobId, u32> = BTreeMap::new();
        for a in &p.assignments {
            *per_job.entry(a.job).or_default() += 1;
        }
        for t in &i.pending {
            prop_assert!(per_job.get(&t.job).copied().unwrap_or(0) <= t.job_headroom);
        }
        let capped = |t: &PendingTask| per_job.get(&t.job).copied().unwrap_or(0) >= t.job_headroom;
        if p.assignments.len() < max {
            // Nothing was cut off: every task is placed, held back by its job's parallelism, or
            // fits nowhere, even now.
            let placed: BTreeSet<_> = p.assignments.iter().map(|a| (a.job, a.index)).collect();
            let rest: Vec<_> = i.pending.iter().filter(|t| !placed.contains(&(t.job, t.index))).collect();
            let held = rest.iter().filter(|t| capped(t)).count();
            // (A task may be unplaced and its job capped later, so this bounds from below.)
            prop_assert!(p.assignments.len() + p.unplaced + held >= i.pending.len());
            for t in rest.into_iter().filter(|t| !capped(t)) {
                for e in &i.executors {
                    let fits = (0..3).all(|k| load[&e.id][k] + dims(t.demand)[k] <= dims(e.capacity)[k]);
                    let matches = t.constraints.iter().all(|(k, v)| e.labels.get(k) == Some(v));
                    prop_assert!(!(e.placeable && matches && fits), "unplaced {:?} fits on {}", t, e.id);
                }
            }
        }
    }

    #[test]
    fn plan_equals_the_reference(ex in executors(), pend in pending(), max in max_assignments()) {
        let i = input(ex, pend);
        prop_assert_eq!(plan(&i, max), reference(&i, max));
    }

    #[test]
    fn a_limit_takes_a_prefix(ex in executors(), pend in pending(), k in 0usize..30) {
        let i = input(ex, pend);
        let (full, cut) = (run(&i), plan(&i, k));
        prop_assert_eq!(&cut.assignments[..], &full.assignments[..k.min(full.assignments.len())]);
        prop_assert!(cut.unplaced <= full.unplaced);
    }

    #[test]
    fn deterministic_whatever_the_input_order(
        (ex, shuffled_ex) in executors().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        (pend, shuffled_pend) in pending().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        max in max_assignments(),
    ) {
        let i = input(ex, pend);
        let p = plan(&i, max);
        prop_assert_eq!(&p, &plan(&i, max));
        prop_assert_eq!(&p, &plan(&input(shuffled_ex, shuffled_pend), max));
    }
}
