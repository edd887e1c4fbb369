//! Cron across leader failover, with real master processes: a cron `@every 1s` keeps firing
//! once per second while its leader is SIGKILLed three times: every scheduled time in the window
//! fired exactly once (one job each), none twice, none missed (its starting deadline is far longer
//! than a failover).

mod common;

use std::time::Duration;

use common::*;
use triad::api::pb;

const ELECTION: Duration = Duration::from_secs(20);

fn create(name: &str, schedule: &str, deadline_ms: u64) -> pb::CreateCronRequest {
    pb::CreateCronRequest {
        name: name.into(),
        schedule: schedule.into(),
        starting_deadline_ms: deadline_ms,
        spec: submit_req("unused", "true", &[]).spec,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_cron_fires_once_per_second_through_three_leader_kills() {
    let mut c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;
    let client = c.client();
    let cron = client.create_cron(create("tick", "@every 1s", 30_000)).await.unwrap();
    assert_eq!(cron.next_ms.len(), 5, "{cron:?}");
    assert!(cron.next_ms.windows(2).all(|w| w[1] - w[0] == 1000), "{:?}", cron.next_ms);

    let fired = |n: u64| {
        let client = &client;
        async move { client.get_cron("tick", false).await.ok().filter(|c| c.fired >= n) }
    };
    let mut seen = wait_for("the first firings", Duration::from_secs(20), || fired(2)).await.fired;
    for round in 0..3 {
        let leader = c.wait_leader(ELECTION).await;
        c.kill(leader);
        c.wait_leader(ELECTION).await;
        seen = wait_for(&format!("firings after kill {round}"), Duration::from_secs(30), || {
            fired(seen + 2)
        })
        .await
        .fired;
        c.restart(leader);
    }

    let cron = client.get_cron("tick", false).await.unwrap();
    let times: Vec<u64> = cron.runs.iter().map(|r| r.scheduled_at_ms).collect();
    assert!(cron.runs.iter().all(|r| r.outcome == "fired"), "{:#?}", cron.runs);
    assert_eq!(cron.missed, 0, "{:#?}", cron.runs);
    assert_eq!(cron.fired as usize, times.len(), "runs kept: {times:?}");
    // Every second from the first firing to the last, each once.
    assert!(times.windows(2).all(|w| w[1] - w[0] == 1000), "gap or duplicate: {times:?}");
    assert_eq!(times[0], cron.created_at_ms + 1000, "{times:?}");
    // One job per firing, no more.
    let jobs: Vec<String> = client
        .list_all_jobs("", false)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.name == "tick")
        .map(|j| j.id)
        .collect();
    let mut ids: Vec<String> = cron.runs.iter().map(|r| r.job_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), times.len());
    assert!(jobs.len() as u64 >= cron.fired, "{} jobs for {} firings", jobs.len(), cron.fired);
    // Jobs fired after the last read may exist; none of the read runs' jobs twice.
    assert!(ids.iter().all(|id| jobs.contains(id)));
    let cron = client.get_cron("tick", false).await.unwrap();
    let named = client.list_all_jobs("", false).await.unwrap();
    assert!(named.iter().filter(|j| j.name == "tick").count() as u64 <= cron.fired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_cli_create_get_suspend_trigger_delete_and_roles() {
    let c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;
    let (code, out, err) = c.cli(&[
        "cron",
        "create",
        "nightly",
        "--schedule",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--overlap",
        "forbid",
        "--",
        "echo",
        "hi",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = c.cli(&["cron", "get", "nightly", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["overlap"], "forbid");
    assert_eq!(v["next_ms"].as_array().unwrap().len(), 5);
    let (code, _, err) =
        c.cli(&["cron", "create", "bad", "--schedule", "61 * * * *", "--", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("bad schedule"), "{err}");
    let (code, _, err) = c.cli(&["cron", "suspend", "nightly"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = c.cli(&["cron", "get", "nightly", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["suspended"], true);
    assert!(v["next_ms"].as_array().is_none_or(|a| a.is_empty()), "{v}");
    let (code, job, err) = c.cli(&["cron", "trigger", "nightly"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = c.cli(&["job", "get", job.trim(), "-o", "json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"nightly\""), "{out}");

    // Reads are for clients, changes for admins.
    let client = c.client_as(triad::security::Role::Client, c.addrs());
    assert!(client.get_cron("nightly", false).await.is_ok());
    let e = client.create_cron(create("x", "@hourly", 0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");

    let (code, _, err) = c.cli(&["cron", "delete", "nightly"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c.cli(&["cron", "get", "nightly"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
}

/// History limits (issue 17) delete: a cron `@every 1s` keeping 2 succeeded runs, whose jobs an
/// executor runs, has its older runs' jobs deleted by the leader's retention (GetJob: NOT_FOUND,
/// deleted), while the newest two succeeded ones stay and the cron's run list still names them
/// all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_history_limits_delete_older_runs_jobs() {
    let c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;
    let _e = Executor::start(&c.masters_arg(), c.dir.path(), "exec-h", 4, &[]);
    let client = c.client();
    let mut req = create("hist", "@every 1s", 30_000);
    req.spec = submit_req("unused", "true", &[]).spec;
    req.keep_succeeded = 2;
    req.keep_failed = 1;
    client.create_cron(req).await.unwrap();

    // Eventually: at least 5 runs, the first one's job deleted, exactly the newest two of the
    // succeeded runs' jobs kept (others may still be running).
    let (cron, kept) = wait_for("older runs' jobs deleted", Duration::from_secs(60), || {
        let client = &client;
        async move {
            let cron = client.get_cron("hist", false).await.ok().filter(|c| c.runs.len() >= 5)?;
            let mut succeeded = vec![];
            let mut deleted = vec![];
            for r in &cron.runs {
                match client.get_job(&r.job_id, false).await {
                    Ok(j) if j.state == "succeeded" => succeeded.push(r.job_id.clone()),
                    Ok(_) => {}
                    Err(e) if e.code() == tonic::Code::NotFound => deleted.push(r.job_id.clone()),
                    Err(_) => return None,
                }
            }
            let first = &cron.runs[0].job_id;
            (deleted.contains(first) && succeeded.len() == 2).then_some((cron, succeeded))
        }
    })
    .await;
    // The kept ones are the newest succeeded runs: every run after them is not succeeded (yet).
    let ids: Vec<&str> = cron.runs.iter().map(|r| r.job_id.as_str()).collect();
    let last_kept = ids.iter().rposition(|id| *id == kept[1]).unwrap();
    let first_kept = ids.iter().position(|id| *id == kept[0]).unwrap();
    assert!(first_kept < last_kept, "{ids:?} {kept:?}");
    let e = client.get_job(ids[0], false).await.unwrap_err();
    assert!(e.message().contains("deleted"), "{e}");
}
