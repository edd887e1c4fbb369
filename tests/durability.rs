//! Durability with real `triad master` processes (issue 15): a full disk, a damaged log or
//! snapshot, each a clear message and no acknowledged job lost.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

const ELECTION: Duration = Duration::from_secs(20);

/// A tmpfs of a fixed size mounted at a directory for the test's lifetime (the test runs as
/// root in CI; elsewhere it cannot mount and says so).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_disk_fills_exits_with_one_line_and_no_acknowledged_job_is_lost() {
    let disk: Mutex<Option<Result<Tmpfs, String>>> = Mutex::new(None);
    let mut c = Cluster::start(3, |cfg| {
        if cfg.id == 3 {
            *disk.lock().unwrap() = Some(Tmpfs::mount(&cfg.data_dir, "4m"));
        }
    });
    let _disk = match disk.lock().unwrap().take() {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs here ({e}); this test needs root");
            return;
        }
        None => unreachable!("master 3 was configured"),
    };
    c.wait_leader(ELECTION).await;

    // Submissions of 16 KiB each until master 3's 4 MiB are full (a few hundred), then as many
    // again: the other two keep acknowledging.
    let client = c.client();
    let big = "x".repeat(16 * 1024);
    let mut acked = BTreeMap::new();
    let mut exited_after = None;
    for i in 0..2000 {
        let key = format!("fill-{i}");
        let r = client.submit_job(submit_req(&key, "echo", &[&big])).await;
        match r {
            Ok(r) => {
                acked.insert(r.job_id, key);
            }
            Err(e) => panic!("submission {key} failed with two healthy masters: {e}"),
        }
        if exited_after.is_none() {
            if let Some(status) = c.try_wait(3) {
                eprintln!("master 3 exited after {i} submissions: {status}");
                exited_after = Some((i, status));
            }
        } else if acked.len() >= exited_after.map_or(0, |(i, _)| i) + 100 {
            break;
        }
    }
    let status = match exited_after {
        Some((_, status)) => status,
        None => {
            let deadline = std::time::Instant::now() + ELECTION;
            loop {
                if let Some(status) = c.try_wait(3) {
                    break status;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "master 3 kept running on a full disk"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(!status.success(), "a master that cannot write must exit non-zero: {status}");
    let log = std::fs::read_to_string(&c.master(3).log).unwrap();
    let last = log.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(
        last.contains("raft stopped") && last.contains("supervisor restarts"),
        "the last line should say why it stopped and what to do: {last:?}\nlog tail: {}",
        log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
    );

    // Every acknowledged job is there, through the two masters that are left.
    let jobs = c.client().list_all_jobs("", false).await.unwrap();
    let found: BTreeMap<String, String> =
        jobs.into_iter().map(|j| (j.id, j.idempotency_key)).collect();
    let missing: Vec<_> = acked.keys().filter(|id| !found.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged jobs missing: {missing:?}", missing.len());
    eprintln!("{} jobs acknowledged, all present after master 3 stopped", acked.len());
}
