//! `bench cron` and `bench events` (issue 17): what a watcher of the cluster sees, and when.
//!
//! - **cron lag:** a cron `@every 1s` (its jobs never placed) is created; a client follows the
//!   event stream and, for each firing, records how long after its scheduled time the firing
//!   reached it (wall clock now − scheduled time: the masters and the bench share the machine's
//!   clock). This is the whole path a user sees: the leader's tick, the `FireCron` commit, apply
//!   on the master streaming, and delivery. Run it alone (idle), beside `bench submit` (load), or
//!   kill the leader while it runs (`max` then shows the failover's firing).
//! - **event lag:** closed-loop submissions on SubmitJobs streams (like `bench submit`, paced with
//!   `--rate`), while one client follows the stream; for every job it records how long after the
//!   submission's acknowledgement its creation event arrived (0 when it arrived first, counted
//!   apart as `BEFORE ACK`). Jobs acknowledged but never seen within [`DRAIN`] are errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{closed_loop, leader_client, new_hist, trivial_job, Load, Report};
use crate::api::pb;
use crate::client::Client;

/// After the load ends, how long `bench events` waits for the last acknowledged jobs' events.
pub const DRAIN: Duration = Duration::from_secs(10);

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(crate::cli::status_line(&e))
}

/// `bench cron`: see the module doc.
pub async fn cron_lag(client: Client, duration: Duration) -> anyhow::Result<Report> {
    let name = format!("bench-cron-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let spec = trivial_job(String::new(), false).spec;
    let req = pb::CreateCronRequest {
        name: name.clone(),
        schedule: "@every 1s".into(),
        spec,
        ..Default::default()
    };
    // Follow first, so that the first firing is not missed.
    let mut follower = client.follow_events(None, "", false);
    follower.next().await.map_err(status).context("opening the event stream")?;
    client.create_cron(req).await.map_err(status).context("creating the bench cron")?;
    let mut hist = new_hist();
    let (mut skipped, mut errors) = (0u64, 0u64);
    let started = Instant::now();
    let until = started + duration;
    while Instant::now() < until {
        let next = match tokio::time::timeout_at(until.into(), follower.next()).await {
            Err(_) => break,
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                errors += 1;
                eprintln!("bench cron: {}; following again", crate::cli::status_line(&e));
                follower = client.follow_events(follower.position(), "", false);
                continue;
            }
        };
        let now = wall_ms();
        for e in next.events.iter().filter(|e| e.kind == "cron" && e.cron == name) {
            match e.cron_event.as_str() {
                "fired" => {
                    let lag_us = now.saturating_sub(e.scheduled_at_ms) * 1000;
                    let _ = hist.record(lag_us.max(1));
                }
                "skipped" => skipped += 1,
                _ => {}
            }
        }
    }
    let elapsed = started.elapsed();
    if let Err(e) = client.change_cron(&name, crate::client::cron::CronChange::Delete).await {
        eprintln!("bench cron: deleting {name}: {}", crate::cli::status_line(&e));
    }
    let mut extra = BTreeMap::new();
    extra.insert("SKIPPED OR MISSED".into(), skipped.to_string());
    let mut r = Report::from_hist("cron firing lag", &hist, errors, elapsed, extra);
    r.summary = format!(
        "cron firing lag (scheduled time -> firing seen on the event stream): {} firings in {:.0}s, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, {skipped} skipped or missed",
        r.ops, r.seconds, r.p50_ms, r.p99_ms, r.max_ms
    );
    Ok(r)
}

/// What the submitters and the follower share: per job id, when it was acknowledged or seen.
#[derive(Default)]
struct Seen {
    acked: HashMap<String, Instant>,
    early: HashMap<String, Instant>,
    before_ack: u64,
}

/// `bench events`: see the module doc.
pub async fn events_lag(client: Client, load: Load) -> anyhow::Result<Report> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let hist = Arc::new(Mutex::new(new_hist()));
    // The follower, on the client's first master (any master serves the stream).
    let mut follower_client = Client::new(client.masters().to_vec(), client.dialer())?;
    follower_client.retry_for = Duration::from_secs(30);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let follow = {
        let (seen, hist) = (seen.clone(), hist.clone());
        tokio::spawn(async move {
            let mut follower = follower_client.follow_events(None, "", false);
            let opened = follower.next().await.map(|_| ());
            let failed = opened.is_err();
            let _ = ready_tx.send(opened);
            if failed {
                return 1;
            }
            let mut errors = 0u64;
            loop {
                let m = tokio::select! {
                    m = follower.next() => m,
                    _ = stop_rx.changed() => break,
                };
                let m = match m {
                    Ok(m) => m,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                };
                let now = Instant::now();
                let mut s = seen.lock().expect("poisoned");
                let mut h = hist.lock().expect("poisoned");
                for e in m.events.iter().filter(|e| e.kind == "job" && e.from.is_empty()) {
                    match s.acked.remove(&e.job_id) {
                        Some(at) => {
                            let _ = h.record(now.duration_since(at).as_micros().max(1) as u64);
                        }
                        None => {
                            s.early.insert(e.job_id.clone(), now);
                        }
                    }
                }
            }
            errors
        })
    };
    ready_rx
        .await
        .context("the event follower ended")?
        .map_err(status)
        .context("opening the event stream")?;
    let first = leader_client(&client).await?;
    let mut clients = (1..load.connections.max(1))
        .map(|_| Client::new(first.masters().to_vec(), client.dialer()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    clients.insert(0, first);
    let mut pipelines = Vec::new();
    for c in &clients {
        pipelines.push(c.pipeline().await.map_err(status)?);
    }
    let pipelines = Arc::new(pipelines);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let submitted = {
        let seen = seen.clone();
        closed_loop("submit", load, move |w, i| {
            let (pipelines, seen) = (pipelines.clone(), seen.clone());
            let key = format!("{run}-{w}-{i}");
            async move {
                match pipelines[w % pipelines.len()].submit(trivial_job(key, false)).await {
                    Ok(r) => {
                        let now = Instant::now();
                        let mut s = seen.lock().expect("poisoned");
                        if s.early.remove(&r.job_id).is_some() {
                            s.before_ack += 1;
                        } else {
                            s.acked.insert(r.job_id, now);
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
        })
        .await
    };
    // Let the follower deliver what was acknowledged last.
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until && !seen.lock().expect("poisoned").acked.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let follow_errors = follow.await.unwrap_or(1);
    let s = seen.lock().expect("poisoned");
    let h = hist.lock().expect("poisoned");
    let mut extra = BTreeMap::new();
    extra.insert("SUBMIT RATE".into(), format!("{:.0}/s", submitted.rate_per_sec));
    extra.insert("BEFORE ACK".into(), s.before_ack.to_string());
    extra.insert("NEVER SEEN".into(), s.acked.len().to_string());
    let errors = s.acked.len() as u64 + follow_errors + submitted.errors;
    let mut r = Report::from_hist(
        "event delivery lag",
        &h,
        errors,
        Duration::from_secs_f64(submitted.seconds),
        extra,
    );
    r.summary = format!(
        "event delivery lag (submission acknowledged -> its creation event received) at {:.0} submissions/s: {} after the ack (p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms), {} before it, {} never seen",
        submitted.rate_per_sec,
        r.ops,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        s.before_ack,
        s.acked.len()
    );
    Ok(r)
}
