//! What an attempt is and what it sees: [`AttemptSpec`], its validation, and the command it
//! becomes (program and arguments, environment, working directory, standard streams).
//!
//! Invariants:
//! - **Validated before anything happens.** [`validate`] runs before the token is registered or
//!   any file is touched; a spec it refuses leaves no trace.
//! - **The environment is a contract.** An attempt sees only [`INHERITED_ENV`] of the
//!   executor's environment, then its user environment, then the `TRIAD_*` variables, which
//!   override user entries of the same name.
//! - **Arguments are never re-split.** In argv mode they are exec'd as given; in shell mode they
//!   are the script's `$1...` (with `$0` = `sh`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::process;
use super::workdir::is_path_component;
use super::RunnerError;

/// Environment variables passed through from the executor's own environment. Everything else of
/// it is withheld, so attempts do not depend on how the executor happened to be started.
const INHERITED_ENV: &[&str] = &["PATH", "HOME"];

/// Everything needed to run one attempt of one task. Built by the caller from the dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpec {
    /// The job's id; used as a directory name, so it must be a single path component.
    pub job_id: String,
    /// Index of the task within the job, `0..task_count`.
    pub task_index: u32,
    /// Number of tasks (partitions) of the job.
    pub task_count: u32,
    /// 1-based attempt number within the task (0 is reserved for "latest" in `read_output`).
    pub attempt: u32,
    /// Fencing token of this attempt; the runner's key for it.
    pub token: u64,
    /// Program to exec (argv mode) or shell script (shell mode).
    pub command: String,
    /// Arguments: `argv[1..]` in argv mode, `$1...` of the script in shell mode.
    pub args: Vec<String>,
    /// User environment; `TRIAD_*` variables set by the runner override entries here.
    pub env: BTreeMap<String, String>,
    /// Run `command` as a script with `/bin/sh -c` instead of exec'ing it.
    pub shell: bool,
    /// Wall-clock limit from spawn; on expiry the group is SIGKILLed and the status is `TimedOut`.
    pub timeout: Option<Duration>,
    /// First UUID of this task's share of the UUID space (computed by the caller).
    pub range_start: String,
    /// Last UUID of this task's share of the UUID space (computed by the caller).
    pub range_end: String,
}

/// Refuses a spec that cannot be run as given; the error names the token and the reason.
pub(super) fn validate(spec: &AttemptSpec) -> Result<(), RunnerError> {
    let invalid = |reason: String| Err(RunnerError::InvalidSpec { token: spec.token, reason });
    if !is_path_component(&spec.job_id) {
        return invalid(format!("job id {:?} is not a plain directory name", spec.job_id));
    }
    if spec.attempt == 0 {
        return invalid("attempt numbers start at 1".into());
    }
    if spec.task_index >= spec.task_count {
        return invalid(format!(
            "task index {} not below task count {}",
            spec.task_index, spec.task_count
        ));
    }
    Ok(())
}

/// The program actually exec'd, for error messages.
pub(super) fn program_name(spec: &AttemptSpec) -> String {
    if spec.shell {
        "/bin/sh".to_owned()
    } else {
        spec.command.clone()
    }
}

/// The command for `spec`, running in `dir` with its output going to `stdout` and `stderr`, and
/// confined to its own process group (see [`process::confine`]).
pub(super) fn build_command(
    spec: &AttemptSpec,
    dir: &Path,
    stdout: Stdio,
    stderr: Stdio,
) -> Command {
    let mut cmd = if spec.shell {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(&spec.command).arg("sh").args(&spec.args);
        cmd
    } else {
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args);
        cmd
    };
    cmd.env_clear();
    for key in INHERITED_ENV {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.envs(&spec.env)
        .env("TRIAD_JOB_ID", &spec.job_id)
        .env("TRIAD_TASK_INDEX", spec.task_index.to_string())
        .env("TRIAD_TASK_COUNT", spec.task_count.to_string())
        .env("TRIAD_ATTEMPT", spec.attempt.to_string())
        .env("TRIAD_RANGE_START", &spec.range_start)
        .env("TRIAD_RANGE_END", &spec.range_end)
        .env("TRIAD_FENCING_TOKEN", spec.token.to_string())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    process::confine(&mut cmd);
    cmd
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{harness, shell, spec};
    use super::*;
    use crate::executor::runner::ExitStatus;

    fn env_map(output: &str) -> BTreeMap<String, String> {
        output
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn shell_job_sees_triad_env_overriding_user_env_and_no_other_inherited_vars() {
        let mut h = harness();
        let mut s = shell(7, "env");
        s.env.insert("USER_VAR".into(), "user value".into());
        s.env.insert("TRIAD_JOB_ID".into(), "forged".into());
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        let env = env_map(&h.output(&s, false).await);
        let expect = [
            ("TRIAD_JOB_ID", "job-a"),
            ("TRIAD_TASK_INDEX", "2"),
            ("TRIAD_TASK_COUNT", "4"),
            ("TRIAD_ATTEMPT", "1"),
            ("TRIAD_RANGE_START", "80000000-0000-0000-0000-000000000000"),
            ("TRIAD_RANGE_END", "bfffffff-ffff-ffff-ffff-ffffffffffff"),
            ("TRIAD_FENCING_TOKEN", "7"),
            ("USER_VAR", "user value"),
        ];
        for (key, value) in expect {
            assert_eq!(env.get(key).map(String::as_str), Some(value), "{key} in {env:?}");
        }
        if let Ok(path) = std::env::var("PATH") {
            assert_eq!(env.get("PATH"), Some(&path), "PATH is inherited");
        }
        // cargo sets CARGO_* for test binaries; the attempt must not see the executor's env.
        assert!(!env.keys().any(|k| k.starts_with("CARGO")), "executor env leaked: {env:?}");
    }

    #[tokio::test]
    async fn argv_job_reads_its_task_index() {
        let mut h = harness();
        let s = spec(1, "printenv", &["TRIAD_TASK_INDEX"]);
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        assert_eq!(h.output(&s, false).await, "2\n");
    }

    #[tokio::test]
    async fn argv_arguments_with_spaces_are_not_split() {
        let mut h = harness();
        let s = spec(1, "printf", &["[%s]", "a b", "c  d", "$HOME", "*"]);
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        assert_eq!(h.output(&s, false).await, "[a b][c  d][$HOME][*]");
    }

    #[tokio::test]
    async fn shell_job_receives_args_as_positional_parameters() {
        let mut h = harness();
        let s = AttemptSpec {
            args: vec!["a b".into(), "c".into()],
            ..shell(1, r#"printf '[%s]' "$0" "$@""#)
        };
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        assert_eq!(h.output(&s, false).await, "[sh][a b][c]");
    }

    #[tokio::test]
    async fn invalid_specs_are_rejected_before_anything_runs() {
        let h = harness();
        for (bad, why) in [
            (AttemptSpec { job_id: "../escape".into(), ..spec(1, "true", &[]) }, "job id"),
            (AttemptSpec { job_id: "".into(), ..spec(2, "true", &[]) }, "job id"),
            (AttemptSpec { attempt: 0, ..spec(3, "true", &[]) }, "attempt"),
            (AttemptSpec { task_index: 4, ..spec(4, "true", &[]) }, "task index"),
        ] {
            let err = h.runner.start(bad).await.unwrap_err();
            assert!(
                matches!(err, RunnerError::InvalidSpec { .. }) && err.to_string().contains(why),
                "{err}"
            );
        }
        assert!(h.runner.list().is_empty());
        assert!(!h.dir.path().join("attempts").exists());
    }
}
