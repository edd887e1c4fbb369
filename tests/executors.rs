//! Executors, scheduling and failover with real masters and executors as processes (issue
//! "Executors, scheduling and failover", done-list items 1–5 and 7; item 6 is the planner's own
//! tests in src/scheduler). The liveness TTL is 2 s here to keep the suite short.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use triad::api::{pb, ClientCredentials, Dialer, ServerName};
use triad::security::Role;

const ELECTION: Duration = Duration::from_secs(20);
const TTL_MS: u64 = 2000;

fn cluster() -> Cluster {
    Cluster::start(3, |cfg| {
        cfg.executors.ttl_ms = TTL_MS;
        cfg.executors.heartbeat_ms = 250;
    })
}

fn shell_job(tasks: u32, script: &str, max_attempts: u32) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        name: "test".into(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        spec: Some(pb::JobSpec {
            command: script.to_string(),
            shell: true,
            task_count: tasks,
            max_attempts,
            retry_backoff_ms: 100,
            ..Default::default()
        }),
    }
}

async fn wait_executors(c: &Cluster, n: usize) {
    let client = c.client();
    wait_for(&format!("{n} alive executors"), Duration::from_secs(20), || async {
        let r = client
            .call(|ch| async move {
                pb::executor_service_client::ExecutorServiceClient::new(ch)
                    .list_executors(pb::ListExecutorsRequest {
                        consistency: 0,
                        ..Default::default()
                    })
                    .await
            })
            .await
            .ok()?;
        (r.executors.iter().filter(|e| e.state == "alive").count() >= n).then_some(())
    })
    .await;
}

async fn wait_job_state(c: &Cluster, id: &str, state: &str, timeout: Duration) -> pb::Job {
    let client = c.client();
    wait_for(&format!("job {id} to be {state}"), timeout, || async {
        client.get_job(id, false).await.ok().filter(|j| j.state == state)
    })
    .await
}

/// Running attempts of a job: (task, executor).
fn running_on(job: &pb::Job) -> Vec<(u32, String)> {
    job.tasks
        .iter()
        .filter(|t| t.state == "running")
        .filter_map(|t| t.attempts.last().map(|a| (t.index, a.executor.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_tasks_run_once_each_with_tiling_uuid_ranges_and_a_failing_job_fails_with_its_exit_code(
) {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let _a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 4, &[]);
    let _b = Executor::start(&c.masters_arg(), c.dir.path(), "exec-b", 4, &[]);
    wait_executors(&c, 2).await;

    let (code, out, err) = c.cli(&[
        "job", "submit", "--tasks", "4", "--wait", "--shell", "--",
        "echo $TRIAD_TASK_INDEX $TRIAD_TASK_COUNT $TRIAD_ATTEMPT $TRIAD_RANGE_START $TRIAD_RANGE_END $TRIAD_JOB_ID",
    ]);
    assert_eq!(code, 0, "submit --wait: {out} {err}");
    let id = out.lines().next().unwrap().trim().to_string();
    let job = c.client().get_job(&id, false).await.unwrap();
    assert_eq!(job.state, "succeeded");
    let mut executors = BTreeMap::new();
    let mut ranges = Vec::new();
    for t in &job.tasks {
        assert_eq!(t.attempts.len(), 1, "task {} ran {} attempts", t.index, t.attempts.len());
        *executors.entry(t.attempts[0].executor.clone()).or_insert(0) += 1;
        let (code, out, err) = c.cli(&["job", "logs", &id, "--task", &t.index.to_string()]);
        assert_eq!(code, 0, "logs: {err}");
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(
            f,
            vec![t.index.to_string().as_str(), "4", "1", f[3], f[4], id.as_str()],
            "task {} output {out:?}",
            t.index
        );
        ranges.push((
            uuid::Uuid::parse_str(f[3]).unwrap().as_u128(),
            uuid::Uuid::parse_str(f[4]).unwrap().as_u128(),
        ));
    }
    assert_eq!(executors.len(), 2, "tasks spread over both executors: {executors:?}");
    // The ranges tile the 128-bit space: contiguous, inclusive, from 0 to the maximum.
    assert_eq!(ranges[0].0, 0);
    assert_eq!(ranges[3].1, u128::MAX);
    for w in ranges.windows(2) {
        assert_eq!(w[0].1 + 1, w[1].0, "ranges must be contiguous: {ranges:x?}");
    }

    let (code, out, _) = c.cli(&[
        "job",
        "submit",
        "--max-attempts",
        "2",
        "--backoff",
        "100ms",
        "--wait",
        "--shell",
        "--",
        "exit 3",
    ]);
    assert_ne!(code, 0, "a failing job exits non-zero");
    let id = out.lines().next().unwrap().trim();
    let (_, out, _) = c.cli(&["job", "get", id, "-o", "json"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["state"], "failed");
    let attempts = j["tasks"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "max attempts respected");
    assert!(
        attempts.iter().all(|a| a["exit_code"] == 3 && a["has_exit_code"] == true),
        "{attempts:?}"
    );
    let (_, human, _) = c.cli(&["job", "get", id]);
    assert!(human.contains("failed") && human.contains(" 3 "), "exit code visible: {human}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_executors_tasks_run_elsewhere_within_the_ttl() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let mut a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 4, &[]);
    let a_id = a.id().await;
    assert_eq!(a_id, "exec-a", "an executor's id is the name in its certificate");
    wait_executors(&c, 1).await;
    let r = c.client().submit_job(shell_job(2, "sleep 4", 3)).await.unwrap();
    let job = wait_for("both tasks running on A", Duration::from_secs(20), || async {
        let j = c.client().get_job(&r.job_id, false).await.ok()?;
        (running_on(&j).len() == 2).then_some(j)
    })
    .await;
    assert!(running_on(&job).iter().all(|(_, e)| *e == a_id));
    let b = Executor::start(&c.masters_arg(), c.dir.path(), "exec-b", 4, &[]);
    let b_id = b.id().await;
    wait_executors(&c, 2).await;

    a.kill();
    let killed = Instant::now();
    wait_for("both tasks running on B", Duration::from_secs(20), || async {
        let j = c.client().get_job(&r.job_id, false).await.ok()?;
        let on_b = running_on(&j).iter().filter(|(_, e)| *e == b_id).count();
        (on_b == 2).then_some(())
    })
    .await;
    let delay = killed.elapsed();
    eprintln!(
        "executor killed -> tasks running elsewhere: {} ms (TTL {TTL_MS} ms)",
        delay.as_millis()
    );
    assert!(delay <= Duration::from_millis(TTL_MS + 1000), "rescheduling took {delay:?}");
    let job = wait_job_state(&c, &r.job_id, "succeeded", Duration::from_secs(30)).await;
    for t in &job.tasks {
        assert_eq!(t.attempts.len(), 2);
        assert_eq!(t.attempts[0].state, "lost");
        assert_eq!(t.attempts[1].state, "succeeded");
    }
}

/// Bug D of the chaos suite: SIGKILL of the executor process alone. Its attempt's group leader
/// dies with it (PDEATHSIG); what the attempt forked lives on until the executor comes back,
/// and the executor kills it before registering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_executor_leaves_no_attempt_behind() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let mut a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 1, &[]);
    wait_executors(&c, 1).await;
    let pids = c.dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let script = format!(
        "sleep 1000 & echo $! > {d}/child-$TRIAD_ATTEMPT.tmp; mv {d}/child-$TRIAD_ATTEMPT.tmp {d}/child-$TRIAD_ATTEMPT; echo $$ > {d}/leader-$TRIAD_ATTEMPT.tmp; mv {d}/leader-$TRIAD_ATTEMPT.tmp {d}/leader-$TRIAD_ATTEMPT; wait",
        d = pids.display()
    );
    let r = c.client().submit_job(shell_job(1, &script, 5)).await.unwrap();
    let read_pid = |name: &str| {
        std::fs::read_to_string(pids.join(name)).ok().and_then(|s| s.trim().parse::<i32>().ok())
    };
    let (leader, child) = wait_for("the first attempt's pids", Duration::from_secs(20), || async {
        Some((read_pid("leader-1")?, read_pid("child-1")?))
    })
    .await;
    assert!(alive(leader) && alive(child));

    a.kill();
    wait_for(
        "the attempt's group leader to die with its executor",
        Duration::from_secs(10),
        || async { (!alive(leader)).then_some(()) },
    )
    .await;
    assert!(
        alive(child),
        "nothing but the restarted executor kills the forked child (else this test proves nothing)"
    );

    let _a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 1, &[]);
    wait_for(
        "the restarted executor to kill the leftover child",
        Duration::from_secs(20),
        || async { (!alive(child)).then_some(()) },
    )
    .await;
    // The work goes on: a later attempt runs on the restarted executor.
    wait_for("a second attempt running", Duration::from_secs(30), || async {
        let j = c.client().get_job(&r.job_id, false).await.ok()?;
        (j.tasks[0].attempts.len() >= 2 && j.tasks[0].state == "running").then_some(())
    })
    .await;
    c.client().cancel_job(&r.job_id).await.unwrap();
}

/// Issue 5's observability on an executor: `/metrics` moves as attempts run, `/status` names
/// the executor, and gRPC health is SERVING while it is registered and flips to NOT_SERVING
/// once it has fenced itself off from a dead quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_metrics_status_and_health_follow_its_state() {
    let mut c = cluster();
    c.wait_leader(ELECTION).await;
    let http = format!("127.0.0.1:{}", free_ports(1)[0]);
    let a = Executor::start_with(
        &c.masters_arg(),
        c.dir.path(),
        "exec-a",
        2,
        &[],
        &["--http-listen", &http],
    );
    let id = a.id().await;
    let status = wait_for(
        "/status to show a healthy registered executor",
        Duration::from_secs(20),
        || async {
            let s: serde_json::Value =
                serde_json::from_str(&http_get(&http, "/status").await?).ok()?;
            (s["registered"] == true && s["healthy"] == true).then_some(s)
        },
    )
    .await;
    assert_eq!(status["id"], id.as_str());
    assert!(status["epoch"].as_u64().unwrap() > 0);
    let worker = status["addr"].as_str().unwrap().to_string();
    wait_for("gRPC health SERVING", Duration::from_secs(10), || async {
        grpc_serving(&c.dialer, &worker, &ServerName::Executor(id.clone())).await.filter(|s| *s)
    })
    .await;

    let metric = |page: &str, series: &str| sample(page, series).unwrap_or(0.0);
    let before = http_get(&http, "/metrics").await.expect("/metrics");
    assert_eq!(metric(&before, "triad_executor_registrations_total"), 1.0);
    let r = c.client().submit_job(shell_job(3, "true", 1)).await.unwrap();
    wait_job_state(&c, &r.job_id, "succeeded", Duration::from_secs(30)).await;
    let ok = r#"triad_executor_attempts_finished_total{outcome="succeeded"}"#;
    let after =
        wait_for("/metrics to count the finished attempts", Duration::from_secs(10), || async {
            let page = http_get(&http, "/metrics").await?;
            (metric(&page, ok) >= metric(&before, ok) + 3.0).then_some(page)
        })
        .await;
    assert!(
        metric(&after, "triad_executor_attempts_started_total")
            >= metric(&before, "triad_executor_attempts_started_total") + 3.0
    );
    let hb_ok = r#"triad_executor_heartbeats_total{result="ok"}"#;
    wait_for("/metrics to count acknowledged heartbeats", Duration::from_secs(10), || async {
        (metric(&http_get(&http, "/metrics").await?, hb_ok) > metric(&before, hb_ok)).then_some(())
    })
    .await;
    assert!(
        metric(&after, r#"triad_executor_reports_total{result="accepted"}"#) >= 6.0,
        "a start and an end report per attempt"
    );

    // No quorum, no acknowledged heartbeats: the executor fences itself and says so.
    for id in 1..=3 {
        c.kill(id);
    }
    wait_for("gRPC health NOT_SERVING once fenced", Duration::from_secs(20), || async {
        grpc_serving(&c.dialer, &worker, &ServerName::Executor(id.clone())).await.filter(|s| !*s)
    })
    .await;
    let s: serde_json::Value =
        serde_json::from_str(&http_get(&http, "/status").await.unwrap()).unwrap();
    assert_eq!(s["fenced"], true);
    let page = http_get(&http, "/metrics").await.unwrap();
    assert_eq!(metric(&page, "triad_executor_fenced"), 1.0);
    assert!(metric(&page, r#"triad_executor_heartbeats_total{result="error"}"#) > 0.0);
}

/// Parses the shared attempt log: (task, token) -> (start, end) in nanoseconds.
fn attempt_intervals(path: &std::path::Path) -> BTreeMap<(u32, u64), (u128, Option<u128>)> {
    let mut m: BTreeMap<(u32, u64), (u128, Option<u128>)> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // A line cut short by the kill that ended its attempt (e.g. `date` SIGKILLed) is skipped.
        let parsed = (
            f.get(1).and_then(|s| s.parse().ok()),
            f.get(2).and_then(|s| s.parse().ok()),
            f.get(3).and_then(|s| s.parse().ok()),
        );
        let (Some(task), Some(token), Some(t)) = parsed else { continue };
        let (task, token, t): (u32, u64, u128) = (task, token, t);
        match f[0] {
            "start" => {
                m.insert((task, token), (t, None));
            }
            _ => m.entry((task, token)).or_insert((0, None)).1 = Some(t),
        }
    }
    m
}

/// A task body that logs its start and its end (or its kill, via the SIGTERM the executor sends
/// first) with the task index, fencing token and wall clock in ns to the shared file `log`.
fn logging_script(log: &std::path::Path, secs: u32) -> String {
    format!(
        "trap 'echo killed $TRIAD_TASK_INDEX $TRIAD_FENCING_TOKEN $(date +%s%N) >> {l}; exit 143' TERM; echo start $TRIAD_TASK_INDEX $TRIAD_FENCING_TOKEN $(date +%s%N) >> {l}; sleep {secs} & wait $!; echo end $TRIAD_TASK_INDEX $TRIAD_FENCING_TOKEN $(date +%s%N) >> {l}",
        l = log.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_while_a_job_runs_the_job_completes_without_overlapping_attempts() {
    let mut c = cluster();
    let leader = c.wait_leader(ELECTION).await;
    let _a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 3, &[]);
    let _b = Executor::start(&c.masters_arg(), c.dir.path(), "exec-b", 3, &[]);
    wait_executors(&c, 2).await;
    let log = c.dir.path().join("attempts.log");
    let r = c.client().submit_job(shell_job(6, &logging_script(&log, 2), 3)).await.unwrap();
    wait_for("tasks running", Duration::from_secs(20), || async {
        let j = c.client().get_job(&r.job_id, false).await.ok()?;
        (!running_on(&j).is_empty()).then_some(())
    })
    .await;
    c.kill(leader);
    let new_leader = c.wait_leader(ELECTION).await;
    assert_ne!(new_leader, leader);
    let job = wait_job_state(&c, &r.job_id, "succeeded", Duration::from_secs(60)).await;
    assert!(job.tasks.iter().all(|t| t.state == "succeeded"));

    let intervals = attempt_intervals(&log);
    for task in 0..6u32 {
        let mut mine: Vec<(u128, u128)> = intervals
            .iter()
            .filter(|((t, _), _)| *t == task)
            .map(|(_, (s, e))| (*s, e.unwrap_or(u128::MAX)))
            .collect();
        assert!(!mine.is_empty(), "task {task} never ran");
        mine.sort();
        for w in mine.windows(2) {
            assert!(w[0].1 <= w[1].0, "task {task} had two live attempts at once: {mine:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_executor_is_fenced_its_stale_attempt_killed_and_the_work_done_once_elsewhere() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 2, &[]);
    let a_id = a.id().await;
    wait_executors(&c, 1).await;
    let log = c.dir.path().join("attempts.log");
    let pids = c.dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let script =
        format!("echo $$ > {}/$TRIAD_FENCING_TOKEN; {}", pids.display(), logging_script(&log, 5));
    let r = c.client().submit_job(shell_job(1, &script, 3)).await.unwrap();
    let first = wait_for("the attempt running on A", Duration::from_secs(20), || async {
        let j = c.client().get_job(&r.job_id, false).await.ok()?;
        let a = j.tasks[0].attempts.last()?.clone();
        (j.tasks[0].state == "running"
            && a.executor == a_id
            && pids.join(a.token.to_string()).exists())
        .then_some(a)
    })
    .await;
    let stale_pid: i32 = wait_for("pid file", Duration::from_secs(5), || async {
        std::fs::read_to_string(pids.join(first.token.to_string())).ok()?.trim().parse().ok()
    })
    .await;
    let b = Executor::start(&c.masters_arg(), c.dir.path(), "exec-b", 2, &[]);
    let b_id = b.id().await;
    wait_executors(&c, 2).await;

    a.signal(Signal::SIGSTOP);
    // Past the TTL the leader declares A dead and reschedules the task on B.
    wait_for("the task running on B", Duration::from_secs(20), || async {
        let j = c.client().get_job(&r.job_id, false).await.ok()?;
        let cur = j.tasks[0].attempts.last()?;
        (cur.executor == b_id && cur.state == "running").then_some(())
    })
    .await;
    assert!(alive(stale_pid), "the paused executor's attempt is still there while it is paused");
    a.signal(Signal::SIGCONT);
    // On waking, A fences itself: the stale attempt dies well before its 5 s sleep would end.
    wait_for("the stale attempt killed", Duration::from_secs(4), || async {
        (!alive(stale_pid)).then_some(())
    })
    .await;

    let job = wait_job_state(&c, &r.job_id, "succeeded", Duration::from_secs(30)).await;
    let attempts = &job.tasks[0].attempts;
    assert_eq!(
        attempts[0].state, "lost",
        "the stale attempt's report was not accepted: {attempts:?}"
    );
    assert_eq!(attempts.iter().filter(|a| a.state == "succeeded").count(), 1);
    // Side effects: exactly one attempt finished, and it was not the fenced one.
    let intervals = attempt_intervals(&log);
    let finished: Vec<_> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("end "))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .collect();
    assert_eq!(finished.len(), 1, "{intervals:?}");
    assert_ne!(finished[0], first.token, "the fenced attempt completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_running_processes() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let _a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 4, &[]);
    wait_executors(&c, 1).await;
    let pids = c.dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let script = format!("echo $$ > {}/$TRIAD_TASK_INDEX; sleep 100", pids.display());
    let r = c.client().submit_job(shell_job(2, &script, 1)).await.unwrap();
    let live: Vec<i32> = wait_for("both tasks started", Duration::from_secs(20), || async {
        let p: Vec<i32> = (0..2)
            .filter_map(|i| {
                std::fs::read_to_string(pids.join(i.to_string())).ok()?.trim().parse().ok()
            })
            .collect();
        (p.len() == 2).then_some(p)
    })
    .await;
    assert!(live.iter().all(|p| alive(*p)));
    let (code, out, err) = c.cli(&["job", "cancel", &r.job_id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled"));
    wait_for("the cancelled attempts' processes gone", Duration::from_secs(10), || async {
        live.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    let j = c.client().get_job(&r.job_id, false).await.unwrap();
    assert_eq!(j.state, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triad_dev_runs_a_job_and_prints_its_output_then_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    // `triad dev` takes consecutive ports (masters at base.., executors at base+100..): a base
    // below the kernel's ephemeral range (32768..), so no outgoing connection holds one of them.
    // If another process listens there anyway, dev says so and exits; then try the next base.
    let mut base = 20000 + (std::process::id() % 12000) as u16;
    let (mut dev, rx, export) = loop {
        let mut dev = std::process::Command::new(BIN)
            .args(["dev", "--data-dir"])
            .arg(dir.path())
            .args(["--base-port", &base.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = dev.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // dev prints the export line only once the leader is elected and both executors registered.
        let deadline = Instant::now() + Duration::from_secs(60);
        let masters = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => match line.strip_prefix("export ") {
                    Some(vars) => break Some(vars.to_string()),
                    None => continue,
                },
                Err(_) => break None,
            }
        };
        if let Some(m) = masters {
            break (dev, rx, m);
        }
        let _ = dev.kill();
        let out = dev.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("is in use"), "triad dev did not get ready: {err}");
        eprintln!("{err}");
        base += 211;
    };
    drop(rx);
    assert!(dev.try_wait().unwrap().is_none(), "triad dev exited after printing the export line");
    // `export TRIAD_MASTERS=… TRIAD_CA=… TRIAD_TOKEN=$(cat …/admin.token)`: secure by default.
    let vars: BTreeMap<&str, &str> =
        export.split_whitespace().filter_map(|kv| kv.split_once('=')).collect();
    let masters = vars["TRIAD_MASTERS"].to_string();
    let ca = std::path::PathBuf::from(vars["TRIAD_CA"]);
    let token_file = export
        .split_once("TRIAD_TOKEN=$(cat ")
        .and_then(|(_, t)| t.trim_end().strip_suffix(')'))
        .unwrap_or_else(|| panic!("the token is not read from a file: {export}"));
    assert!(ca.is_file() && ca.starts_with(dir.path()), "{export}");
    assert!(!vars.contains_key("TRIAD_INSECURE"), "triad dev runs insecure by default: {export}");
    let token = std::fs::read_to_string(token_file).unwrap().trim().to_string();
    let env = [("TRIAD_CA", ca.display().to_string()), ("TRIAD_TOKEN", token.clone())];
    let dialer = Dialer::new(ClientCredentials::tls(&ca, None, Some(token)).unwrap());
    let c = Client::new(triad::client::parse_masters(&masters).unwrap(), &dialer).unwrap();
    let ids = wait_for("two executors", Duration::from_secs(20), || async {
        let r = c
            .call(|ch| async move {
                pb::executor_service_client::ExecutorServiceClient::new(ch)
                    .list_executors(pb::ListExecutorsRequest {
                        consistency: 0,
                        ..Default::default()
                    })
                    .await
            })
            .await
            .ok()?;
        let mut ids: Vec<String> = r.executors.into_iter().map(|e| e.id).collect();
        ids.sort();
        (ids.len() == 2).then_some(ids)
    })
    .await;
    // Executor ids are the names in their certificates.
    assert_eq!(ids, ["executor1", "executor2"]);
    let (code, out, err) =
        run_cli_env(&["job", "submit", "--wait", "--", "echo", "hello"], &masters, &env);
    assert_eq!(code, 0, "{err}");
    let id = out.trim();
    let (code, out, err) = run_cli_env(&["job", "logs", id], &masters, &env);
    assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dev.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_for("triad dev to exit", Duration::from_secs(20), || {
        let s = dev.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "triad dev exited with {status:?}");
}

use triad::client::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_executor_finishes_its_work_takes_no_more_and_leaves() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let mut a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 4, &[]);
    let a_id = a.id().await;
    wait_executors(&c, 1).await;
    let first = c.client().submit_job(shell_job(2, "sleep 2", 1)).await.unwrap();
    wait_for("the first job running on A", Duration::from_secs(20), || async {
        let j = c.client().get_job(&first.job_id, false).await.ok()?;
        (running_on(&j).len() == 2).then_some(())
    })
    .await;
    let b = Executor::start(&c.masters_arg(), c.dir.path(), "exec-b", 4, &[]);
    let b_id = b.id().await;
    wait_executors(&c, 2).await;

    let (code, _, err) = c.cli(&["executor", "drain", &a_id]);
    assert_eq!(code, 0, "{err}");
    let second = c.client().submit_job(shell_job(2, "true", 1)).await.unwrap();
    let j = wait_job_state(&c, &second.job_id, "succeeded", Duration::from_secs(20)).await;
    assert!(
        j.tasks.iter().all(|t| t.attempts[0].executor == b_id),
        "new work went to the draining executor"
    );
    // A finishes what it ran, then deregisters and exits by itself.
    let j = wait_job_state(&c, &first.job_id, "succeeded", Duration::from_secs(20)).await;
    assert!(j.tasks.iter().all(|t| t.attempts.len() == 1 && t.attempts[0].executor == a_id));
    let status = wait_for("executor A to exit", Duration::from_secs(20), || {
        let s = a.child.as_mut().unwrap().try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
    a.child = None;
    let (_, out, _) = c.cli(&["executor", "list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let state = list.as_array().unwrap().iter().find(|e| e["id"] == a_id.as_str()).unwrap()
        ["state"]
        .clone();
    assert_eq!(state, "left");
}

/// An executor heartbeats over one stream to the leader; when the leader is killed it opens a
/// stream on the new leader and stays alive in its registration (same epoch, never declared dead,
/// never fenced), without falling back to unary heartbeats for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_stream_moves_to_the_new_leader_when_the_leader_is_killed() {
    let mut c = cluster();
    let leader = c.wait_leader(ELECTION).await;
    let http = format!("127.0.0.1:{}", free_ports(1)[0]);
    let a = Executor::start_with(
        &c.masters_arg(),
        c.dir.path(),
        "exec-a",
        2,
        &[],
        &["--http-listen", &http],
    );
    let id = a.id().await;
    wait_executors(&c, 1).await;
    let metric = |page: &str, series: &str| sample(page, series).unwrap_or(0.0);
    let master_http: BTreeMap<u64, String> =
        c.masters.iter().map(|m| (m.id, m.http.clone().unwrap())).collect();
    let streams_on = |m: u64| {
        let addr = master_http[&m].clone();
        async move { http_get(&addr, "/metrics").await.map(|p| metric(&p, "triad_heartbeat_streams")) }
    };
    wait_for("the executor's heartbeat stream on the leader", Duration::from_secs(20), || async {
        (streams_on(leader).await? == 1.0).then_some(())
    })
    .await;
    for f in c.followers(leader) {
        assert_eq!(
            streams_on(f).await,
            Some(0.0),
            "master {f} (a follower) holds a heartbeat stream"
        );
    }
    let epoch = |c: &Cluster| {
        let client = c.client();
        let id = id.clone();
        async move {
            let r = client
                .call(|ch| async move {
                    pb::executor_service_client::ExecutorServiceClient::new(ch)
                        .list_executors(pb::ListExecutorsRequest {
                            consistency: 0,
                            ..Default::default()
                        })
                        .await
                })
                .await
                .ok()?;
            r.executors.into_iter().find(|e| e.id == id).map(|e| (e.state, e.epoch))
        }
    };
    let (state, epoch0) = epoch(&c).await.expect("the executor is listed");
    assert_eq!(state, "alive");

    c.kill(leader);
    let new_leader = c.wait_leader(ELECTION).await;
    wait_for(
        "the executor's heartbeat stream on the new leader",
        Duration::from_secs(20),
        || async { (streams_on(new_leader).await? == 1.0).then_some(()) },
    )
    .await;
    // Beats keep being acknowledged on the new stream, for longer than the TTL.
    let hb_ok = r#"triad_executor_heartbeats_total{result="ok"}"#;
    let page = http_get(&http, "/metrics").await.expect("/metrics");
    let (ok0, unary0) = (
        metric(&page, hb_ok),
        metric(&page, r#"triad_executor_heartbeat_streams_total{result="unary"}"#),
    );
    let page = wait_for(
        "acknowledged beats for a TTL after the failover",
        Duration::from_secs(20),
        || async {
            let page = http_get(&http, "/metrics").await?;
            (metric(&page, hb_ok) >= ok0 + (TTL_MS / 250 + 2) as f64).then_some(page)
        },
    )
    .await;
    assert_eq!(
        metric(&page, r#"triad_executor_heartbeat_streams_total{result="unary"}"#),
        unary0,
        "beats went unary with a leader to stream to"
    );
    assert_eq!(
        metric(&page, "triad_executor_registrations_total"),
        1.0,
        "the executor had to register again"
    );
    assert_eq!(metric(&page, "triad_executor_fenced"), 0.0);
    assert_eq!(
        epoch(&c).await,
        Some(("alive".to_string(), epoch0)),
        "the executor's registration did not survive the failover"
    );
    assert_eq!(streams_on(new_leader).await, Some(1.0));
}

/// Guarantee 4 against delayed requests (`executor::lease`): a StartAttempt that names no
/// heartbeat, an unknown one, or one sent longer ago than the fencing window is refused with
/// UNAVAILABLE (the leader retries with a fresher one), counted, and nothing runs. This is the
/// start a partition held in a socket buffer after the leader had placed the task elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_names_a_stale_heartbeat_is_refused_and_runs_nothing() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let http = format!("127.0.0.1:{}", free_ports(1)[0]);
    let a = Executor::start_with(
        &c.masters_arg(),
        c.dir.path(),
        "exec-a",
        2,
        &[],
        &["--http-listen", &http],
    );
    let id = a.id().await;
    let metric = |page: &str, series: &str| sample(page, series).unwrap_or(0.0);
    // Beat numbers start at a random base (a count of beats must not tell them), so "heartbeat 1"
    // is one this process never sent, or (base 0) its first, sent just after it registered: wait
    // until that is older than the fencing window (60 % of the 2 s TTL) by counting later
    // acknowledged beats (250 ms apart).
    let hb_ok = r#"triad_executor_heartbeats_total{result="ok"}"#;
    wait_for(
        "8 acknowledged heartbeats (beat 1 is then > 1.2 s old)",
        Duration::from_secs(20),
        || async { (metric(&http_get(&http, "/metrics").await?, hb_ok) >= 8.0).then_some(()) },
    )
    .await;
    let s: serde_json::Value =
        serde_json::from_str(&http_get(&http, "/status").await.unwrap()).unwrap();
    let (worker, epoch) = (s["addr"].as_str().unwrap().to_string(), s["epoch"].as_u64().unwrap());
    let marker = c.dir.path().join("stale-start-ran");
    // The starts come as from a master (only masters may start attempts): master 1's certificate.
    let master1 = c.creds.files(Role::Master, "master1");
    let as_master = Dialer::new(ClientCredentials::from_files(&master1).unwrap());
    let mut w = pb::worker_service_client::WorkerServiceClient::new(
        as_master.channel(&worker, &ServerName::Executor(id)).unwrap(),
    );
    for (token, lease_seq, why) in [
        (900_001u64, 0u64, "names no heartbeat"),
        (900_002, 1, "names heartbeat 1,"),
        (900_003, 1 << 40, "does not know"),
    ] {
        let req = pb::StartAttemptRequest {
            job_id: uuid::Uuid::new_v4().to_string(),
            task_index: 0,
            task_count: 1,
            attempt: 1,
            token,
            command: format!("touch {}", marker.display()),
            shell: true,
            epoch,
            lease_seq,
            ..Default::default()
        };
        let e = w.start_attempt(req).await.expect_err("a start without a live lease ran");
        assert_eq!(e.code(), tonic::Code::Unavailable, "lease {lease_seq}: {e:?}");
        assert!(
            e.message().contains(why),
            "lease {lease_seq}: {:?} does not say {why:?}",
            e.message()
        );
    }
    let page = http_get(&http, "/metrics").await.unwrap();
    assert_eq!(metric(&page, "triad_executor_stale_starts_total"), 3.0);
    assert_eq!(metric(&page, "triad_executor_attempts_started_total"), 0.0);
    assert!(!marker.exists(), "a refused start spawned its command");
    // The executor still takes work the leader sends with a live lease.
    let r = c.client().submit_job(shell_job(1, "true", 1)).await.unwrap();
    wait_job_state(&c, &r.job_id, "succeeded", Duration::from_secs(30)).await;
}

// ----- Executor output that is kept, capped and followable (issue 14) ------------------------

/// A `triad job logs … --follow` process whose stdout lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn start(c: &Cluster, args: &[&str]) -> Follower {
        use std::io::BufRead;
        let mut child = std::process::Command::new(BIN)
            .args(args)
            .env("TRIAD_MASTERS", c.masters_arg())
            .envs(cli_env(c.dir.path()).iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawning triad job logs --follow");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no line from job logs --follow ({what}): {e}"))
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    async fn exit_code(&mut self) -> i32 {
        let child = &mut self.child;
        let status = wait_for("job logs --follow to exit", Duration::from_secs(30), || {
            let s = child.try_wait().expect("try_wait");
            async move { s }
        })
        .await;
        status.code().unwrap_or(-1)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_logs_follow_prints_a_running_tasks_lines_as_they_appear_ends_when_it_ends_and_follows_a_retry(
) {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let _a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 2, &[]);
    wait_executors(&c, 1).await;
    let gate = c.dir.path().join("gate");
    // Attempt 1 prints a line, waits (bounded) for the gate, prints another and fails; attempt
    // 2 prints its own line and succeeds.
    let script = format!(
        r#"echo "attempt $TRIAD_ATTEMPT starts"
if [ "$TRIAD_ATTEMPT" = 1 ]; then
  i=0; while [ ! -e {gate} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  echo "attempt 1 saw the gate"; exit 3
fi
echo "attempt $TRIAD_ATTEMPT done""#,
        gate = gate.display()
    );
    let id = c.client().submit_job(shell_job(1, &script, 2)).await.unwrap().job_id;
    let mut f = Follower::start(&c, &["job", "logs", &id, "--follow"]);
    assert_eq!(f.next_line("the first line of a running task"), "attempt 1 starts");
    let job = c.client().get_job(&id, false).await.unwrap();
    assert_eq!(job.tasks[0].state, "running", "the line came while the task ran");
    assert!(f.running(), "a follow of a running task goes on");
    std::fs::write(&gate, b"open").unwrap();
    assert_eq!(f.next_line("the line after the gate"), "attempt 1 saw the gate");
    // The retry is a new attempt: the follow moves to it.
    assert_eq!(f.next_line("the retry's first line"), "attempt 2 starts");
    assert_eq!(f.next_line("the retry's last line"), "attempt 2 done");
    assert_eq!(f.exit_code().await, 0, "the follow ends when the task ends");
    let job = wait_job_state(&c, &id, "succeeded", Duration::from_secs(20)).await;
    assert_eq!(job.tasks[0].attempts.len(), 2);

    // --tail N: the last N lines, with and without --follow.
    let (code, out, err) = c.cli(&["job", "logs", &id, "--tail", "1"]);
    assert_eq!((code, out.as_str()), (0, "attempt 2 done\n"), "{err}");
    let (code, out, err) = c.cli(&["job", "logs", &id, "--attempt", "1", "--tail", "2"]);
    assert_eq!((code, out.as_str()), (0, "attempt 1 starts\nattempt 1 saw the gate\n"), "{err}");
    let mut f = Follower::start(&c, &["job", "logs", &id, "--follow", "--tail", "1"]);
    assert_eq!(f.next_line("a tail of a finished task"), "attempt 2 done");
    assert_eq!(f.exit_code().await, 0);
}

/// The files of one stream of one attempt in an executor's work dir, by name.
fn output_files(work_dir: &std::path::Path, job: &str, attempt: u32, stream: &str) -> Vec<String> {
    let dir = work_dir.join("attempts").join(job).join("0").join(attempt.to_string());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.retain(|n| n.starts_with(&format!("{stream}.")));
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_and_still_readable_after_sigterm_and_restart_of_its_executor() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let env = [
        ("TRIAD_EXECUTOR_OUTPUT_MAX_FILE_BYTES", "1000"),
        ("TRIAD_EXECUTOR_OUTPUT_MAX_FILES", "2"),
    ];
    let start =
        || Executor::start_opts(&c.masters_arg(), c.dir.path(), "exec-a", 2, &[], &[], None, &env);
    let mut a = start();
    wait_executors(&c, 1).await;
    // 5,000 bytes: lines "0000\n" … "0999\n"; only the newest 2 × 1,000 are kept.
    let script = r#"i=0; while [ $i -lt 1000 ]; do printf '%04d\n' $i; i=$((i+1)); done"#;
    let id = c.client().submit_job(shell_job(1, script, 1)).await.unwrap().job_id;
    wait_job_state(&c, &id, "succeeded", Duration::from_secs(30)).await;
    let files = output_files(&a.work_dir, &id, 1, "stdout");
    assert_eq!(files, vec!["stdout.3000", "stdout.4000"], "rotation keeps at most the cap");
    let kept: String = (600..1000).map(|i| format!("{i:04}\n")).collect();
    let (code, out, err) = c.cli(&["job", "logs", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, kept, "the newest bytes are kept");
    assert!(err.contains("3000 bytes of older output were rotated away"), "{err}");

    // SIGTERM: a graceful stop, which used to delete every attempt's output.
    a.signal(Signal::SIGTERM);
    let child = a.child.as_mut().unwrap();
    wait_for("the executor to exit on SIGTERM", Duration::from_secs(20), || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    a.child = None;
    assert_eq!(output_files(&a.work_dir, &id, 1, "stdout").len(), 2, "a stop keeps output");
    let _a = start();
    wait_executors(&c, 1).await;
    let (code, out, err) = c.cli(&["job", "logs", &id]);
    assert_eq!((code, out == kept), (0, true), "after the restart: {out:?} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_output_removes_a_jobs_files_and_only_masters_may_call_it() {
    use pb::worker_service_client::WorkerServiceClient;
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let a = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 2, &[]);
    let exec_id = a.id().await;
    wait_executors(&c, 1).await;
    let gone = c.client().submit_job(shell_job(1, "echo gone", 1)).await.unwrap().job_id;
    let kept = c.client().submit_job(shell_job(1, "echo kept", 1)).await.unwrap().job_id;
    for id in [&gone, &kept] {
        wait_job_state(&c, id, "succeeded", Duration::from_secs(30)).await;
    }
    let job_dir = |id: &str| a.work_dir.join("attempts").join(id);
    assert!(job_dir(&gone).is_dir() && job_dir(&kept).is_dir());
    let info = wait_for("the executor's address", Duration::from_secs(10), || async {
        let r = c
            .client()
            .call(|ch| async move {
                pb::executor_service_client::ExecutorServiceClient::new(ch)
                    .list_executors(pb::ListExecutorsRequest::default())
                    .await
            })
            .await
            .ok()?;
        r.executors.into_iter().find(|e| e.id == exec_id)
    })
    .await;
    let server = ServerName::Executor(exec_id.clone());
    let worker = |creds: ClientCredentials| {
        WorkerServiceClient::new(Dialer::new(creds).channel(&info.addr, &server).unwrap())
    };
    let req = || {
        let mut r = tonic::Request::new(pb::DeleteOutputRequest { job_ids: vec![gone.clone()] });
        r.set_timeout(Duration::from_secs(10));
        r
    };
    for role in [Role::Client, Role::Admin] {
        let err = worker(c.creds.client(role).unwrap()).delete_output(req()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{role:?}: {err:?}");
    }
    assert!(job_dir(&gone).is_dir(), "a refused call deletes nothing");
    let master =
        ClientCredentials::from_files(&c.creds.node(Role::Master, "master1").unwrap()).unwrap();
    let mut as_master = worker(master);
    let bad = tonic::Request::new(pb::DeleteOutputRequest { job_ids: vec!["../..".into()] });
    let err = as_master.delete_output(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "job ids are UUIDs: {err:?}");
    let r = as_master.delete_output(req()).await.unwrap().into_inner();
    assert_eq!(r.deleted, 1);
    assert!(!job_dir(&gone).exists(), "the deleted job's output is gone");
    assert!(job_dir(&kept).is_dir(), "other jobs keep theirs");
    let (code, out, err) = c.cli(&["job", "logs", &kept]);
    assert_eq!((code, out.as_str()), (0, "kept\n"), "{err}");
    let (code, _, err) = c.cli(&["job", "logs", &gone]);
    assert_ne!(code, 0);
    assert!(err.contains("no output"), "{err}");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
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
async fn a_full_work_dir_makes_the_executor_unhealthy_and_refuse_starts_instead_of_failing_them() {
    let c = cluster();
    let work = c.dir.path().join("small-disk");
    let _disk = match Tmpfs::mount(&work, "2m") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a 2 MiB tmpfs at {} ({e})", work.display());
            return;
        }
    };
    c.wait_leader(ELECTION).await;
    let http = format!("127.0.0.1:{}", free_ports(1)[0]);
    let env = [("TRIAD_EXECUTOR_OUTPUT_MIN_FREE_BYTES", "262144")];
    let a = Executor::start_opts(
        &c.masters_arg(),
        c.dir.path(),
        "exec-a",
        2,
        &[],
        &["--http-listen", &http],
        Some(&work),
        &env,
    );
    wait_executors(&c, 1).await;
    // 4 MiB of output into a 2 MiB work dir: the copy hits ENOSPC, the task itself goes on.
    let hog = c.client().submit_job(shell_job(1, "head -c 4194304 /dev/zero; echo", 1)).await;
    let hog = hog.unwrap().job_id;
    wait_job_state(&c, &hog, "succeeded", Duration::from_secs(30)).await;
    let status =
        wait_for("/status to say the work dir is full", Duration::from_secs(20), || async {
            let s: serde_json::Value =
                serde_json::from_str(&http_get(&http, "/status").await?).ok()?;
            (s["healthy"] == false && s["unhealthy"].is_string()).then_some(s)
        })
        .await;
    let reason = status["unhealthy"].as_str().unwrap();
    assert!(reason.contains(&format!("work dir {}", work.display())), "{reason}");
    assert!(
        reason.contains("no space left") || reason.contains("below min_free_bytes"),
        "{reason}"
    );
    assert!(a.log_tail().contains("refusing new attempts"), "{}", a.log_tail());

    // A job submitted now is not run (and failed with 127) here: it waits for room. A start
    // sent before the leader heard the executor's unhealthy beat is refused (the attempt is
    // lost, as for a draining executor), so the job may use a second attempt.
    let job = c.client().submit_job(shell_job(1, "echo fine", 3)).await.unwrap().job_id;
    let j = c.client().get_job(&job, false).await.unwrap();
    assert_ne!(j.state, "failed", "{j:?}");
    // Room again: the hog's output goes, the executor is healthy again and runs the job.
    std::fs::remove_dir_all(work.join("attempts").join(&hog)).unwrap();
    let j = wait_job_state(&c, &job, "succeeded", Duration::from_secs(30)).await;
    for at in &j.tasks[0].attempts {
        assert_ne!(at.exit_code, 127, "no attempt failed for lack of space: {j:?}");
        assert!(at.state == "succeeded" || at.state == "lost", "{j:?}");
    }
    let (code, out, err) = c.cli(&["job", "logs", &job]);
    assert_eq!((code, out.as_str()), (0, "fine\n"), "{err}");
    let s: serde_json::Value =
        serde_json::from_str(&http_get(&http, "/status").await.unwrap()).unwrap();
    assert_eq!(s["healthy"], true, "{s}");
}

// --- batch semantics (issue 16) ------------------------------------------------------------------

fn dep(id: &str) -> pb::Dependency {
    pb::Dependency { job_id: id.to_string(), any: false }
}

/// Lost is not failed: a 20-task job allowed a single attempt per task survives three executor
/// kills; the attempts lost with them are retried elsewhere, and none counts as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tasks_with_one_attempt_each_survive_three_executor_kills() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let mut execs: Vec<Executor> = (0..4)
        .map(|i| Executor::start(&c.masters_arg(), c.dir.path(), &format!("exec-{i}"), 4, &[]))
        .collect();
    wait_executors(&c, 4).await;
    let r = c.client().submit_job(shell_job(20, "sleep 3", 1)).await.unwrap();
    let mut killed = Vec::new();
    for round in 0..3 {
        // Kill the executor running most of the job's tasks (there is one running some).
        let victim = wait_for("tasks running", Duration::from_secs(30), || async {
            let j = c.client().get_job(&r.job_id, false).await.ok()?;
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            // An executor killed in an earlier round may still show its attempts as running
            // until the leader declares it dead: only live ones are candidates.
            for (_, e) in running_on(&j).into_iter().filter(|(_, e)| !killed.contains(e)) {
                *per.entry(e).or_default() += 1;
            }
            per.into_iter().max_by_key(|(_, n)| *n).map(|(e, _)| e)
        })
        .await;
        let at = execs.iter().position(|e| e.name == victim).expect("the victim is ours");
        let mut gone = execs.remove(at);
        gone.kill();
        killed.push(victim);
        let name = format!("exec-new-{round}");
        execs.push(Executor::start(&c.masters_arg(), c.dir.path(), &name, 4, &[]));
    }
    let job = wait_job_state(&c, &r.job_id, "succeeded", Duration::from_secs(90)).await;
    let lost: u32 = job.tasks.iter().map(|t| t.lost_attempts).sum();
    assert!(lost >= 3, "three kills lost at least three attempts, got {lost}");
    for t in &job.tasks {
        assert_eq!(t.failed_attempts, 0, "task {}: a lost attempt counted as failed", t.index);
        assert_eq!(t.attempts.last().map(|a| a.state.as_str()), Some("succeeded"));
        for a in &t.attempts[..t.attempts.len() - 1] {
            assert_eq!(a.state, "lost", "task {} attempt {}", t.index, a.number);
            assert!(killed.contains(&a.executor), "lost on {}, which was not killed", a.executor);
        }
    }
    assert_eq!(job.failed_tasks, 0);
    assert!(job.reason.is_empty(), "a plain success has no reason: {:?}", job.reason);
}

/// Dependencies: A -> B -> C runs strictly in order; in a second chain B fails, so C is
/// cancelled with reason dependency without ever running; a missing dependency is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_in_order_and_a_failed_link_cancels_what_follows() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let _e = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 4, &[]);
    wait_executors(&c, 1).await;
    let log = c.dir.path().join("chain.log");
    let step = |name: &str, after: Vec<pb::Dependency>, exit: i32| {
        let script = format!(
            "echo start {name} $(date +%s%N) >> {l}; sleep 0.5; echo end {name} $(date +%s%N) >> {l}; exit {exit}",
            l = log.display()
        );
        let mut req = shell_job(1, &script, 1);
        if let Some(s) = req.spec.as_mut() {
            s.after = after;
        }
        req
    };
    let client = c.client();
    let a = client.submit_job(step("a", vec![], 0)).await.unwrap().job_id;
    let b = client.submit_job(step("b", vec![dep(&a)], 0)).await.unwrap().job_id;
    let cc = client.submit_job(step("c", vec![dep(&b)], 0)).await.unwrap().job_id;
    let waiting = client.get_job(&cc, false).await.unwrap();
    assert!(waiting.state == "pending" && waiting.waiting, "C waits: {waiting:?}");
    assert_eq!(waiting.waiting_on, vec![b.clone()], "C waits on B only");
    wait_job_state(&c, &cc, "succeeded", Duration::from_secs(60)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let at = |what: &str| -> u128 {
        let line = text.lines().find(|l| l.starts_with(what)).unwrap_or_else(|| panic!("{what}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(at("end a") <= at("start b"), "B started before A ended:\n{text}");
    assert!(at("end b") <= at("start c"), "C started before B ended:\n{text}");

    let a2 = client.submit_job(step("a2", vec![], 0)).await.unwrap().job_id;
    let b2 = client.submit_job(step("b2", vec![dep(&a2)], 3)).await.unwrap().job_id;
    let c2 = client.submit_job(step("c2", vec![dep(&b2)], 0)).await.unwrap().job_id;
    let c2 = wait_job_state(&c, &c2, "cancelled", Duration::from_secs(60)).await;
    assert_eq!(c2.reason, "dependency");
    assert!(c2.tasks.iter().all(|t| t.attempts.is_empty()), "C2 never ran: {c2:?}");
    let b2 = client.get_job(&b2, false).await.unwrap();
    assert_eq!((b2.state.as_str(), b2.reason.as_str()), ("failed", "failed_task"));
    assert!(!std::fs::read_to_string(&log).unwrap().contains("start c2"));

    let missing = uuid::Uuid::new_v4().to_string();
    let err = client.submit_job(step("x", vec![dep(&missing)], 0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains(&missing), "{err}");
}
