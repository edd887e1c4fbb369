//! Bounds on every field of every request a master or an executor accepts, checked at the top of
//! each handler before anything is proposed to Raft or run ([`Validate::validate`]).
//!
//! Pure functions, no I/O. Each violation is `INVALID_ARGUMENT` with a one-line message naming
//! the field and its bound. The numbers live in [`crate::state::limits`], the one place the
//! state machine's own checks read theirs from; everything accepted here is accepted by the
//! state machine's validation as well (`JobSpec::validate`, `validate_submit`), which stays as it
//! is (it must judge old log entries exactly as before).

use std::collections::HashMap;

use tonic::Status;

use super::pb;
use crate::state::limits::*;

/// A request that can check its own fields against the bounds.
pub trait Validate {
    /// `INVALID_ARGUMENT`, naming the field and the bound, for the first field out of bounds.
    fn validate(&self) -> Result<(), Status>;
}

fn bad(msg: String) -> Status {
    Status::invalid_argument(msg)
}

/// At most `max` bytes.
fn bytes(field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.len() > max {
        return Err(bad(format!("{field} is {} bytes, at most {max}", s.len())));
    }
    Ok(())
}

/// Non-empty and at most `max` bytes.
fn required(field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.is_empty() {
        return Err(bad(format!("{field} is required")));
    }
    bytes(field, s, max)
}

/// At most `max` characters.
fn chars(field: &str, s: &str, max: usize) -> Result<(), Status> {
    // A cheap first test: no string of at most `max` bytes has more than `max` characters.
    if s.len() > max && s.chars().count() > max {
        return Err(bad(format!("{field} is longer than {max} characters")));
    }
    Ok(())
}

/// `n` in `lo..=hi`.
fn within<T: PartialOrd + std::fmt::Display>(
    field: &str,
    n: T,
    lo: T,
    hi: T,
) -> Result<(), Status> {
    if n < lo || n > hi {
        return Err(bad(format!("{field} is {n}, not in {lo}..={hi}")));
    }
    Ok(())
}

/// At most `max` entries.
fn count(field: &str, n: usize, max: usize) -> Result<(), Status> {
    if n > max {
        return Err(bad(format!("{field} has {n} entries, at most {max}")));
    }
    Ok(())
}

/// An executor id: 1 to [`MAX_EXECUTOR_ID_BYTES`] printable ASCII bytes, no `/` (it names
/// files and appears in logs and paths).
pub fn executor_id(field: &str, id: &str) -> Result<(), Status> {
    required(field, id, MAX_EXECUTOR_ID_BYTES)?;
    if !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\') {
        return Err(bad(format!(
            "{field} {id:?} must be printable ASCII without spaces or slashes"
        )));
    }
    Ok(())
}

/// A `host:port` address of at most [`MAX_ADDR_BYTES`]: a non-empty host of printable ASCII
/// (no `/`, `@`, `?` or `#`: it is put into a URL) and a port in 1..=65535.
pub fn address(field: &str, addr: &str) -> Result<(), Status> {
    required(field, addr, MAX_ADDR_BYTES)?;
    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_graphic() && !b"/@?#\\".contains(&b))
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !ok {
        return Err(bad(format!("{field} {addr:?} is not host:port")));
    }
    Ok(())
}

/// A job id: a UUID.
fn job_id(field: &str, id: &str) -> Result<(), Status> {
    bytes(field, id, 64)?;
    uuid::Uuid::parse_str(id.trim())
        .map_err(|_| bad(format!("{field} {id:?} is not a UUID")))
        .map(drop)
}

/// Labels or label selectors: at most `max` pairs, each name 1 to [`MAX_LABEL_KEY_BYTES`] and
/// each value at most [`MAX_LABEL_VALUE_BYTES`].
fn labels(field: &str, m: &HashMap<String, String>, max: usize) -> Result<(), Status> {
    count(field, m.len(), max)?;
    for (k, v) in m {
        required(&format!("{field} name"), k, MAX_LABEL_KEY_BYTES)?;
        bytes(&format!("{field}[{k:?}]"), v, MAX_LABEL_VALUE_BYTES)?;
    }
    Ok(())
}

/// A bundle of resources, each dimension within its bound (`demand`: at least one slot).
fn resources(field: &str, r: &pb::Resources, demand: bool) -> Result<(), Status> {
    within(&format!("{field}.slots"), r.slots, u32::from(demand), MAX_SLOTS)?;
    within(&format!("{field}.cpu_millis"), r.cpu_millis, 0, MAX_CPU_MILLIS)?;
    within(&format!("{field}.memory_mib"), r.memory_mib, 0, MAX_MEMORY_MIB)
}

/// What one `execve` of `command` (alone, or as `/bin/sh -c command`), `args` and `env` takes
/// against `ARG_MAX`: each string with its NUL and its pointer.
pub fn exec_bytes<'a>(
    command: &str,
    args: &[String],
    env: impl Iterator<Item = (&'a String, &'a String)>,
) -> usize {
    let arg = |len: usize| len + 1 + std::mem::size_of::<usize>();
    let argv = arg(command.len()) + arg("/bin/sh".len()) + arg("-c".len());
    let args = args.iter().map(|a| arg(a.len())).sum::<usize>();
    argv + args + env.map(|(k, v)| arg(k.len() + 1 + v.len())).sum::<usize>()
}

/// A command line the kernel will take: no NUL anywhere, no string past `MAX_ARG_STRLEN`, env
/// names non-empty without `=`, and all of it within `ARG_MAX` less [`ARG_HEADROOM`].
fn exec(command: &str, args: &[String], env: &HashMap<String, String>) -> Result<(), Status> {
    let max = MAX_ARG_STRLEN - 1;
    bytes("command", command, max)?;
    let texts = std::iter::once(command).chain(args.iter().map(String::as_str));
    if texts.chain(env.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()])).any(|s| s.contains('\0'))
    {
        return Err(bad("command, args and env must not contain NUL".into()));
    }
    count("args", args.len(), MAX_ARGS)?;
    count("env", env.len(), MAX_ENV)?;
    if let Some((i, a)) = args.iter().enumerate().find(|(_, a)| a.len() > max) {
        return Err(bad(format!("args[{i}] is {} bytes, at most {max}", a.len())));
    }
    for (k, v) in env {
        if k.is_empty() || k.contains('=') {
            return Err(bad(format!("env name {k:?} is empty or contains '='")));
        }
        if k.len() + 1 + v.len() > max {
            return Err(bad(format!(
                "env {k:?} is {} bytes as k=v, at most {max}",
                k.len() + 1 + v.len()
            )));
        }
    }
    let total = exec_bytes(command, args, env.iter());
    let budget = ARG_MAX - ARG_HEADROOM;
    if total > budget {
        return Err(bad(format!(
            "command, args and env take {total} bytes of ARG_MAX, at most {budget}"
        )));
    }
    Ok(())
}

/// A job spec as a client sends it (0 meaning the default where the proto says so).
fn job_spec(s: &pb::JobSpec) -> Result<(), Status> {
    if s.command.trim().is_empty() {
        return Err(bad("spec.command is empty".into()));
    }
    exec(&s.command, &s.args, &s.env)?;
    within("spec.task_count", s.task_count, 1, MAX_TASKS)?;
    within("spec.max_attempts", s.max_attempts, 0, MAX_ATTEMPTS)?;
    within("spec.retry_backoff_ms", s.retry_backoff_ms, 0, MAX_RETRY_BACKOFF_MS)?;
    within("spec.timeout_ms", s.timeout_ms, 0, MAX_TIMEOUT_MS)?;
    if let Some(ttl) = s.ttl_after_finished_ms {
        within("spec.ttl_after_finished_ms", ttl, 0, MAX_TTL_AFTER_FINISHED_MS)?;
    }
    batch_policy(s)?;
    labels("spec.constraints", &s.constraints, MAX_CONSTRAINTS)?;
    if let Some(r) = &s.resources {
        resources("spec.resources", r, true)?;
    }
    let pairs =
        |m: &HashMap<String, String>| m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let text = s.command.len()
        + s.args.iter().map(String::len).sum::<usize>()
        + pairs(&s.env)
        + pairs(&s.constraints);
    if text > MAX_SPEC_BYTES {
        return Err(bad(format!("spec text is {text} bytes, at most {MAX_SPEC_BYTES}")));
    }
    Ok(())
}

impl Validate for pb::SubmitJobRequest {
    fn validate(&self) -> Result<(), Status> {
        chars("name", &self.name, MAX_NAME_CHARS)?;
        chars("idempotency_key", &self.idempotency_key, MAX_KEY_CHARS)?;
        job_spec(self.spec.as_ref().ok_or_else(|| bad("spec is required".into()))?)
    }
}

impl Validate for pb::GetJobRequest {
    fn validate(&self) -> Result<(), Status> {
        job_id("job_id", &self.job_id)?;
        within("task_page_size", self.task_page_size, 0, crate::state::limits::MAX_TASKS)?;
        if !self.task_page_token.is_empty() && self.task_page_token.parse::<u32>().is_err() {
            return Err(bad(format!(
                "task_page_token {:?} is not a task index",
                self.task_page_token
            )));
        }
        Ok(())
    }
}

impl Validate for pb::ListJobsRequest {
    fn validate(&self) -> Result<(), Status> {
        bytes("state", &self.state, 16)?;
        within("page_size", self.page_size, 0, MAX_PAGE_SIZE)?;
        if !self.page_token.is_empty() && self.page_token.parse::<u64>().is_err() {
            return Err(bad(format!("page_token {:?} is not a number", self.page_token)));
        }
        Ok(())
    }
}

impl Validate for pb::CancelJobRequest {
    fn validate(&self) -> Result<(), Status> {
        job_id("job_id", &self.job_id)
    }
}

// --- Events (issue 17) ---
impl Validate for pb::WatchEventsRequest {
    fn validate(&self) -> Result<(), Status> {
        if !self.job_id.is_empty() {
            job_id("job_id", &self.job_id)?;
        }
        Ok(())
    }
}

// --- Cron (issue 17) ---
impl Validate for pb::CreateCronRequest {
    fn validate(&self) -> Result<(), Status> {
        use crate::state::cron::*;
        validate_name(&self.name).map_err(bad)?;
        bytes("schedule", &self.schedule, MAX_SCHEDULE_BYTES)?;
        bytes("tz", &self.tz, MAX_TZ_BYTES)?;
        // The schedule is parsed here, never in apply: a bad one never reaches the log.
        crate::state::schedule::Schedule::parse(&self.schedule, &self.tz, 0).map_err(bad)?;
        if Overlap::parse(&self.overlap).is_none() {
            return Err(bad(format!("overlap {:?} is not allow, forbid or replace", self.overlap)));
        }
        within("starting_deadline_ms", self.starting_deadline_ms, 0, MAX_TIMEOUT_MS)?;
        within("keep_succeeded", self.keep_succeeded, 0, MAX_KEEP)?;
        within("keep_failed", self.keep_failed, 0, MAX_KEEP)?;
        chars("job_name", &self.job_name, MAX_NAME_CHARS)?;
        let spec = self.spec.as_ref().ok_or_else(|| bad("spec is required".into()))?;
        if !spec.after.is_empty() {
            return Err(bad("spec.after: a cron's jobs cannot have dependencies".into()));
        }
        job_spec(spec)
    }
}

impl Validate for pb::GetCronRequest {
    fn validate(&self) -> Result<(), Status> {
        crate::state::cron::validate_name(&self.name).map_err(bad)
    }
}

impl Validate for pb::CronNameRequest {
    fn validate(&self) -> Result<(), Status> {
        crate::state::cron::validate_name(&self.name).map_err(bad)?;
        if self.trigger_job_id.len() > 64 {
            return Err(bad("trigger_job_id: longer than a UUID".to_string()));
        }
        Ok(())
    }
}

// --- batch semantics (issue 16) ---

/// The batch fields of a spec: counts, codes, durations and dependency ids within bounds.
fn batch_policy(s: &pb::JobSpec) -> Result<(), Status> {
    use crate::state::policy::defaults::*;
    within("spec.max_lost", s.max_lost, 0, MAX_LOST_LIMIT)?;
    count("spec.retry_on_exit", s.retry_on_exit.len(), MAX_EXIT_CODES)?;
    count("spec.fail_on_exit", s.fail_on_exit.len(), MAX_EXIT_CODES)?;
    within("spec.retry_backoff_max_ms", s.retry_backoff_max_ms, 0, MAX_RETRY_BACKOFF_MS)?;
    within("spec.deadline_ms", s.deadline_ms, 0, MAX_DEADLINE_MS)?;
    within("spec.parallelism", s.parallelism, 0, MAX_TASKS)?;
    within("spec.max_failed_tasks", s.max_failed_tasks, 0, MAX_TASKS)?;
    count("spec.after", s.after.len(), MAX_DEPENDENCIES)?;
    for (i, d) in s.after.iter().enumerate() {
        job_id(&format!("spec.after[{i}].job_id"), &d.job_id)?;
    }
    Ok(())
}

impl Validate for pb::SuspendJobRequest {
    fn validate(&self) -> Result<(), Status> {
        job_id("job_id", &self.job_id)
    }
}

impl Validate for pb::ResumeJobRequest {
    fn validate(&self) -> Result<(), Status> {
        job_id("job_id", &self.job_id)
    }
}

// Retention (issue 14).
impl Validate for pb::DeleteJobRequest {
    fn validate(&self) -> Result<(), Status> {
        job_id("job_id", &self.job_id)
    }
}

impl Validate for pb::CollectGarbageRequest {
    fn validate(&self) -> Result<(), Status> {
        Ok(())
    }
}

impl Validate for pb::RegisterRequest {
    fn validate(&self) -> Result<(), Status> {
        executor_id("executor_id", &self.executor_id)?;
        address("addr", &self.addr)?;
        if let Some(c) = &self.capacity {
            resources("capacity", c, false)?;
        }
        labels("labels", &self.labels, MAX_LABELS)
    }
}

impl Validate for pb::HeartbeatRequest {
    fn validate(&self) -> Result<(), Status> {
        executor_id("executor_id", &self.executor_id)?;
        count("attempts", self.attempts.len(), MAX_HEARTBEAT_ATTEMPTS)?;
        bytes("unhealthy", &self.unhealthy, MAX_UNHEALTHY_BYTES)?;
        match self.attempts.iter().find(|a| a.job_id.len() > 64) {
            Some(a) => {
                Err(bad(format!("attempts: job_id is {} bytes, at most 64", a.job_id.len())))
            }
            None => Ok(()),
        }
    }
}

impl Validate for pb::ReportTaskRequest {
    fn validate(&self) -> Result<(), Status> {
        executor_id("executor_id", &self.executor_id)?;
        job_id("job_id", &self.job_id)?;
        within("task_index", self.task_index, 0, MAX_TASKS - 1)?;
        if self.token == 0 {
            return Err(bad("token is 0 (tokens start at 1)".into()));
        }
        bytes("error", &self.error, MAX_REPORT_TEXT_BYTES)
    }
}

impl Validate for pb::ListExecutorsRequest {
    fn validate(&self) -> Result<(), Status> {
        within("page_size", self.page_size, 0, MAX_PAGE_SIZE)?;
        if !self.page_token.is_empty() {
            executor_id("page_token", &self.page_token)?;
        }
        Ok(())
    }
}

impl Validate for pb::DrainExecutorRequest {
    fn validate(&self) -> Result<(), Status> {
        executor_id("executor_id", &self.executor_id)
    }
}

impl Validate for pb::DeregisterRequest {
    fn validate(&self) -> Result<(), Status> {
        executor_id("executor_id", &self.executor_id)?;
        within("epoch", self.epoch, 1, u64::MAX)
    }
}

impl Validate for pb::ClusterStatusRequest {
    fn validate(&self) -> Result<(), Status> {
        Ok(())
    }
}

impl Validate for pb::NodeStatusRequest {
    fn validate(&self) -> Result<(), Status> {
        Ok(())
    }
}

impl Validate for pb::AddMasterRequest {
    fn validate(&self) -> Result<(), Status> {
        within("id", self.id, 1, u64::MAX)?;
        address("addr", &self.addr)
    }
}

impl Validate for pb::RemoveMasterRequest {
    fn validate(&self) -> Result<(), Status> {
        within("id", self.id, 1, u64::MAX)
    }
}

impl Validate for pb::StartAttemptRequest {
    fn validate(&self) -> Result<(), Status> {
        job_id("job_id", &self.job_id)?;
        within("task_count", self.task_count, 1, MAX_TASKS)?;
        within("task_index", self.task_index, 0, self.task_count - 1)?;
        within("attempt", self.attempt, 1, MAX_ATTEMPTS)?;
        within("token", self.token, 1, u64::MAX)?;
        within("epoch", self.epoch, 1, u64::MAX)?;
        if self.command.trim().is_empty() {
            return Err(bad("command is empty".into()));
        }
        exec(&self.command, &self.args, &self.env)?;
        within("timeout_ms", self.timeout_ms, 0, MAX_TIMEOUT_MS)?;
        bytes("range_start", &self.range_start, 64)?;
        bytes("range_end", &self.range_end, 64)
    }
}

impl Validate for pb::StopAttemptRequest {
    fn validate(&self) -> Result<(), Status> {
        within("token", self.token, 1, u64::MAX)
    }
}

impl Validate for pb::QueryAttemptRequest {
    fn validate(&self) -> Result<(), Status> {
        within("token", self.token, 1, u64::MAX)
    }
}

impl Validate for pb::ReadOutputRequest {
    fn validate(&self) -> Result<(), Status> {
        job_id("job_id", &self.job_id)?;
        within("task_index", self.task_index, 0, MAX_TASKS - 1)?;
        within("attempt", self.attempt, 0, MAX_ATTEMPTS)?;
        within("tail_lines", self.tail_lines, 0, MAX_TAIL_LINES)
    }
}

// Executor output (issue 14).

/// Most lines `--tail` may ask for (the scan is bounded by the kept output anyway).
pub const MAX_TAIL_LINES: u32 = 1_000_000;
/// Most job ids one DeleteOutput carries.
pub const MAX_DELETE_OUTPUT_JOBS: usize = 10_000;
/// Longest reason a heartbeat gives for being unhealthy.
pub const MAX_UNHEALTHY_BYTES: usize = 1024;

impl Validate for pb::FollowOutputRequest {
    fn validate(&self) -> Result<(), Status> {
        job_id("job_id", &self.job_id)?;
        within("task_index", self.task_index, 0, MAX_TASKS - 1)?;
        within("attempt", self.attempt, 0, MAX_ATTEMPTS)?;
        within("tail_lines", self.tail_lines, 0, MAX_TAIL_LINES)
    }
}

impl Validate for pb::DeleteOutputRequest {
    fn validate(&self) -> Result<(), Status> {
        count("job_ids", self.job_ids.len(), MAX_DELETE_OUTPUT_JOBS)?;
        self.job_ids.iter().try_for_each(|id| job_id("job_ids", id))
    }
}

#[cfg(test)]
mod tests;
