//! The CLI's batch-semantics flags (issue 16) on `job submit`, and how `job get` shows a job's
//! batch status: kept here so that `cli/mod.rs` gets a flattened struct and two lines.

use std::time::Duration;

use clap::Args;

use crate::api::pb;

/// `job submit` flags for the failure policy, deadline, parallelism, partial success and
/// dependencies.
#[derive(Args, Debug, Default)]
pub struct BatchArgs {
    /// Lost attempts per task (executor died, drained, start given up) before it fails; they do
    /// not count against --max-attempts [default: 20].
    #[arg(long)]
    pub max_lost: Option<u32>,
    /// Retry only these exit codes (comma-separated); any other fails the task at once.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub retry_on_exit: Vec<i32>,
    /// Exit codes that fail the task at once (comma-separated), e.g. 2 for bad arguments.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub fail_on_exit: Vec<i32>,
    /// The job fails (reason deadline) this long after submission, running attempts killed.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// Most tasks of the job running at once (0: no cap).
    #[arg(long, default_value_t = 0)]
    pub parallelism: u32,
    /// The job still succeeds with up to this many failed tasks.
    #[arg(long, default_value_t = 0)]
    pub max_failed_tasks: u32,
    /// Wait for job ID to end first; with :ok (the default) it must succeed, else this job is
    /// cancelled (reason dependency); with :any any end will do. Repeatable.
    #[arg(long = "after", value_parser = parse_dependency)]
    pub after: Vec<pb::Dependency>,
}

/// `--backoff BASE[..CAP]`: exponential backoff from BASE doubling up to CAP, with full jitter.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Option<Duration>,
}

/// Parses `1s` or `1s..5m`.
pub fn parse_backoff(s: &str) -> Result<Backoff, String> {
    let d = |x: &str| humantime::parse_duration(x.trim()).map_err(|e| format!("{x:?}: {e}"));
    match s.split_once("..") {
        Some((base, cap)) => {
            let (base, cap) = (d(base)?, d(cap)?);
            if cap < base {
                return Err(format!("backoff cap {cap:?} is below its base {base:?}"));
            }
            Ok(Backoff { base, cap: Some(cap) })
        }
        None => Ok(Backoff { base: d(s)?, cap: None }),
    }
}

/// Parses `ID`, `ID:ok` or `ID:any`.
pub fn parse_dependency(s: &str) -> Result<pb::Dependency, String> {
    let (id, cond) = s.rsplit_once(':').unwrap_or((s, "ok"));
    let any = match cond {
        "ok" => false,
        "any" => true,
        c => return Err(format!("unknown dependency condition {c:?} (expected ok or any)")),
    };
    uuid::Uuid::parse_str(id).map_err(|_| format!("dependency {id:?} is not a job id"))?;
    Ok(pb::Dependency { job_id: id.to_string(), any })
}

/// Fills the batch fields of a spec from the flags (0 meaning the default where the proto says).
pub fn fill_spec(spec: &mut pb::JobSpec, a: &BatchArgs, backoff: Option<Backoff>) {
    let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    spec.retry_backoff_ms = backoff.map_or(0, |b| ms(b.base));
    spec.retry_backoff_max_ms = backoff.and_then(|b| b.cap).map_or(0, ms);
    spec.max_lost = a.max_lost.unwrap_or(0);
    spec.retry_on_exit = a.retry_on_exit.clone();
    spec.fail_on_exit = a.fail_on_exit.clone();
    spec.deadline_ms = a.deadline.map_or(0, ms);
    spec.parallelism = a.parallelism;
    spec.max_failed_tasks = a.max_failed_tasks;
    spec.after = a.after.clone();
}

/// The lines `job get` prints about a job's batch status (none for a plain job).
pub fn job_lines(j: &pb::Job) -> Vec<String> {
    let mut out = Vec::new();
    if !j.reason.is_empty() {
        out.push(format!("reason:    {}", j.reason));
    }
    if j.waiting {
        out.push(format!("waiting:   on {}", j.waiting_on.join(", ")));
    }
    if j.suspended {
        out.push("suspended: yes".into());
    }
    if j.failed_tasks > 0 && j.state == "succeeded" {
        out.push(format!("partial:   succeeded with {} failed tasks", j.failed_tasks));
    }
    let spec = j.spec.clone().unwrap_or_default();
    if !spec.after.is_empty() {
        let deps: Vec<String> = spec
            .after
            .iter()
            .map(|d| format!("{}:{}", d.job_id, if d.any { "any" } else { "ok" }))
            .collect();
        out.push(format!("after:     {}", deps.join(" ")));
    }
    let mut policy = Vec::new();
    if spec.parallelism > 0 {
        policy.push(format!("parallelism {}", spec.parallelism));
    }
    if spec.deadline_ms > 0 {
        policy.push(format!("deadline {:?}", Duration::from_millis(spec.deadline_ms)));
    }
    if spec.max_failed_tasks > 0 {
        policy.push(format!("max failed tasks {}", spec.max_failed_tasks));
    }
    policy.push(format!(
        "attempts {} failed / {} lost, backoff {:?}..{:?}",
        spec.max_attempts,
        spec.max_lost,
        Duration::from_millis(spec.retry_backoff_ms),
        Duration::from_millis(spec.retry_backoff_max_ms)
    ));
    out.push(format!("policy:    {}", policy.join(", ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_and_dependency_flags_parse_or_say_why_not() {
        let b = parse_backoff("1s..5m").unwrap();
        assert_eq!((b.base, b.cap), (Duration::from_secs(1), Some(Duration::from_secs(300))));
        assert_eq!(parse_backoff("500ms").unwrap().cap, None);
        assert!(parse_backoff("5m..1s").unwrap_err().contains("below its base"));
        let id = "6f1c5c2e-8a43-4b57-9d7e-0c5d6f7a8b9c";
        assert!(!parse_dependency(id).unwrap().any);
        assert!(parse_dependency(&format!("{id}:any")).unwrap().any);
        assert!(!parse_dependency(&format!("{id}:ok")).unwrap().any);
        assert!(parse_dependency(&format!("{id}:maybe")).unwrap_err().contains("condition"));
        assert!(parse_dependency("nope").unwrap_err().contains("not a job id"));
    }
}
