//! The replicated master core, tested with real `triad master` processes (issue "Replicated master
//! core", done-list items 1–6). Kills are SIGKILL, never polite shutdowns.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use triad::api::{pb, ClientCredentials, Dialer, ServerName};
use triad::security::Role;

const ELECTION: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_submitted_through_a_follower_is_readable_through_every_master() {
    let c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    let follower = c.followers(leader)[0];

    let r = c
        .client_for(follower)
        .submit_job(submit_req("via-follower", "true", &[]))
        .await
        .expect("submit via follower");
    assert!(r.created);

    for m in 1..=3 {
        let client = c.client_for(m);
        let job = client
            .get_job(&r.job_id, false)
            .await
            .unwrap_or_else(|e| panic!("linearizable read on master {m}: {e}"));
        assert_eq!(job.id, r.job_id);
        assert_eq!(job.state, "pending");
        assert_eq!(job.tasks.len(), 1);
        // The stale read is served by the replica itself once it has applied the entry.
        wait_for(&format!("master {m} to apply the job"), Duration::from_secs(10), || async {
            client.get_job(&r.job_id, true).await.ok()
        })
        .await;
    }
    // The same key through another master names the same job.
    let again =
        c.client_for(leader).submit_job(submit_req("via-follower", "true", &[])).await.unwrap();
    assert_eq!((again.job_id, again.created), (r.job_id, false));

    // A client given every master, the follower first: the forwarded answer names the leader and
    // the client goes there directly from then on.
    let first = c.masters[follower as usize - 1].addr.clone();
    let mut order = vec![first.clone()];
    order.extend(c.masters.iter().map(|m| m.addr.clone()).filter(|a| *a != first));
    let client = triad::client::Client::new(order.clone(), &c.dialer).unwrap();
    assert_eq!(client.current_master(), order[0]);
    client.submit_job(submit_req("hinted", "true", &[])).await.unwrap();
    assert_eq!(
        client.current_master(),
        c.masters[leader as usize - 1].addr,
        "the client did not follow the leader hint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_continuous_submission_loses_no_acknowledged_job() {
    let mut c = Cluster::start(3, |_| {});
    let old_leader = c.wait_leader(ELECTION).await;

    let client = Arc::new(c.client());
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, acked, next, stop) =
            (client.clone(), acked.clone(), next.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", next.fetch_add(1, Ordering::Relaxed));
                // The client retries with the same key across the failover.
                match client.submit_job(submit_req(&key, "true", &[])).await {
                    Ok(r) => {
                        acked.lock().unwrap().insert(key, r.job_id);
                    }
                    Err(e) => errors.push(format!("{key}: {e}")),
                }
            }
            errors
        }));
    }
    let count = || acked.lock().unwrap().len();
    wait_for("200 acknowledged submissions before the kill", Duration::from_secs(30), || async {
        (count() >= 200).then_some(())
    })
    .await;
    c.kill(old_leader);
    let killed_at = Instant::now();
    let before = count();
    let new_leader = c.wait_leader(ELECTION).await;
    assert_ne!(new_leader, old_leader);
    wait_for(
        "200 more acknowledged submissions after the kill",
        Duration::from_secs(30),
        || async { (count() >= before + 200).then_some(()) },
    )
    .await;
    eprintln!("failover: writes continued {} ms after the kill", killed_at.elapsed().as_millis());
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.unwrap());
    }
    assert!(errors.is_empty(), "submissions failed even with retries: {errors:?}");

    // Every acknowledged job is present exactly once, under the id it was acknowledged with.
    let jobs = c.client().list_all_jobs("", false).await.unwrap();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for j in &jobs {
        by_key.entry(j.idempotency_key.clone()).or_default().push(j.id.clone());
    }
    let acked = acked.lock().unwrap();
    for (key, id) in acked.iter() {
        assert_eq!(by_key.get(key), Some(&vec![id.clone()]), "acknowledged job for key {key}");
    }
    assert!(by_key.values().all(|ids| ids.len() == 1), "a key maps to several jobs");
    let ids: BTreeSet<&String> = jobs.iter().map(|j| &j.id).collect();
    assert_eq!(ids.len(), jobs.len(), "duplicate job ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_masters_killed_and_restarted_keep_every_acknowledged_job() {
    let mut c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;
    let client = c.client();
    let mut acked = BTreeMap::new();
    for i in 0..300 {
        let r = client.submit_job(submit_req(&format!("r{i}"), "true", &[])).await.unwrap();
        acked.insert(r.job_id, format!("r{i}"));
    }
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_leader(ELECTION).await;
    let jobs = c.client().list_all_jobs("", false).await.unwrap();
    let found: BTreeMap<String, String> =
        jobs.into_iter().map(|j| (j.id, j.idempotency_key)).collect();
    let missing: Vec<_> = acked.iter().filter(|(id, _)| !found.contains_key(*id)).collect();
    let extra: Vec<_> = found.iter().filter(|(id, _)| !acked.contains_key(*id)).collect();
    let statuses = futures_statuses(&c).await;
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}\nmasters {statuses:?}"
    );
}

async fn futures_statuses(c: &Cluster) -> Vec<Option<pb::MasterStatus>> {
    let mut v = Vec::new();
    for id in 1..=3 {
        v.push(c.status(id).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_master_catches_up_through_a_snapshot_after_the_log_was_purged() {
    let mut c = Cluster::start(3, |cfg| {
        // Group commit packs many submissions per entry: snapshot often enough to purge.
        cfg.raft.snapshot_every = 100;
        cfg.raft.keep_logs = 20;
    });
    let leader = c.wait_leader(ELECTION).await;
    let lagger = c.followers(leader)[0];
    c.kill(lagger);
    let lagger_last = 3; // it saw at most the initial membership and blank entries

    // Thousands of jobs, 16 writers in parallel.
    let client = Arc::new(c.client());
    let mut tasks = Vec::new();
    for w in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..160 {
                client.submit_job(submit_req(&format!("s{w}-{i}"), "true", &[])).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Snapshots and purges run in the background after the writes.
    let s = wait_for(
        "the leader to snapshot and purge its log past what the lagger has",
        Duration::from_secs(20),
        || async {
            c.status(leader).await.filter(|s| s.snapshot_index > 0 && s.purged_index > lagger_last)
        },
    )
    .await;
    assert_eq!(s.jobs, 2560);

    c.restart(lagger);
    let caught = c.wait_applied(lagger, s.applied_index, Duration::from_secs(30)).await;
    assert!(caught.snapshot_index > lagger_last, "lagger did not install a snapshot: {caught:?}");
    assert_eq!(caught.jobs, 2560);
    // Identical state: the lagger's own replica equals the leader's, job by job.
    let mine = c.client_for(lagger).list_all_jobs("", true).await.unwrap();
    let theirs = c.client_for(leader).list_all_jobs("", true).await.unwrap();
    assert_eq!(mine, theirs);
    assert_eq!(c.digest(lagger).await, c.digest(leader).await, "state digests differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_no_quorum_is_unavailable_within_the_bound() {
    let mut c = Cluster::start(3, |cfg| cfg.raft.leader_wait_ms = 2000);
    c.wait_leader(ELECTION).await;
    let client = c.client();

    let spec = |f: &dyn Fn(&mut pb::JobSpec)| {
        let mut r = submit_req("bad", "true", &[]);
        f(r.spec.as_mut().unwrap());
        r
    };
    let cases: Vec<(&str, pb::SubmitJobRequest)> = vec![
        ("empty command", spec(&|s| s.command.clear())),
        ("zero tasks", spec(&|s| s.task_count = 0)),
        ("absurd task count", spec(&|s| s.task_count = 10_000_000)),
        ("absurd argument size", spec(&|s| s.args = vec!["x".repeat(2 << 20)])),
        ("absurd attempts", spec(&|s| s.max_attempts = 1_000_000)),
        (
            "no spec",
            pb::SubmitJobRequest { name: "x".into(), idempotency_key: "k".into(), spec: None },
        ),
    ];
    for (what, req) in cases {
        let e = client.submit_job(req).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e}");
        assert!(!e.message().is_empty());
    }
    assert_eq!(
        client.get_job("not-a-uuid", false).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client.list_jobs("bogus-state", 0, "", false).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client.list_jobs("", 0, "nope", false).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client.list_jobs("", 5000, "", false).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client.get_job(&uuid::Uuid::new_v4().to_string(), false).await.unwrap_err().code(),
        Code::NotFound
    );

    // No quorum: two masters gone. The survivor answers UNAVAILABLE within its bound, not a hang.
    c.kill(1);
    c.kill(2);
    let mut lone = c.client_for(3);
    lone.retry_for = Duration::ZERO;
    for what in ["submit", "get"] {
        let started = Instant::now();
        let e = match what {
            "submit" => lone.submit_job(submit_req("nq", "true", &[])).await.unwrap_err(),
            _ => lone.get_job(&uuid::Uuid::new_v4().to_string(), false).await.unwrap_err(),
        };
        let took = started.elapsed();
        assert_eq!(e.code(), Code::Unavailable, "{what}: {e}");
        assert!(
            took < Duration::from_secs(5),
            "{what} took {took:?} (bound is 2 s wait + one election)"
        );
        eprintln!(
            "{what} without quorum: UNAVAILABLE after {} ms: {}",
            took.as_millis(),
            e.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submits_reads_lists_cancels_and_reports_cluster_status() {
    let c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;

    let (code, out, err) =
        c.cli(&["job", "submit", "--name", "hello", "--tasks", "2", "--", "echo", "hello"]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    uuid::Uuid::parse_str(&id).expect("submit prints a job id");

    let (code, out, err) = c.cli(&["job", "get", &id, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["name"], "hello");
    assert_eq!(job["tasks"].as_array().unwrap().len(), 2);

    let (code, out, _) = c.cli(&["job", "get", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("state:") && out.contains("TASK"), "human output: {out}");

    let (code, out, _) = c.cli(&["job", "list", "-o", "json", "--state", "pending"]);
    assert_eq!(code, 0);
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(jobs.as_array().unwrap().iter().any(|j| j["id"] == id.as_str()));

    let (code, out, _) = c.cli(&["job", "cancel", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("cancelled"), "{out}");

    let (code, out, err) = c.cli(&["cluster", "status", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["masters"].as_array().unwrap().len(), 3);
    assert_ne!(s["leader_id"], 0);
    let (code, out, _) = c.cli(&["cluster", "status"]);
    assert_eq!(code, 0);
    assert!(out.contains("leader: master"), "{out}");

    // Bad input: non-zero exit and exactly one line on stderr.
    let (code, _, err) = c.cli(&["job", "get", "nope"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("InvalidArgument"), "{err}");
    let (code, _, err) = run_cli(&["job", "list"], "");
    assert_ne!(code, 0);
    assert!(err.contains("TRIAD_MASTERS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_are_added_removed_and_a_wiped_master_replaced_while_writes_continue() {
    let mut c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;

    // Writers run throughout every membership change.
    let client = Arc::new(c.client());
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..2 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("m{w}-{i}");
                i += 1;
                let r = client
                    .submit_job(submit_req(&key, "true", &[]))
                    .await
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
                acked.lock().unwrap().insert(key, r.job_id);
            }
        }));
    }
    let count = || acked.lock().unwrap().len();
    let progress = |n: usize| {
        let target = count() + n;
        let count = &count;
        async move {
            wait_for(&format!("{target} acknowledged writes"), Duration::from_secs(30), || async {
                (count() >= target).then_some(())
            })
            .await
        }
    };
    progress(50).await;

    // A fourth master joins as a learner, catches up, becomes a voter.
    let addr4 = c.spawn_joiner(4);
    // Not a member yet: it does not pass its empty view off as the cluster's status; a client
    // that asks it first moves on to a member.
    let mut alone = triad::client::Client::new(vec![addr4.clone()], &c.dialer).unwrap();
    alone.retry_for = Duration::ZERO;
    let e = wait_for("the joiner to answer", Duration::from_secs(10), || async {
        alone.cluster_status().await.err().filter(|e| e.message().contains("not a member"))
    })
    .await;
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    let mut order = vec![addr4.clone()];
    order.extend(c.addrs().into_iter().filter(|a| *a != addr4));
    let s = triad::client::Client::new(order, &c.dialer)
        .unwrap()
        .cluster_status()
        .await
        .expect("status via the members");
    assert!(s.leader_id != 0 && s.masters.len() == 3, "{s:?}");
    let m = c.client().add_master(4, &addr4).await.expect("add master 4");
    assert_eq!(m.voters, vec![1, 2, 3, 4]);
    progress(50).await;

    // An old master leaves (whoever leads; the cluster re-elects if it was the leader).
    let m = c.client().remove_master(1).await.expect("remove master 1");
    assert_eq!(m.voters, vec![2, 3, 4]);
    c.kill(1);
    progress(50).await;

    // Unsafe or wrong requests are refused with a clear error.
    let e = c.client().remove_master(1).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = c.client().add_master(0, "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    // Master 3's disk is gone: the documented procedure removes it and adds a fresh master with a
    // new id (ids are never reused for a different disk).
    c.kill(3);
    c.wipe(3);
    c.client().remove_master(3).await.expect("remove wiped master 3");
    let addr5 = c.spawn_joiner(5);
    let m = c.client().add_master(5, &addr5).await.expect("add replacement master 5");
    assert_eq!(m.voters, vec![2, 4, 5]);
    progress(50).await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let leader = c.wait_leader(ELECTION).await;
    let s = c.status(leader).await.unwrap();
    for id in [2, 4, 5] {
        c.wait_applied(id, s.applied_index, Duration::from_secs(20)).await;
    }
    let jobs = c.client().list_all_jobs("", false).await.unwrap();
    let found: BTreeMap<String, String> =
        jobs.into_iter().map(|j| (j.idempotency_key, j.id)).collect();
    for (k, id) in acked.lock().unwrap().iter() {
        assert_eq!(found.get(k), Some(id), "acknowledged job {k} missing");
    }
    assert_eq!(c.digest(5).await, c.digest(leader).await, "the replacement master's state differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_follow_the_cluster_and_health_flips_on_a_node_cut_off() {
    let mut c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    let http = c.master(leader).http.clone().unwrap();

    let before = http_get(&http, "/metrics").await.expect("/metrics");
    assert_eq!(sample(&before, "triad_raft_is_leader"), Some(1.0));
    assert!(sample(&before, "triad_raft{field=\"term\"}").unwrap() >= 1.0);
    let pending0 = sample(&before, "triad_jobs{state=\"pending\"}").unwrap_or(0.0);
    let applied0 = sample(&before, "triad_raft{field=\"applied_index\"}").unwrap();
    let client = c.client();
    for i in 0..5 {
        client.submit_job(submit_req(&format!("m{i}"), "true", &[])).await.unwrap();
    }
    // openraft publishes its metrics (the applied index) after the apply that answered the
    // client, so the page may lag by a moment: wait for it, bounded.
    let after =
        wait_for("/metrics to show the five applied entries", Duration::from_secs(10), || async {
            let page = http_get(&http, "/metrics").await?;
            (sample(&page, "triad_raft{field=\"applied_index\"}")? >= applied0 + 5.0)
                .then_some(page)
        })
        .await;
    assert_eq!(sample(&after, "triad_jobs{state=\"pending\"}"), Some(pending0 + 5.0));
    assert_eq!(sample(&after, "triad_tasks{state=\"pending\"}"), Some(pending0 + 5.0));
    assert!(sample(&after, "triad_raft{field=\"applied_index\"}").unwrap() >= applied0 + 5.0);
    assert!(sample(&after, "triad_raft{field=\"committed_index\"}").unwrap() >= applied0 + 5.0);
    assert_eq!(sample(&after, "triad_submissions_total{result=\"created\"}"), Some(5.0));
    assert!(after.contains("triad_raft_replication_lag{follower="), "replication lag per follower");
    assert!(after.contains("triad_submit_seconds_bucket"), "submit latency histogram");

    // /status has the same facts as `triad cluster status`.
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&http, "/status").await.expect("/status")).unwrap();
    let (code, out, _) = c.cli(&["cluster", "status", "-o", "json"]);
    assert_eq!(code, 0);
    let cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["leader_id"], cli["leader_id"]);
    let view = |v: &serde_json::Value| -> Vec<(u64, String, String)> {
        v["masters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_u64().unwrap(), m["addr"].to_string(), m["role"].to_string()))
            .collect()
    };
    assert_eq!(view(&status), view(&cli));

    // gRPC health: SERVING everywhere; NOT_SERVING on a master cut off from its quorum.
    for m in 1..=3 {
        let addr = c.master(m).addr.clone();
        wait_for(&format!("master {m} SERVING"), Duration::from_secs(10), || async {
            grpc_serving(&c.dialer, &addr, &ServerName::Master).await.filter(|s| *s)
        })
        .await;
    }
    let survivor = leader; // the leader itself: it keeps believing it leads, the lease says otherwise
    for f in c.followers(leader) {
        c.kill(f);
    }
    let addr = c.master(survivor).addr.clone();
    wait_for("the cut-off master NOT_SERVING", Duration::from_secs(10), || async {
        grpc_serving(&c.dialer, &addr, &ServerName::Master).await.filter(|s| !*s)
    })
    .await;
}

/// What executor `name` presents: a certificate the cluster's CA made for it (its executor id is
/// `name`), and no token.
fn executor_dialer(c: &Cluster, name: &str) -> Dialer {
    let f = c.creds.node(Role::Executor, name).expect("executor certificate");
    Dialer::new(ClientCredentials::tls(&f.ca, Some((&f.cert, &f.key)), None).unwrap())
}

/// Opens a heartbeat stream on `addr` with `first` queued as its first beat, as the executor
/// `dialer` presents; returns the request side and the answers (the open itself is bounded).
async fn open_heartbeat_stream(
    dialer: &Dialer,
    addr: &str,
    first: pb::HeartbeatRequest,
) -> Result<
    (tokio::sync::mpsc::Sender<pb::HeartbeatRequest>, tonic::Streaming<pb::HeartbeatResponse>),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.try_send(first).unwrap();
    let mut client =
        pb::executor_service_client::ExecutorServiceClient::new(dialer.master(addr).unwrap());
    let open = client.heartbeat_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let r = tokio::time::timeout(Duration::from_secs(10), open)
        .await
        .expect("opening a heartbeat stream hung")?;
    Ok((tx, r.into_inner()))
}

/// The next answer on a heartbeat stream, bounded: Ok(None) when the stream ended cleanly.
async fn next_answer(
    rx: &mut tonic::Streaming<pb::HeartbeatResponse>,
) -> Result<Option<pb::HeartbeatResponse>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), rx.message())
        .await
        .expect("no answer to a heartbeat within 10 s")
}

fn leader_hint(s: &tonic::Status) -> Option<String> {
    s.metadata().get(triad::api::LEADER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The streaming heartbeat RPC: only the leader holds streams (a follower refuses, naming the
/// leader, and the client library moves there); the leader answers every beat in order by the
/// heartbeat rule; a master that stops being the leader ends the stream at the next beat with
/// UNAVAILABLE naming the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_streams_live_on_the_leader_only_and_end_when_it_stops_leading() {
    let c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    let leader_addr = c.master(leader).addr.clone();
    let follower = c.followers(leader)[0];
    // An executor the cluster has never seen, with a valid certificate of its own.
    let ghost = executor_dialer(&c, "ghost");
    let beat = || pb::HeartbeatRequest {
        executor_id: "ghost".into(),
        epoch: 7,
        attempts: vec![pb::RunningAttempt { job_id: "j".into(), task_index: 0, token: 42 }],
        seq: 1,
        unhealthy: String::new(),
    };

    // A follower refuses the stream and names the leader; a client pointed at the follower moves.
    let refused = match open_heartbeat_stream(&ghost, &c.master(follower).addr, beat()).await {
        // tonic may hand back the (empty) stream first and the refusal with its first message.
        Ok((_tx, mut rx)) => {
            next_answer(&mut rx).await.expect_err("a follower answered a heartbeat stream")
        }
        Err(s) => s,
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(leader_hint(&refused).as_deref(), Some(leader_addr.as_str()), "{refused:?}");
    let mut others = c.addrs();
    others.retain(|a| *a != c.master(follower).addr);
    let client = triad::client::Client::new(
        [vec![c.master(follower).addr.clone()], others].concat(),
        &ghost,
    )
    .unwrap();
    assert!(client.failed(0, &refused), "the refusal's hint was not followed");
    assert_eq!(client.current_master(), leader_addr);

    // The leader answers each beat, in order, by the heartbeat rule: an unknown executor must
    // register again and kill everything it runs.
    let (tx, mut rx) = open_heartbeat_stream(&ghost, &leader_addr, beat())
        .await
        .expect("the leader refused a heartbeat stream");
    for i in 0..3 {
        let r = next_answer(&mut rx).await.expect("a beat failed").expect("the stream ended");
        assert!(r.reregister && r.kill_tokens == vec![42], "beat {i}: {r:?}");
        if i < 2 {
            tx.send(beat()).await.unwrap();
        }
    }
    let page = http_get(c.master(leader).http.as_ref().unwrap(), "/metrics").await.unwrap();
    assert_eq!(sample(&page, "triad_heartbeat_streams"), Some(1.0));

    // Pause the leader until another master leads, resume it, and wait until it knows: the next
    // beat on its stream ends the stream, naming the new leader.
    let pid = nix::unistd::Pid::from_raw(c.master(leader).child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let others: Vec<u64> = c.followers(leader);
    let new_leader = wait_for("a new leader while the old one is paused", ELECTION, || async {
        for f in &others {
            let s = c.status(*f).await?;
            if s.leader_id != 0 && s.leader_id != leader {
                return Some(s.leader_id);
            }
        }
        None
    })
    .await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let seen = wait_for("the old leader to follow the new one", ELECTION, || async {
        c.status(leader)
            .await
            .filter(|s| s.role != "leader" && s.leader_id != leader && s.leader_id != 0)
            .map(|s| s.leader_id)
    })
    .await;
    assert!(others.contains(&new_leader) && others.contains(&seen));
    tx.send(beat()).await.unwrap();
    let ended =
        next_answer(&mut rx).await.expect_err("a master that no longer leads answered a beat");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert_eq!(leader_hint(&ended).as_deref(), Some(c.master(seen).addr.as_str()), "{ended:?}");
}

/// A leader that has lost its quorum stops acknowledging heartbeats within the voters' lease,
/// although it still believes it leads (openraft 0.9 does not step down by itself): otherwise
/// a deposed leader cut off with some executors would keep them from fencing themselves while
/// the new leader declares them dead and places their work elsewhere (`executor::lease`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_quorum_stops_acknowledging_heartbeats() {
    let mut c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    let addr = c.master(leader).addr.clone();
    let beat = |seq| pb::HeartbeatRequest {
        executor_id: "ghost".into(),
        epoch: 1,
        attempts: Vec::new(),
        seq,
        unhealthy: String::new(),
    };
    let mut hb = pb::executor_service_client::ExecutorServiceClient::new(
        executor_dialer(&c, "ghost").master(&addr).unwrap(),
    );
    // With its quorum, the leader judges the beat (an unknown executor: register again).
    let r = wait_for("the leader to judge a heartbeat", Duration::from_secs(10), || {
        let mut hb = hb.clone();
        async move { hb.heartbeat(beat(1)).await.ok().map(|r| r.into_inner()) }
    })
    .await;
    assert!(r.reregister, "{r:?}");
    for f in c.followers(leader) {
        c.kill(f);
    }
    let refused = wait_for(
        "the leader to refuse heartbeats without a quorum",
        Duration::from_secs(10),
        || {
            let mut hb = hb.clone();
            async move {
                let mut req = tonic::Request::new(beat(2));
                req.set_timeout(Duration::from_secs(2));
                hb.heartbeat(req).await.err().filter(|s| s.message().contains("quorum"))
            }
        },
    )
    .await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(
        c.status(leader).await.map(|s| s.role).as_deref(),
        Some("leader"),
        "the test needs a leader that still believes it leads"
    );
    let _ = hb
        .heartbeat(beat(3))
        .await
        .expect_err("a leader without a quorum acknowledged a heartbeat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_submissions_are_answered_in_order_and_survive_the_leader() {
    let mut c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    let follower = c.followers(leader)[0];
    let mut acked: Vec<(String, String)> = Vec::new(); // (job id, key)
                                                       // On the leader, and on a follower (which forwards each submission to the leader).
    for m in [leader, follower] {
        let pipe = c
            .client_for(m)
            .pipeline()
            .await
            .unwrap_or_else(|e| panic!("open SubmitJobs on master {m}: {e}"));
        // 300 submissions in flight at once on one stream; among them a bad one and a repeat.
        let key = |i: usize| format!("pipe-{m}-{i}");
        let reqs: Vec<pb::SubmitJobRequest> = (0..300)
            .map(|i| match i {
                50 => pb::SubmitJobRequest { spec: None, ..submit_req(&key(i), "true", &[]) },
                100 => submit_req(&key(0), "true", &[]),
                _ => submit_req(&key(i), "true", &[]),
            })
            .collect();
        let answers = futures::future::join_all(reqs.into_iter().map(|r| pipe.submit(r))).await;
        // Submissions on one stream are answered in order but proposed concurrently: of two with
        // one key, either may be the one that created the job; both name it.
        let (a0, a100) = (
            answers[0].as_ref().expect("submission 0"),
            answers[100].as_ref().expect("the repeated key"),
        );
        assert_eq!(a0.job_id, a100.job_id, "a repeated key names the same job");
        assert!(a0.created != a100.created, "exactly one of the two created it: {a0:?} {a100:?}");
        acked.push((a0.job_id.clone(), key(0)));
        let mut ids = BTreeSet::from([a0.job_id.clone()]);
        for (i, a) in answers.into_iter().enumerate() {
            match i {
                50 => assert_eq!(
                    a.expect_err("a submission without a spec").code(),
                    Code::InvalidArgument
                ),
                0 | 100 => {}
                _ => {
                    let a = a.unwrap_or_else(|e| panic!("submission {i} on master {m}: {e}"));
                    assert!(a.created, "submission {i} created no job");
                    assert!(
                        ids.insert(a.job_id.clone()),
                        "submission {i} answered with another's job id"
                    );
                    acked.push((a.job_id, key(i)));
                }
            }
        }
    }
    // Every answer belongs to its own request: the job it names carries that request's key.
    let client = c.client();
    for (id, key) in acked.iter().step_by(7) {
        assert_eq!(
            &client.get_job(id, false).await.expect("read an acknowledged job").idempotency_key,
            key
        );
    }

    // A stream to a master that dies fails its submissions (retryably), it does not hang them;
    // and every acknowledged job is still there on the new leader.
    let pipe = c.client_for(leader).pipeline().await.expect("open SubmitJobs");
    c.kill(leader);
    let e = pipe
        .submit(submit_req("after-kill", "true", &[]))
        .await
        .expect_err("submit on a dead master's stream");
    assert!(triad::client::retryable(&e), "not retryable: {e}");
    c.wait_leader(ELECTION).await;
    let jobs: BTreeMap<String, String> = c
        .client()
        .list_all_jobs("", false)
        .await
        .expect("list after failover")
        .into_iter()
        .map(|j| (j.id, j.idempotency_key))
        .collect();
    for (id, key) in &acked {
        assert_eq!(
            jobs.get(id),
            Some(key),
            "acknowledged job {id} ({key}) lost after the leader was killed"
        );
    }
}

/// Runs the CLI as [`run_cli_env`] does, but gives up on it (kills it and fails the test) after
/// `limit`; returns (exit code, stdout, stderr, how long it ran).
fn run_cli_bounded(
    args: &[&str],
    masters: &str,
    env: &[(&str, String)],
    limit: Duration,
) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let child = std::process::Command::new(BIN)
        .args(args)
        .env("TRIAD_MASTERS", masters)
        .env_remove("TRIAD_CA")
        .env_remove("TRIAD_TOKEN")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running triad");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for triad"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("`triad {}` hung: no exit within {limit:?}", args.join(" "));
        }
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// Secure by default: a cluster as the tests (and `triad dev`) configure it refuses a CLI with no
/// token, a client token asking for an admin operation, a CA that did not sign the masters'
/// certificates, and plaintext; each time with a non-zero exit, one line on stderr that says why,
/// and no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_by_default_refuses_wrong_credentials() {
    let c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;
    let masters = c.masters_arg();
    let ca = c.creds.tls.ca_cert().display().to_string();
    let limit = Duration::from_secs(40);
    let refused = |what: &str, args: &[&str], env: &[(&str, String)], expect: &str| {
        let (code, out, err, took) = run_cli_bounded(args, &masters, env, limit);
        eprintln!("{what}: exit {code} after {} ms: {}", took.as_millis(), err.trim());
        assert_ne!(code, 0, "{what}: the CLI succeeded: {out}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: not one line: {err}");
        assert!(err.contains(expect), "{what}: {err:?} does not say {expect:?}");
        took
    };

    // The admin's credentials work (else the refusals below prove nothing).
    let (code, _, err) = c.cli(&["job", "list"]);
    assert_eq!(code, 0, "{err}");

    // TLS to the right CA, but no token: UNAUTHENTICATED, at once (not retried).
    let took =
        refused("no token", &["job", "list"], &[("TRIAD_CA", ca.clone())], "Unauthenticated");
    assert!(took < Duration::from_secs(10), "an unauthenticated call was retried for {took:?}");
    // A token the cluster does not know is no better.
    refused(
        "unknown token",
        &["job", "list"],
        &[("TRIAD_CA", ca.clone()), ("TRIAD_TOKEN", "triad_not-a-token".into())],
        "Unauthenticated",
    );

    // The client token may submit and read, but not change the membership.
    let client = [
        ("TRIAD_CA", ca.clone()),
        ("TRIAD_TOKEN", c.creds.token(Role::Client).expect("client token")),
    ];
    let (code, _, err) = run_cli_env(&["job", "list"], &masters, &client);
    assert_eq!(code, 0, "the client token may list jobs: {err}");
    refused(
        "client token",
        &["cluster", "add-master", "9", "127.0.0.1:1"],
        &client,
        "PermissionDenied",
    );

    // A CA from another `triad tls ca create`: the masters' certificates do not verify.
    let other = c.dir.path().join("other-ca");
    let (code, out, err) = run_cli(&["tls", "ca", "create", "--dir", other.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ca.pem"), "{out}");
    refused(
        "another CA",
        &["job", "list"],
        &[
            ("TRIAD_CA", other.join("ca.pem").display().to_string()),
            ("TRIAD_TOKEN", c.creds.token(Role::Admin).unwrap()),
        ],
        "certificate",
    );

    // Plaintext against TLS: a clean failure, no hang.
    refused("--insecure", &["job", "list", "--insecure"], &[], "error:");
}

/// Submits `key` as a generic client does (one unary `SubmitJob` to one master, no leader hint
/// followed), again under the same key while it fails retryably, for at most `within`. Returns
/// the job id and how many retryable failures it took; a failure that is not retryable panics.
async fn submit_until_acked(
    chan: &triad::api::Channel,
    key: &str,
    within: Duration,
) -> Result<(String, usize), String> {
    let deadline = Instant::now() + within;
    let mut failures = 0;
    loop {
        let mut req = tonic::Request::new(submit_req(key, "true", &[]));
        req.set_timeout(Duration::from_secs(5));
        let mut jobs = pb::job_service_client::JobServiceClient::new(chan.clone());
        match jobs.submit_job(req).await {
            Ok(r) => return Ok((r.into_inner().job_id, failures)),
            Err(s) if triad::client::retryable(&s) && Instant::now() < deadline => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => return Err(format!("{key}: {:?} {}", s.code(), s.message())),
        }
    }
}

/// Every key of `acked` names exactly one job, the one it was acknowledged with.
async fn each_job_exactly_once(c: &Cluster, acked: &BTreeMap<String, String>) {
    let jobs = c.client().list_all_jobs("", false).await.unwrap();
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for j in &jobs {
        by_key.entry(&j.idempotency_key).or_default().push(&j.id);
    }
    for (key, id) in acked {
        assert_eq!(by_key.get(key.as_str()), Some(&vec![id.as_str()]), "the job of key {key}");
    }
    assert!(by_key.values().all(|ids| ids.len() == 1), "a key maps to several jobs");
}

/// Issue 19: plain unary submissions to a follower ride its one `ForwardSubmits` stream to the
/// leader. When the leader is killed, the stream breaks and the follower re-opens one to the new
/// leader; callers that saw a retryable failure re-send under the same key, and afterwards every
/// job exists exactly once. When the follower itself is killed, its callers fail retryably (none
/// hangs, none gets a final error), and re-sent through another master, still exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_submissions_survive_a_leader_kill_and_a_killed_follower_fails_retryably() {
    let mut c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    let follower = c.followers(leader)[0];
    let chan = c.dialer.master(&c.master(follower).addr).unwrap();
    let follower_http = c.master(follower).http.clone().unwrap();

    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let retried = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (chan, acked, retried, next, stop) =
            (chan.clone(), acked.clone(), retried.clone(), next.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let key = format!("fwd{}", next.fetch_add(1, Ordering::Relaxed));
                match submit_until_acked(&chan, &key, Duration::from_secs(30)).await {
                    Ok((id, failures)) => {
                        retried.fetch_add(failures, Ordering::Relaxed);
                        acked.lock().unwrap().insert(key, id);
                    }
                    Err(e) => errors.push(e),
                }
            }
            errors
        }));
    }
    let count = || acked.lock().unwrap().len();
    wait_for("300 forwarded submissions before the kill", Duration::from_secs(30), || async {
        (count() >= 300).then_some(())
    })
    .await;
    c.kill(leader);
    let before = count();
    let new_leader = c.wait_leader(ELECTION).await;
    assert_ne!(new_leader, leader);
    wait_for("300 more forwarded submissions after the kill", Duration::from_secs(30), || async {
        (count() >= before + 300).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.unwrap());
    }
    assert!(errors.is_empty(), "forwarded submissions failed for good: {errors:?}");
    eprintln!(
        "{} forwarded submissions acknowledged, {} retryable failures re-sent under their keys",
        count(),
        retried.load(Ordering::Relaxed)
    );
    // They rode a stream: a few opened (one per leader, and one more after a break), not one
    // per submission. (Every one before the kill was forwarded; after it, the follower may be
    // the new leader.)
    let page = http_get(&follower_http, "/metrics").await.expect("the follower's /metrics");
    let forwarded = sample(&page, "triad_forwarded_submissions_total").unwrap_or(0.0);
    let opened = sample(&page, "triad_forward_streams_opened_total").unwrap_or(0.0);
    assert!(forwarded >= before as f64, "only {forwarded} submissions were forwarded");
    assert!((1.0..=4.0).contains(&opened), "{opened} forwarding streams were opened");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    each_job_exactly_once(&c, &acked).await;

    // The old leader comes back (so that a quorum outlives the next kill), then the follower
    // of the new leader is killed under load: each call in flight either was answered or fails
    // retryably, within its deadline.
    c.restart(leader);
    let follower = c.followers(new_leader).into_iter().find(|m| *m != leader).unwrap();
    let chan = c.dialer.master(&c.master(follower).addr).unwrap();
    let mut calls = Vec::new();
    for i in 0..200 {
        let chan = chan.clone();
        calls.push(tokio::spawn(async move {
            let key = format!("doomed{i}");
            let mut req = tonic::Request::new(submit_req(&key, "true", &[]));
            req.set_timeout(Duration::from_secs(5));
            let r = pb::job_service_client::JobServiceClient::new(chan).submit_job(req).await;
            (key, r.map(|r| r.into_inner().job_id))
        }));
        if i == 100 {
            c.kill(follower);
        }
    }
    let mut acked = BTreeMap::new();
    let mut failed = Vec::new();
    for call in calls {
        let (key, r) = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("a caller of the killed follower hung")
            .unwrap();
        match r {
            Ok(id) => {
                acked.insert(key, id);
            }
            Err(s) => {
                assert!(triad::client::retryable(&s), "{key}: not retryable: {s:?}");
                failed.push(key);
            }
        }
    }
    assert!(!failed.is_empty(), "no call failed although the follower was killed");
    // Re-sent under the same keys through a live master: created once, or found.
    let chan = c.dialer.master(&c.master(leader).addr).unwrap();
    for key in failed.iter().chain(acked.clone().keys()) {
        let (id, _) = submit_until_acked(&chan, key, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("re-sending through master {leader}: {e}"));
        if let Some(was) = acked.insert(key.clone(), id.clone()) {
            assert_eq!(was, id, "{key} was acknowledged as another job");
        }
    }
    each_job_exactly_once(&c, &acked).await;
}
