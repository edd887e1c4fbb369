//! Cluster-level checkers: leadership (guarantee 6) and crashes.

use std::collections::{BTreeMap, BTreeSet};

use super::{pair_ops, Report, Verdict};
use crate::history::{Call, Op, OpType};

/// At most one leader per term: no two different nodes answered an `ok` leader poll claiming
/// leadership of the same term. Assumes each poll reports the node's own view (term and role)
/// atomically.
pub fn single_leader_per_term(history: &[Op]) -> Verdict {
    let mut r = Report::new("single_leader_per_term");
    let (ops, _) = pair_ops(history);
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut polls = 0usize;
    for op in &ops {
        if let (OpType::Ok, Call::LeaderPoll { node, term, leader }) = (op.kind(), op.call()) {
            polls += 1;
            if *leader {
                leaders.entry(*term).or_default().insert(*node);
            }
        }
    }
    for (term, nodes) in &leaders {
        if nodes.len() > 1 {
            let names: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
            r.violation(format!("term {term} has {} leaders: {}", nodes.len(), names.join(", ")));
        }
    }
    r.stat("polls", polls);
    r.stat("terms_with_leader", leaders.len());
    r.stat("max_term", leaders.keys().next_back().copied().unwrap_or(0));
    r.verdict()
}

/// Patterns that mean a node panicked.
pub const PANIC_PATTERNS: [&str; 2] = ["panicked at", "RUST_BACKTRACE"];

/// No node log contains a panic (`panicked at`, or the `RUST_BACKTRACE` hint a panic prints).
/// Details name the node and the line.
pub fn no_panics(node_logs: &[(String, String)]) -> Verdict {
    let mut r = Report::new("no_panics");
    let mut nodes = 0;
    for (node, text) in node_logs {
        let mut found = false;
        for (i, line) in text.lines().enumerate() {
            if PANIC_PATTERNS.iter().any(|p| line.contains(p)) {
                found = true;
                let line: String = line.chars().take(300).collect();
                r.violation(format!("{node}:{}: {}", i + 1, line.trim()));
            }
        }
        nodes += found as usize;
    }
    r.stat("logs", node_logs.len());
    r.stat("nodes_panicked", nodes);
    r.verdict()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn one_leader_per_term_passes() {
        let mut h = H::new();
        h.poll(0, 1, 1, true).poll(0, 2, 1, false).poll(0, 3, 1, false);
        h.poll(5, 1, 2, false).poll(5, 2, 2, true).poll(6, 2, 2, true);
        let v = single_leader_per_term(&h.build());
        assert!(v.valid, "{v:?}");
        assert_eq!(v.stats["terms_with_leader"], 2usize.into());
    }

    #[test]
    fn two_leaders_in_one_term_fail() {
        let mut h = H::new();
        h.poll(0, 1, 3, true).poll(1, 2, 3, true).poll(2, 3, 4, true);
        let v = single_leader_per_term(&h.build());
        assert!(!v.valid);
        assert!(mentions(&v, "term 3 has 2 leaders: n1, n2"), "{v:?}");
    }

    #[test]
    fn panics_in_logs_fail() {
        let logs = vec![
            ("m1".to_string(), "INFO ok\nINFO still ok\n".to_string()),
            ("e2".to_string(), "INFO x\nthread 'main' panicked at src/raft/mod.rs:10:5:\nboom\nnote: run with `RUST_BACKTRACE=1`\n".to_string()),
        ];
        let v = no_panics(&logs);
        assert!(!v.valid);
        assert!(mentions(&v, "e2:2: thread 'main' panicked at src/raft/mod.rs:10:5:"), "{v:?}");
        assert_eq!(v.stats["nodes_panicked"], 1usize.into());
        assert!(no_panics(&logs[..1]).valid);
    }
}
