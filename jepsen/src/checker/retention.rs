//! Retention (issue 14): a job missing from the final read is lost unless the cluster deleted
//! it, and a deletion is legal only for a job that was terminal and past its TTL.
//!
//! The final read lists every job the cluster holds and, for each acknowledged job it no longer
//! holds, what `GetJob` said of it: a deleted job's tombstone (`JobView::deleted`: the terminal
//! state it was deleted in, when it finished and when it was deleted), listed with state
//! `deleted`. `no_lost_acks` and `unique_per_key` count such a job as present; this checker is
//! what makes that safe. Per deleted job:
//!
//! - retention must be on (`finished_job_ttl_ms`), and the tombstone's state terminal;
//! - it was deleted no sooner than the TTL after it finished (`deleted_at - finished_at >= ttl`,
//!   both the leader's wall clock, which the run's hosts share);
//! - every terminal state a client observed of it (reads, cancels) is the tombstone's state:
//!   the job was not deleted in another state than the one it ended in.
//!
//! A read or cancel that said `deleted` names a job that must be deleted in the final read too
//! (deletion is final; `legal_transitions` also sees `deleted` never go back).

use std::collections::BTreeMap;

use super::job_state as js;
use super::{final_read, pair_ops, Report, Verdict};
use crate::history::{Call, Op, OpType};

const NO_FINAL_READ: &str = "no ok final-read in the history: cannot check";

/// See the module doc. `ttl_ms`: the masters' `retention.finished_job_ttl` (none: off).
pub fn deleted_jobs_were_due(history: &[Op], ttl_ms: Option<u64>) -> Verdict {
    let mut r = Report::new("deleted_jobs_were_due");
    let Some((jobs, _)) = final_read(history) else {
        r.violation(NO_FINAL_READ);
        return r.verdict();
    };
    let (ops, _) = pair_ops(history);
    // Terminal states clients saw, per job (first witness of each).
    let mut seen: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    let mut deleted_reads: BTreeMap<&str, String> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.kind() == OpType::Ok) {
        let (id, state) = match op.call() {
            Call::Read { job_id, state: Some(s), .. }
            | Call::Cancel { job_id, state: Some(s), .. } => (job_id.as_str(), s.as_str()),
            _ => continue,
        };
        if state == "deleted" {
            deleted_reads.entry(id).or_insert_with(|| op.describe());
        } else if js::parse(state).is_some_and(js::is_terminal) {
            seen.entry(id).or_default().entry(state).or_insert_with(|| op.describe());
        }
    }
    let mut deleted = 0usize;
    let mut min_age: Option<u64> = None;
    for j in jobs {
        let Some(t) = &j.deleted else {
            if let Some(w) = deleted_reads.get(j.id.as_str()) {
                r.violation(format!(
                    "job {} was said deleted (`{w}`) but the final read has it {}",
                    j.id, j.state
                ));
            }
            continue;
        };
        deleted += 1;
        let age = t.deleted_at_ms.saturating_sub(t.finished_at_ms);
        min_age = Some(min_age.map_or(age, |m| m.min(age)));
        let what = format!(
            "job {} (key {}), deleted as {} at {} ms, finished at {} ms",
            j.id, j.key, t.state, t.deleted_at_ms, t.finished_at_ms
        );
        if !js::parse(&t.state).is_some_and(|s| js::is_terminal(s) && s != js::DELETED) {
            r.violation(format!("{what}: deleted while not terminal"));
        }
        match ttl_ms {
            None | Some(0) => r.violation(format!("{what}: deleted, but retention is off")),
            Some(ttl) if age < ttl || t.deleted_at_ms < t.finished_at_ms => r.violation(format!(
                "{what}: deleted {age} ms after it finished, before its TTL of {ttl} ms"
            )),
            _ => {}
        }
        for (state, w) in seen.get(j.id.as_str()).into_iter().flatten() {
            if *state != t.state {
                r.violation(format!("{what}: but `{w}` saw it {state}"));
            }
        }
    }
    r.stat("deleted_jobs", deleted);
    r.stat("deleted_reads", deleted_reads.len());
    if let Some(a) = min_age {
        r.stat("min_age_at_deletion_ms", a);
    }
    if let Some(ttl) = ttl_ms {
        r.stat("finished_job_ttl_ms", ttl);
    }
    r.verdict()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::history::{Deleted, JobView};

    fn gone(id: &str, key: &str, state: &str, finished: u64, deleted: u64) -> JobView {
        JobView {
            state: "deleted".into(),
            deleted: Some(Deleted {
                state: state.into(),
                finished_at_ms: finished,
                deleted_at_ms: deleted,
            }),
            ..job(id, key, "deleted", vec![])
        }
    }

    #[test]
    fn a_terminal_job_deleted_after_its_ttl_is_accounted_for() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(1, "k1", "j1", 20, 30, "succeeded");
        h.read(1, "k1", "j1", 40, 50, "deleted");
        h.final_read(100, vec![gone("j1", "k1", "succeeded", 1_000, 6_000)]);
        let h = h.build();
        let v = deleted_jobs_were_due(&h, Some(5_000));
        assert!(v.valid, "{v:?}");
        assert_eq!(v.stats["deleted_jobs"], 1usize.into());
        // The other job checkers count it as present, and accept the `deleted` read.
        for v in [
            super::super::no_lost_acks(&h),
            super::super::unique_per_key(&h),
            super::super::legal_transitions(&h),
            super::super::linearizable(&h),
            super::super::terminal_after_heal(&h, 10, Some(50)),
        ] {
            assert!(v.valid, "{v:?}");
        }
    }

    #[test]
    fn early_live_or_inconsistent_deletions_fail() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.final_read(100, vec![gone("j1", "k1", "succeeded", 1_000, 3_000)]);
        let v = deleted_jobs_were_due(&h.build(), Some(5_000));
        assert!(mentions(&v, "before its TTL"), "{v:?}");
        assert!(!deleted_jobs_were_due(&h.build(), None).valid);

        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.final_read(100, vec![gone("j1", "k1", "running", 1_000, 9_000)]);
        assert!(mentions(&deleted_jobs_were_due(&h.build(), Some(5_000)), "not terminal"));

        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(1, "k1", "j1", 20, 30, "failed");
        h.final_read(100, vec![gone("j1", "k1", "succeeded", 1_000, 9_000)]);
        assert!(mentions(&deleted_jobs_were_due(&h.build(), Some(5_000)), "saw it failed"));
    }

    #[test]
    fn a_deleted_job_seen_again_fails() {
        let mut h = H::new();
        h.submit(1, "k1", 0, 10, "j1");
        h.read(1, "k1", "j1", 20, 30, "deleted");
        h.read(1, "k1", "j1", 40, 50, "running");
        h.final_read(
            100,
            vec![job(
                "j1",
                "k1",
                "succeeded",
                vec![task(0, "succeeded", vec![att(1, 1, "succeeded")])],
            )],
        );
        let h = h.build();
        assert!(mentions(&deleted_jobs_were_due(&h, Some(5_000)), "said deleted"));
        assert!(!super::super::linearizable(&h).valid);
        assert!(!super::super::legal_transitions(&h).valid);
    }
}
