//! The event stream (`WatchEvents`, `triad events`) with real master processes: a client
//! connected to a follower that is SIGKILLed resumes on another master and sees every event once,
//! exactly what a reader of the leader saw.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use triad::api::pb;

const ELECTION: Duration = Duration::from_secs(20);

/// `(index, kind, job, task, from, to)` of one event: what two readers must agree on.
type Key = (u64, String, String, u32, String, String);

fn key(index: u64, e: &pb::Event) -> Key {
    (index, e.kind.clone(), e.job_id.clone(), e.task_index, e.from.clone(), e.to.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_connected_events_client_resumed_after_its_master_is_killed_sees_every_event_once(
) {
    let mut c = Cluster::start(3, |_| {});
    let leader = c.wait_leader(ELECTION).await;
    let follower = c.followers(leader)[0];
    let client = c.client();

    // 20 jobs now, 20 after the kill, 5 of them cancelled: 40 created, 5 job and 5 task
    // cancellations (no executor runs anything, so nothing else happens to them).
    let expected = 50u64;
    let first = c.master(follower).addr.clone();
    let mut order = vec![first.clone()];
    order.extend(c.addrs().into_iter().filter(|a| *a != first));
    let limit = expected.to_string();
    let mut env = cli_env(c.dir.path());
    env.push(("TRIAD_MASTERS", order.join(",")));
    let mut events = Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(["events", "--from", "0", "--limit", &limit, "-o", "json"])
        .env_remove("TRIAD_INSECURE")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting triad events");
    let stdout = events.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
    });

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(client.submit_job(submit_req(&format!("before-{i}"), "true", &[])).await.unwrap());
    }
    // Let the follower apply (and the client receive) some of it, then kill the follower.
    let last = c.status(leader).await.unwrap().applied_index;
    c.wait_applied(follower, last, Duration::from_secs(10)).await;
    c.kill(follower);
    for i in 0..20 {
        ids.push(client.submit_job(submit_req(&format!("after-{i}"), "true", &[])).await.unwrap());
    }
    for r in &ids[15..20] {
        client.cancel_job(&r.job_id).await.unwrap();
    }

    // The reference: a reader of the current leader from the beginning.
    let reference = {
        let leader = c.wait_leader(ELECTION).await;
        let reader = c.client_for(leader);
        let mut f = reader.follow_events(Some(0), "", false);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (seen.len() as u64) < expected {
            assert!(Instant::now() < deadline, "the reference reader saw only {seen:?}");
            let m = tokio::time::timeout(Duration::from_secs(10), f.next()).await.unwrap().unwrap();
            seen.extend(m.events.iter().map(|e| key(m.index, e)));
        }
        seen
    };
    assert_eq!(reference.len() as u64, expected, "{reference:#?}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = events.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = events.kill();
            panic!("triad events did not print {expected} events within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut events.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "triad events failed: {err}");
    let got: Vec<Key> = lines
        .join()
        .unwrap()
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            (n("index"), s("kind"), s("job_id"), n("task_index") as u32, s("from"), s("to"))
        })
        .collect();
    assert_eq!(got, reference, "the resumed reader's events differ from the leader's");
    let indexes: Vec<u64> = got.iter().map(|k| k.0).collect();
    assert!(indexes.windows(2).all(|w| w[0] <= w[1]), "out of index order: {indexes:?}");
    for r in &ids {
        let created = got.iter().filter(|k| k.1 == "job" && k.2 == r.job_id && k.4.is_empty());
        assert_eq!(created.count(), 1, "job {} created events", r.job_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_from_the_index_a_job_was_read_at_misses_nothing_and_an_index_that_is_gone_is_out_of_range(
) {
    let c = Cluster::start(3, |cfg| cfg.raft.snapshot_every = 50);
    c.wait_leader(ELECTION).await;
    let client = c.client();
    let r = client.submit_job(submit_req("watched", "true", &[])).await.unwrap();
    let (job, at) = client.get_job_at(&r.job_id, false).await.unwrap();
    assert_eq!(job.state, "pending");
    assert!(at > 0);
    let mut f = client.follow_events(Some(at), &r.job_id, false);
    client.cancel_job(&r.job_id).await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &pb::Event| e.kind == "job" && e.to == "cancelled") {
        let m = tokio::time::timeout(Duration::from_secs(10), f.next()).await.unwrap().unwrap();
        assert!(m.index > at, "an entry at or before the read index {at} came again");
        seen.extend(m.events);
    }
    assert!(seen.iter().all(|e| e.job_id == r.job_id), "{seen:?}");
    assert!(seen.iter().any(|e| e.kind == "task" && e.to == "cancelled"), "{seen:?}");

    // Past a snapshot, a restarted master holds nothing before it: the stream says so.
    for i in 0..80 {
        client.submit_job(submit_req(&format!("filler-{i}"), "true", &[])).await.unwrap();
    }
    let mut c = c;
    let leader = c.wait_leader(ELECTION).await;
    let victim = c.followers(leader)[0];
    let last = c.status(leader).await.unwrap().applied_index;
    c.wait_applied(victim, last, Duration::from_secs(10)).await;
    c.kill(victim);
    c.restart(victim);
    c.wait_applied(victim, last, ELECTION).await;
    let reader = c.client_for(victim);
    let mut f = reader.follow_events(Some(0), "", false);
    let err = match tokio::time::timeout(Duration::from_secs(10), f.next()).await.unwrap() {
        Err(s) => s,
        Ok(m) => panic!("events from index 0 after a snapshot: {m:?}"),
    };
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    assert!(err.message().contains("re-read the state"), "{err}");
}
