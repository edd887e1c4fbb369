//! The chaos run's cron and event follower (issue 17), beside the client workload:
//!
//! - **cron:** when the cluster is up the runner creates [`CRON`] (`@every 1s`, overlap allow,
//!   a starting deadline of [`CRON_DEADLINE_MS`]) whose jobs run `/bin/true`; after healing it
//!   suspends it, reads it linearizably with every job named after it, and writes `cron.json`
//!   for the `cron_once` checker. Its jobs are not the clients' (no idempotency key): the final
//!   read leaves them out.
//! - **event follower:** one client follows `WatchEvents` from the first entry through every
//!   fault, resuming on another master from the last index it received (the library's
//!   [`EventFollower`](triad::client::EventFollower)), and writes each message to `events.jsonl`
//!   for the `events_complete` checker. After the final read it keeps going until it has
//!   received every entry the cluster had applied by then.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use triad::api::{pb, Dialer};
use triad::client::cron::CronChange;
use triad::client::events::is_too_old;
use triad::client::Client;
use triad_jepsen::history::{monotonic_ns, CronRecord, CronRunView, EventLine, EventView};

/// The chaos cron's name (and its jobs' name).
pub const CRON: &str = "chaos-cron";
/// Its schedule: `@every 1s`.
pub const CRON_PERIOD_MS: u64 = 1000;
/// A time more than this late when it is handled is recorded missed.
pub const CRON_DEADLINE_MS: u64 = 10_000;

fn client(masters: &[String], dialer: &Dialer) -> anyhow::Result<Client> {
    let mut c = Client::new(masters.to_vec(), dialer)?;
    c.call_timeout = Duration::from_secs(3);
    c.retry_for = Duration::from_secs(15);
    Ok(c)
}

/// Creates the chaos cron (the cluster is up and healthy).
pub async fn create_cron(masters: &[String], dialer: &Dialer) -> anyhow::Result<()> {
    let c = client(masters, dialer)?;
    let req = pb::CreateCronRequest {
        name: CRON.into(),
        schedule: format!("@every {}ms", CRON_PERIOD_MS),
        overlap: "allow".into(),
        starting_deadline_ms: CRON_DEADLINE_MS,
        spec: Some(pb::JobSpec {
            command: "/bin/true".into(),
            task_count: 1,
            resources: Some(pb::Resources { slots: 1, cpu_millis: 0, memory_mib: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.create_cron(req).await.context("creating the chaos cron")?;
    Ok(())
}

/// After healing: suspends the cron, reads it and its jobs, writes `cron.json`.
pub async fn finish_cron(dir: &Path, masters: &[String], dialer: &Dialer) -> anyhow::Result<()> {
    let c = client(masters, dialer)?;
    let suspend_invoked_ms = wall_ms();
    c.change_cron(CRON, CronChange::Suspend).await.context("suspending the chaos cron")?;
    let cron = c.get_cron(CRON, false).await.context("reading the chaos cron")?;
    let jobs = c
        .list_all_jobs("", false)
        .await
        .context("listing the chaos cron's jobs")?
        .into_iter()
        .filter(|j| j.name == CRON)
        .map(|j| (j.id, j.state))
        .collect();
    let rec = CronRecord {
        name: cron.name,
        schedule: cron.schedule,
        period_ms: CRON_PERIOD_MS,
        tz: cron.tz,
        created_at_ms: cron.created_at_ms,
        starting_deadline_ms: cron.starting_deadline_ms,
        handled_upto_ms: cron.handled_upto_ms,
        suspend_invoked_ms,
        runs: cron
            .runs
            .into_iter()
            .map(|r| CronRunView {
                scheduled_at_ms: r.scheduled_at_ms,
                fired_at_ms: r.fired_at_ms,
                outcome: r.outcome,
                job_id: r.job_id,
            })
            .collect(),
        jobs,
    };
    std::fs::write(dir.join("cron.json"), serde_json::to_vec_pretty(&rec)?)?;
    Ok(())
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The event follower's handle: its position, and a way to stop it.
pub struct Follower {
    position: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<FollowStats>>,
}

#[derive(Debug, Default)]
pub struct FollowStats {
    pub messages: u64,
    pub events: u64,
    pub resets: u64,
}

/// Starts following the stream from the first entry, writing to `path`.
pub fn follow(path: &Path, masters: &[String], dialer: &Dialer) -> anyhow::Result<Follower> {
    let mut c = client(masters, dialer)?;
    // A fault may keep every master away for a while: keep resuming (the loop below bounds
    // nothing itself; the stop signal ends it).
    c.retry_for = Duration::from_secs(30);
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let position = Arc::new(AtomicU64::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let task =
        tokio::spawn(run_follower(c, std::io::BufWriter::new(file), position.clone(), stop_rx));
    Ok(Follower { position, stop, task })
}

async fn run_follower(
    client: Client,
    mut out: std::io::BufWriter<std::fs::File>,
    position: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<FollowStats> {
    let mut stats = FollowStats::default();
    let mut from = Some(0);
    let mut too_old = 0;
    'outer: loop {
        let mut f = client.follow_events(from, "", false);
        loop {
            let next = tokio::select! {
                n = f.next() => n,
                _ = stop.changed() => break 'outer,
            };
            match next {
                Ok(m) => {
                    too_old = 0;
                    stats.messages += 1;
                    stats.events += m.events.len() as u64;
                    let line = EventLine {
                        kind: "message".into(),
                        time_ns: monotonic_ns(),
                        index: m.index,
                        events: m.events.into_iter().map(view).collect(),
                    };
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                    position.fetch_max(m.index, Ordering::SeqCst);
                }
                Err(s) if is_too_old(&s) && too_old < 3 => {
                    // Another master may still hold them: the client moved on to the next one.
                    too_old += 1;
                    from = f.position().or(from);
                    continue 'outer;
                }
                Err(s) if is_too_old(&s) => {
                    stats.resets += 1;
                    let line = EventLine {
                        kind: "reset".into(),
                        time_ns: monotonic_ns(),
                        index: f.position().unwrap_or(0),
                        events: Vec::new(),
                    };
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                    eprintln!("event follower: {}; following from now", s.message());
                    too_old = 0;
                    from = None;
                    continue 'outer;
                }
                Err(s) => {
                    // Retryable but past the client's retry time (a long fault): resume from
                    // where it was, after a pause that bounds the loop's rate.
                    tracing::debug!(error = %s, "event follower: resuming");
                    from = f.position().or(from);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.changed() => break 'outer,
                    }
                    continue 'outer;
                }
            }
        }
    }
    out.flush()?;
    Ok(stats)
}

fn view(e: pb::Event) -> EventView {
    EventView {
        kind: e.kind,
        job_id: e.job_id,
        task_index: e.task_index,
        from: e.from,
        to: e.to,
        cron: e.cron,
        cron_event: e.cron_event,
        scheduled_at_ms: e.scheduled_at_ms,
    }
}

impl Follower {
    /// Waits (at most `bound`) until the follower has received every entry applied anywhere in
    /// the cluster now, then stops it. Returns whether it caught up, and its counts.
    pub async fn finish(
        self,
        masters: &[String],
        dialer: &Dialer,
        bound: Duration,
    ) -> (bool, FollowStats) {
        let deadline = Instant::now() + bound;
        let target = match client(masters, dialer) {
            Ok(c) => c
                .cluster_status()
                .await
                .ok()
                .map(|s| s.masters.iter().map(|m| m.applied_index).max().unwrap_or(0)),
            Err(_) => None,
        };
        let mut caught_up = false;
        if let Some(target) = target {
            while Instant::now() < deadline {
                if self.position.load(Ordering::SeqCst) >= target {
                    caught_up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = self.stop.send(true);
        let stats = match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(s))) => s,
            Ok(Ok(Err(e))) => {
                eprintln!("event follower: {e:#}");
                caught_up = false;
                FollowStats::default()
            }
            _ => {
                caught_up = false;
                FollowStats::default()
            }
        };
        (caught_up, stats)
    }
}
