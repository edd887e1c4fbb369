//! `triad events` (the event stream, one line per event) and `triad job wait` on top of it.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tonic::Status;

use super::output::Format;
use crate::api::pb;
use crate::client::events::is_too_old;
use crate::client::Client;

/// One event as `-o json` prints it: its entry's index and the event's fields.
#[derive(Serialize)]
struct Line<'a> {
    index: u64,
    #[serde(flatten)]
    event: &'a pb::Event,
}

/// One event as a human reads it.
pub fn human(index: u64, e: &pb::Event) -> String {
    let moved = if e.from.is_empty() { e.to.clone() } else { format!("{} -> {}", e.from, e.to) };
    match e.kind.as_str() {
        "job" => format!("{index} job {} {moved}", e.job_id),
        "task" => {
            let mut s = format!("{index} task {}/{} {moved}", e.job_id, e.task_index);
            if e.attempt > 0 {
                s.push_str(&format!(
                    " (attempt {} on {}, token {})",
                    e.attempt, e.executor, e.token
                ));
            }
            if e.has_exit_code {
                s.push_str(&format!(" exit {}", e.exit_code));
            }
            s
        }
        "executor" => format!("{index} executor {} {moved} (epoch {})", e.executor, e.epoch),
        _ => {
            let mut s = format!("{index} cron {} {}", e.cron, e.cron_event);
            if e.scheduled_at_ms > 0 {
                s.push_str(&format!(" scheduled {}", rfc3339(e.scheduled_at_ms)));
            }
            if !e.job_id.is_empty() {
                s.push_str(&format!(" job {}", e.job_id));
            }
            if !e.replaced_job_id.is_empty() {
                s.push_str(&format!(" (replaced {})", e.replaced_job_id));
            }
            if !e.reason.is_empty() {
                s.push_str(&format!(" ({})", e.reason));
            }
            s
        }
    }
}

/// `triad events`: follows the stream (through failover) until interrupted, or until `limit`
/// events were printed. `OUT_OF_RANGE` ends it with the server's one-line advice.
pub async fn follow(
    client: &Client,
    from: Option<u64>,
    job: &str,
    linearizable: bool,
    limit: Option<u64>,
    format: Format,
) -> anyhow::Result<i32> {
    use std::io::Write;
    let mut f = client.follow_events(from, job, linearizable);
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        if limit.is_some_and(|l| printed >= l) {
            return Ok(0);
        }
        let m = f.next().await.map_err(|s| anyhow::anyhow!(super::status_line(&s)))?;
        for e in &m.events {
            match format {
                Format::Json => {
                    let line = serde_json::to_string(&Line { index: m.index, event: e })?;
                    writeln!(out, "{line}")?
                }
                Format::Table => writeln!(out, "{}", human(m.index, e))?,
            }
            printed += 1;
        }
        out.flush().context("writing events")?;
    }
}

/// Where a job stands, for `job wait`'s progress bar.
struct Progress {
    total: u64,
    done: u64,
    running: i64,
    state: String,
}

impl Progress {
    fn of(j: &pb::Job) -> Progress {
        let c = j.counts.unwrap_or_default();
        Progress {
            total: j.spec.as_ref().map_or(0, |s| s.task_count as u64),
            done: (c.succeeded + c.failed + c.cancelled) as u64,
            running: c.running as i64,
            state: j.state.clone(),
        }
    }

    /// Applies one event of the job.
    fn apply(&mut self, e: &pb::Event) {
        let fin = |s: &str| matches!(s, "succeeded" | "failed" | "cancelled");
        match e.kind.as_str() {
            "job" => self.state = e.to.clone(),
            "task" => {
                self.done =
                    (self.done + u64::from(fin(&e.to))).saturating_sub(u64::from(fin(&e.from)));
                self.running += i64::from(e.to == "running") - i64::from(e.from == "running");
            }
            _ => {}
        }
    }

    fn terminal(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// Waits for job `id` to be terminal: reads it (and the index it was read at), then follows its
/// events from that index, so no transition between the read and the stream is missed. When the
/// stream's events are gone (`OUT_OF_RANGE`) or it fails for good, it reads the job again and
/// goes on; a master without the stream (`UNIMPLEMENTED`) is polled. Exit status 0 only when the
/// job succeeded. On a terminal, a progress bar shows finished tasks.
pub async fn wait_job(client: &Client, id: &str) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {pos}/{len} tasks ({elapsed})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    });
    let show = |p: &Progress| {
        if let Some(b) = &bar {
            b.set_length(p.total);
            b.set_position(p.done);
            b.set_message(format!(
                "{} {} (running {})",
                &id[..8.min(id.len())],
                p.state,
                p.running
            ));
            b.tick();
            if p.terminal() {
                b.finish();
            }
        }
    };
    let mut poll = false;
    let mut backoff = Duration::from_millis(50);
    loop {
        let (j, at) = client.get_job_at(id, false).await.map_err(|s| st(&s))?;
        let mut p = Progress::of(&j);
        show(&p);
        if !p.terminal() && !poll {
            let mut f = client.follow_events(Some(at), &j.id, false);
            loop {
                match f.next().await {
                    Ok(m) => {
                        m.events.iter().for_each(|e| p.apply(e));
                        show(&p);
                        if p.terminal() {
                            break;
                        }
                    }
                    Err(s) if s.code() == tonic::Code::Unimplemented => {
                        poll = true;
                        break;
                    }
                    Err(s) => {
                        tracing::debug!(error = %s, too_old = is_too_old(&s), "re-reading the job");
                        break;
                    }
                }
            }
        }
        if p.terminal() {
            return Ok(match p.state.as_str() {
                "succeeded" => 0,
                s => {
                    eprintln!("job {id} {s}");
                    1
                }
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// A time in ms since the epoch, as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn st(s: &Status) -> anyhow::Error {
    anyhow::anyhow!(super::status_line(s))
}
