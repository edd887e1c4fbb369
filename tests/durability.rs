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

    // Room again (the supervisor's restart, once the disk has space): master 3 starts on what
    // it wrote before the disk filled and catches up with the leader.
    let out = std::process::Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(data_dir(&c, 3))
        .output()
        .unwrap();
    assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    c.restart(3);
    let leader = c.wait_leader(ELECTION).await;
    let target = c.status(leader).await.unwrap().applied_index;
    c.wait_applied(3, target, Duration::from_secs(60)).await;
    assert!(c.is_running(3), "master 3 runs again");
    let on_3 = c.client_for(3).list_all_jobs("", true).await.unwrap();
    let ids: std::collections::BTreeSet<String> = on_3.into_iter().map(|j| j.id).collect();
    let missing: Vec<_> = acked.keys().filter(|id| !ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "master 3 lacks {} acknowledged jobs after catching up",
        missing.len()
    );
}

/// Waits until master `id` exits by itself; its status and the last `error:` line of its log.
async fn wait_exit(c: &mut Cluster, id: u64) -> (std::process::ExitStatus, String) {
    let status = wait_for(&format!("master {id} to exit by itself"), ELECTION, || {
        let exited = c.try_wait(id);
        async move { exited }
    })
    .await;
    let log = std::fs::read_to_string(&c.master(id).log).unwrap();
    let line = log.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
    (status, line)
}

fn data_dir(c: &Cluster, id: u64) -> PathBuf {
    c.master(id).log.with_file_name("data")
}

/// The largest file of `dir` whose name ends in `ext`.
fn largest(dir: &Path, ext: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap_or_else(|| panic!("no {ext} file in {}", dir.display()))
}

/// Submits `n` jobs; their ids by idempotency key.
async fn submit(c: &Cluster, prefix: &str, n: usize) -> BTreeMap<String, String> {
    let client = c.client();
    let mut acked = BTreeMap::new();
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let r = client.submit_job(submit_req(&key, "true", &[])).await.unwrap();
        acked.insert(key, r.job_id);
    }
    acked
}

async fn assert_all_present(c: &Cluster, acked: &BTreeMap<String, String>) {
    let jobs = c.client().list_all_jobs("", false).await.unwrap();
    let found: BTreeMap<String, String> =
        jobs.into_iter().map(|j| (j.idempotency_key, j.id)).collect();
    for (k, id) in acked {
        assert_eq!(found.get(k), Some(id), "acknowledged job {k} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_stops_the_master_at_start_up_naming_the_file() {
    let mut c = Cluster::start(3, |cfg| {
        cfg.raft.snapshot_every = 20;
        cfg.raft.keep_logs = 5;
    });
    let leader = c.wait_leader(ELECTION).await;
    submit(&c, "snap", 120).await;
    let f = c.followers(leader)[0];
    wait_for("a snapshot on the follower", ELECTION, || async {
        c.status(f).await.filter(|s| s.snapshot_index > 0)
    })
    .await;
    c.kill(f);
    let snap = largest(&data_dir(&c, f).join("snapshots"), ".snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&snap, &bytes).unwrap();
    c.restart(f);
    let (status, line) = wait_exit(&mut c, f).await;
    assert!(!status.success(), "{status}");
    assert!(
        line.contains(&snap.display().to_string())
            && line.contains("is damaged")
            && line.contains("Replacing a master"),
        "the line should name the file and what to do: {line:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_on_every_master_is_dropped_and_no_acknowledged_job_is_lost() {
    let mut c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;
    let acked = submit(&c, "torn", 40).await;
    // Every master dies in the middle of a write: its last record is cut short (an append
    // record's type and the start of its log id; never synced, so never acknowledged).
    for id in 1..=3 {
        c.kill(id);
        let chunk = largest(&data_dir(&c, id).join("raft-log"), ".wal");
        let mut f = std::fs::OpenOptions::new().append(true).open(&chunk).unwrap();
        std::io::Write::write_all(&mut f, &[0, 0, 0, 1, 0, 0, 0, 64, 1, 2, 3]).unwrap();
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_leader(ELECTION).await;
    assert_all_present(&c, &acked).await;
    for id in 1..=3 {
        assert!(c.try_wait(id).is_none(), "master {id} stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_in_the_middle_of_the_log_stops_the_master_with_one_line() {
    let mut c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    submit(&c, "mid", 40).await;
    let f = c.followers(leader)[0];
    c.kill(f);
    let chunk = largest(&data_dir(&c, f).join("raft-log"), ".wal");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&chunk, &bytes).unwrap();
    c.restart(f);
    let (status, line) = wait_exit(&mut c, f).await;
    assert!(!status.success(), "{status}");
    assert!(
        line.contains("Raft log") && line.contains("replace the master"),
        "the line should say the log is damaged and what to do: {line:?}"
    );
    // Nothing was cut off the damaged log behind the master's back.
    assert_eq!(std::fs::read(&chunk).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_on_an_empty_data_dir_under_its_old_id_refuses_to_start() {
    let mut c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    let acked = submit(&c, "wiped", 20).await;
    let f = c.followers(leader)[0];
    let identity = std::fs::read_to_string(data_dir(&c, f).join("identity")).unwrap();
    assert!(identity.contains(&format!("node = {f}")), "{identity}");
    // Its disk is gone (or not mounted), and it is started again as if nothing happened.
    c.kill(f);
    c.wipe(f);
    c.restart(f);
    let (status, line) = wait_exit(&mut c, f).await;
    assert!(!status.success(), "{status}");
    assert!(
        line.contains("is empty") && line.contains("Replacing a master"),
        "the line should say why and point to the procedure: {line:?}"
    );
    // A data dir of another master is refused too.
    let other = c.followers(leader).into_iter().find(|&m| m != f).unwrap_or(leader);
    let theirs = std::fs::read_to_string(data_dir(&c, other).join("identity")).unwrap();
    std::fs::create_dir_all(data_dir(&c, f)).unwrap();
    std::fs::write(data_dir(&c, f).join("identity"), theirs).unwrap();
    c.restart(f);
    let (status, line) = wait_exit(&mut c, f).await;
    assert!(!status.success(), "{status}");
    assert!(line.contains(&format!("belongs to master {other}")), "{line:?}");
    assert_all_present(&c, &acked).await;
}
