//! An in-process measurement of the state machine store at scale (ignored by default; run with
//! `TRIAD_BENCH_JOBS=1000000 cargo test --release --lib store::bench -- --ignored --nocapture`):
//! how much memory N finished one-task jobs take (RSS before and after applying them through
//! [`StateMachineStore::apply`], like a master's apply does), and the longest apply (a commit
//! waiting for the state) while [`StateMachineStore::build_snapshot`] runs beside a steady stream
//! of small applies. Not a test of correctness: it prints figures for BENCHMARKS.md.

use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};

use super::*;
use crate::raft::Request;
use crate::state::{Assignment, Command, JobSpec, Report, Resources};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Feed {
    index: u64,
    job: u128,
    now: u64,
}

impl Feed {
    fn entry(&mut self, commands: Vec<Command>) -> Entry {
        self.index += 1;
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Request { commands }),
        }
    }

    /// What `bench submit` sends (placeable), as the leader turns it into a command.
    fn submit(&mut self) -> (Command, uuid::Uuid) {
        self.job += 1;
        self.now += 1;
        let id =
            uuid::Uuid::from_u128(self.job.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        let key = uuid::Uuid::from_u128(!self.job.wrapping_mul(0x2545_f491_4f6c_dd1d)).to_string();
        let mut spec = JobSpec::new("true");
        spec.retry_backoff_ms = 0;
        let cmd = Command::SubmitJob {
            id,
            name: "bench".into(),
            idempotency_key: key,
            spec,
            now: self.now,
        };
        (cmd, id)
    }
}

const EXECUTOR: &str = "executor-5f2c9d8e-6a1b-4c3d-9e8f-0a1b2c3d4e5f";

#[test]
#[ignore = "a measurement for BENCHMARKS.md: minutes at 10^6 jobs"]
fn finished_jobs_memory_and_snapshot_stall() {
    let jobs: u64 =
        std::env::var("TRIAD_BENCH_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let dbs = open(dir.path()).unwrap();
        let (_, mut sm) = open_stores(&dbs).unwrap();
        let mut feed = Feed { index: 0, job: 0, now: 1_700_000_000_000 };
        let register = Command::RegisterExecutor {
            id: EXECUTOR.into(),
            addr: "127.0.0.1:7000".into(),
            capacity: Resources { slots: 1 << 20, cpu_millis: 0, memory_mib: 0 },
            labels: Default::default(),
            now: feed.now,
        };
        sm.apply([feed.entry(vec![register])]).await.unwrap();
        let before = rss_kib();
        let started = Instant::now();
        const BATCH: u64 = 1000;
        let mut done = 0;
        while done < jobs {
            let n = BATCH.min(jobs - done);
            let (submits, ids): (Vec<_>, Vec<_>) = (0..n).map(|_| feed.submit()).unzip();
            sm.apply([feed.entry(submits)]).await.unwrap();
            let now = feed.now;
            let assignments =
                ids.iter().map(|&job| Assignment { job, index: 0, executor: EXECUTOR.into() }).collect();
            let out = sm.apply([feed.entry(vec![Command::AssignTasks { assignments, now }])]).await.unwrap();
            let Ok(crate::state::Outcome::Assigned { tokens }) = &out[0].results[0] else { panic!("{out:?}") };
            let reports = |report: Report| -> Vec<Command> {
                ids.iter()
                    .zip(tokens)
                    .map(|(&job, t)| Command::TaskReported {
                        job,
                        index: 0,
                        token: *t.as_ref().unwrap(),
                        executor: EXECUTOR.into(),
                        report: report.clone(),
                        now,
                    })
                    .collect()
            };
            sm.apply([feed.entry(reports(Report::Started))]).await.unwrap();
            let fin = Report::Finished { exit_code: 0, error: None };
            let out = sm.apply([feed.entry(reports(fin))]).await.unwrap();
            assert!(out[0].results.iter().all(|r| r.is_ok()));
            done += n;
        }
        let fill = started.elapsed();
        let after = rss_kib();
        {
            let applied = sm.applied();
            let a = applied.read().unwrap();
            assert_eq!(a.state.tally().jobs(crate::state::JobState::Succeeded), jobs);
        }
        println!(
            "filled {jobs} finished one-task jobs in {:.1} s: RSS {} -> {} MiB, {:.0} bytes per job",
            fill.as_secs_f64(),
            before / 1024,
            after / 1024,
            (after.saturating_sub(before) * 1024) as f64 / jobs as f64
        );

        // A snapshot beside a stream of small applies (10 submissions each, as at ~10,000/s).
        let mut builder = sm.get_snapshot_builder().await;
        let snap = tokio::spawn(async move {
            let t = Instant::now();
            builder.build_snapshot().await.unwrap();
            t.elapsed()
        });
        let mut longest = Duration::ZERO;
        let mut lat = Vec::new();
        while !snap.is_finished() {
            let cmds = (0..10).map(|_| feed.submit().0).collect();
            let entry = feed.entry(cmds);
            let t = Instant::now();
            sm.apply([entry]).await.unwrap();
            let d = t.elapsed();
            longest = longest.max(d);
            lat.push(d);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = snap.await.unwrap();
        lat.sort();
        let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or_default();
        println!(
            "snapshot of {jobs} jobs took {:.2} s (encode and write); {} applies beside it: longest {:.1} ms, p99 {:.2} ms; RSS peak now {} MiB",
            took.as_secs_f64(),
            lat.len(),
            longest.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            rss_kib() / 1024
        );
    });
}
