//! `triad-jepsen task`: the command every chaos job's tasks run. It records its side effects in
//! the shared sink: `start` when it begins its work, then works (sleeps) for a random time in the
//! given range, then `end`, and exits 0. Each line is one `write` on an `O_APPEND` descriptor, so
//! concurrent attempts on any host never interleave within a line. Time is CLOCK_MONOTONIC, the
//! clock the history uses. A killed attempt (SIGTERM/SIGKILL) records no `end`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use triad_jepsen::history::{monotonic_ns, SideEffect};

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set (run me as a triad task)"))
}

pub fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s.split_once("..").with_context(|| format!("expected A..B, got {s:?}"))?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if a > b {
        bail!("empty range {s:?}");
    }
    Ok((a, b))
}

fn append(sink: &Path, e: &SideEffect) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(e)?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sink)
        .with_context(|| format!("opening {}", sink.display()))?;
    // One write: O_APPEND makes the offset update and the write atomic for a regular file.
    let n = f.write(line.as_bytes())?;
    if n != line.len() {
        bail!("short write to {}", sink.display());
    }
    Ok(())
}

pub fn run(sink: &Path, millis: &str) -> anyhow::Result<()> {
    let (lo, hi) = parse_range(millis)?;
    let mut e = SideEffect {
        event: "start".into(),
        job_id: env("TRIAD_JOB_ID")?,
        task: env("TRIAD_TASK_INDEX")?.parse().context("TRIAD_TASK_INDEX")?,
        attempt: env("TRIAD_ATTEMPT")?.parse().context("TRIAD_ATTEMPT")?,
        token: env("TRIAD_FENCING_TOKEN")?.parse().context("TRIAD_FENCING_TOKEN")?,
        time_ns: monotonic_ns(),
    };
    append(sink, &e)?;
    let ms = rand::thread_rng().gen_range(lo..=hi);
    std::thread::sleep(Duration::from_millis(ms));
    e.event = "end".into();
    e.time_ns = monotonic_ns();
    append(sink, &e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("300..2000").unwrap(), (300, 2000));
        assert_eq!(parse_range("5..5").unwrap(), (5, 5));
        assert!(parse_range("9..1").is_err());
        assert!(parse_range("300").is_err());
    }
}
