//! Retention (issue 14, done-list item 1) with real masters and executors as processes: finished
//! jobs past their TTL disappear from every master, a retry inside the idempotency window gets
//! the original id, a running job cannot be deleted, the masters agree byte for byte after
//! collection, and collecting under leader kills loses no job that was not due.
//!
//! A file of its own (not `cluster.rs`) so that it merges beside the other work on the masters.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use tonic::Code;
use triad::api::pb;
use triad::security::Role;

const ELECTION: Duration = Duration::from_secs(20);
/// Finished jobs live this long (the policy's TTL) in these tests.
const TTL: Duration = Duration::from_secs(2);

fn cluster() -> Cluster {
    Cluster::start(3, |cfg| {
        cfg.executors.ttl_ms = 2000;
        cfg.executors.heartbeat_ms = 250;
        cfg.retention.finished_job_ttl = TTL;
        cfg.retention.idempotency_window = Duration::from_secs(3600);
    })
}

fn job(key: &str, script: &str) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        name: "retention".into(),
        idempotency_key: key.into(),
        spec: Some(pb::JobSpec {
            command: script.into(),
            shell: true,
            task_count: 1,
            ..Default::default()
        }),
    }
}

async fn wait_state(c: &Cluster, id: &str, state: &str) -> pb::Job {
    let client = c.client();
    wait_for(&format!("job {id} to be {state}"), Duration::from_secs(30), || async {
        client.get_job(id, false).await.ok().filter(|j| j.state == state)
    })
    .await
}

/// Waits until every master's own replica (a stale read) says `id` was deleted.
async fn wait_deleted_everywhere(c: &Cluster, id: &str) {
    for m in 1..=3 {
        let client = c.client_for(m);
        let status = wait_for(
            &format!("job {id} deleted on master {m}"),
            Duration::from_secs(30),
            || async { client.get_job(id, true).await.err() },
        )
        .await;
        assert_eq!(status.code(), Code::NotFound, "master {m}: {status}");
        assert!(status.message().contains("was deleted"), "master {m}: {}", status.message());
    }
}

/// Where executor `e` keeps the output of job `id`'s attempts.
fn output_dir(e: &Executor, id: &str) -> std::path::PathBuf {
    e.work_dir.join("attempts").join(id)
}

/// Waits until executor `e` holds no output of job `id` (the leader's DeleteOutput).
async fn wait_output_gone(e: &Executor, id: &str) {
    let dir = output_dir(e, id);
    wait_for(&format!("output of {id} deleted on {}", e.name), Duration::from_secs(30), || async {
        (!dir.exists()).then_some(())
    })
    .await
}

/// Waits until the three masters' state digests are equal, and returns it.
async fn wait_same_digest(c: &Cluster) -> u64 {
    wait_for("the same state digest on every master", Duration::from_secs(30), || async {
        let d = [c.digest(1).await, c.digest(2).await, c.digest(3).await];
        (d[0] == d[1] && d[1] == d[2]).then_some(d[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_past_their_ttl_disappear_everywhere_and_their_keys_still_answer() {
    let c = cluster();
    c.wait_leader(ELECTION).await;
    let e = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 4, &[]);
    let client = c.client();

    // A job that finishes is collected by the leader after the TTL, on every master, and its
    // output on the executor that ran it goes too.
    let done = client.submit_job(job("done-1", "echo done")).await.expect("submit");
    wait_state(&c, &done.job_id, "succeeded").await;
    wait_deleted_everywhere(&c, &done.job_id).await;
    wait_output_gone(&e, &done.job_id).await;

    // A retry inside the idempotency window gets the original id and creates nothing.
    let again = client.submit_job(job("done-1", "true")).await.expect("retry");
    assert_eq!((again.job_id.as_str(), again.created), (done.job_id.as_str(), false));

    // A running job cannot be deleted, and is not collected however long it runs.
    let running = client.submit_job(job("runs", "sleep 60")).await.unwrap();
    wait_state(&c, &running.job_id, "running").await;
    let refused = client.delete_job(&running.job_id).await.expect_err("delete of a running job");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    // A job that finished after it started is collected: so collection has passed over it.
    let later = client.submit_job(job("later", "true")).await.unwrap();
    wait_deleted_everywhere(&c, &later.job_id).await;
    assert_eq!(client.get_job(&running.job_id, false).await.unwrap().state, "running");

    // Once cancelled it can be deleted by hand; deleting it again changes nothing.
    client.cancel_job(&running.job_id).await.unwrap();
    let deleted = client.delete_job(&running.job_id).await.unwrap();
    let twice = client.delete_job(&running.job_id).await.unwrap();
    assert!(deleted.deleted || !twice.deleted, "a deleted job was deleted twice");
    wait_deleted_everywhere(&c, &running.job_id).await;

    // A job with its own long TTL stays; `job gc` is an admin's, and deletes nothing not due.
    let mut keep = job("keep", "echo kept");
    keep.spec.as_mut().unwrap().ttl_after_finished_ms = Some(3_600_000);
    let keep = client.submit_job(keep).await.unwrap();
    wait_state(&c, &keep.job_id, "succeeded").await;
    let as_client = c.client_as(Role::Client, c.addrs());
    let denied = as_client.collect_garbage().await.expect_err("gc as a client");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");
    client.collect_garbage().await.expect("gc as admin");
    assert_eq!(client.get_job(&keep.job_id, false).await.unwrap().state, "succeeded");
    // Its output is kept while it is (so the waits for output to go above can fail)...
    assert!(output_dir(&e, &keep.job_id).is_dir(), "no output kept for {}", keep.job_id);
    // ...and goes with it when it is deleted by hand.
    assert!(client.delete_job(&keep.job_id).await.unwrap().deleted);
    wait_deleted_everywhere(&c, &keep.job_id).await;
    wait_output_gone(&e, &keep.job_id).await;

    // Every master holds the same state after collection, byte for byte.
    wait_same_digest(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_under_leader_kills_loses_no_job_that_was_not_due() {
    let mut c = cluster();
    c.wait_leader(ELECTION).await;
    let _e = Executor::start(&c.masters_arg(), c.dir.path(), "exec-a", 8, &[]);
    let client = c.client();

    // Jobs that must survive: pending forever (no executor has the label), running, and
    // finished with a TTL far beyond the test.
    let mut keep = BTreeSet::new();
    for i in 0..10 {
        let mut pending = job(&format!("pending-{i}"), "true");
        pending.spec.as_mut().unwrap().constraints.insert("never".into(), "there".into());
        keep.insert(client.submit_job(pending).await.unwrap().job_id);
        let mut long = job(&format!("long-{i}"), "true");
        long.spec.as_mut().unwrap().ttl_after_finished_ms = Some(3_600_000);
        keep.insert(client.submit_job(long).await.unwrap().job_id);
    }
    keep.insert(client.submit_job(job("running", "sleep 120")).await.unwrap().job_id);

    // Jobs that are due two seconds after they finish, while the leader is killed twice.
    let mut due = Vec::new();
    for round in 0..2 {
        for i in 0..20 {
            due.push(client.submit_job(job(&format!("due-{round}-{i}"), "true")).await.unwrap());
        }
        // Kill the leader once this round's jobs have started finishing (and being collected).
        let last = due.last().map(|r| r.job_id.clone()).unwrap_or_default();
        wait_for("the round's last job to finish", Duration::from_secs(30), || async {
            match client.get_job(&last, false).await {
                Ok(j) => (j.state == "succeeded").then_some(()),
                Err(s) => (s.code() == Code::NotFound).then_some(()),
            }
        })
        .await;
        let leader = c.wait_leader(ELECTION).await;
        c.kill(leader);
        c.wait_leader(ELECTION).await;
        c.restart(leader);
    }
    c.wait_leader(ELECTION).await;

    // Every due job is eventually gone from every master (their keys still answer)...
    for r in &due {
        wait_deleted_everywhere(&c, &r.job_id).await;
    }
    // ...and every job that was not due is still there, on every master.
    for m in 1..=3 {
        let client = c.client_for(m);
        for id in &keep {
            let j =
                wait_for(&format!("job {id} on master {m}"), Duration::from_secs(30), || async {
                    client.get_job(id, true).await.ok()
                })
                .await;
            assert!(["pending", "running", "succeeded"].contains(&j.state.as_str()), "{j:?}");
        }
    }
    wait_same_digest(&c).await;
}
