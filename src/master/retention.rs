//! Retention (issue 14) on a master: the `[retention]` configuration with its `TRIAD_RETENTION_*`
//! overrides, and the shell of collection: committing a collection or a deletion, then telling
//! the executors to delete the deleted jobs' output (`WorkerService/DeleteOutput`, best effort
//! with a deadline) and pruning the leader's in-memory tables of forgotten executors.
//!
//! What is due and what is deleted are decided by the pure state machine
//! (`state::retention`) and the duties core (`duties::core`); nothing here judges a job.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::duties::core::{Core, Effect, Worker};
use super::liveness::Liveness;
use super::node::{now_ms, LocalError, Node};
use crate::api::pb;
use crate::api::pb::worker_service_client::WorkerServiceClient;
use crate::state::{Collected, Command, JobId, Outcome, Rejection, Retention};
use crate::timings::DISPATCH_TIMEOUT;

/// Metadata of the NOT_FOUND a deleted job's `GetJob` or `CancelJob` gets while its tombstone
/// lasts: the terminal state it was deleted in, and when it finished and was deleted (ms).
pub const DELETED_STATE: &str = "triad-deleted-state";
pub const FINISHED_AT: &str = "triad-finished-at-ms";
pub const DELETED_AT: &str = "triad-deleted-at-ms";

/// Most collections one `triad job gc` commits (each of up to `GC_BATCH` jobs): a pass is
/// bounded even when a huge backlog is due; the leader's periodic collection drains the rest.
pub const MAX_GC_PASS_BATCHES: usize = 100;

/// `[retention]`: durations as `humantime` text ("24h", "10s"); "0s" (or 0) turns a rule off.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// A finished job is deleted this long after it finished, unless it has its own
    /// `ttl_after_finished`. "0s": never by age.
    #[serde(with = "humantime_serde_compat")]
    pub finished_job_ttl: Duration,
    /// At most this many finished jobs are kept; beyond it the oldest go first. 0: unlimited.
    pub max_finished_jobs: u64,
    /// A deleted job's idempotency key keeps naming it until this long after the job finished.
    #[serde(with = "humantime_serde_compat")]
    pub idempotency_window: Duration,
    /// An executor dead or left for this long is forgotten. "0s": never.
    #[serde(with = "humantime_serde_compat")]
    pub executor_ttl: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            finished_job_ttl: DAY,
            // 1 M finished jobs at the SPEC's 1 KiB each: 1 GiB per master at most.
            max_finished_jobs: 1_000_000,
            idempotency_window: DAY,
            executor_ttl: DAY,
        }
    }
}

/// The longest retention duration accepted (ten years): beyond it a typo, not a policy.
const MAX_RETENTION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl RetentionConfig {
    /// `TRIAD_RETENTION_FINISHED_JOB_TTL`, `_MAX_FINISHED_JOBS`, `_IDEMPOTENCY_WINDOW`,
    /// `_EXECUTOR_TTL` override the file (masters started by `triad dev` inherit them).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let dur = |k: &str, into: &mut Duration| -> anyhow::Result<()> {
            if let Some(v) = get(k) {
                *into = humantime::parse_duration(v.trim())
                    .with_context(|| format!("{k}={v:?} is not a duration (e.g. 24h, 10s)"))?;
            }
            Ok(())
        };
        dur("TRIAD_RETENTION_FINISHED_JOB_TTL", &mut self.finished_job_ttl)?;
        dur("TRIAD_RETENTION_IDEMPOTENCY_WINDOW", &mut self.idempotency_window)?;
        dur("TRIAD_RETENTION_EXECUTOR_TTL", &mut self.executor_ttl)?;
        if let Some(v) = get("TRIAD_RETENTION_MAX_FINISHED_JOBS") {
            self.max_finished_jobs = v.trim().parse().with_context(|| {
                format!("TRIAD_RETENTION_MAX_FINISHED_JOBS={v:?} is not a number")
            })?;
        }
        Ok(())
    }

    pub fn check(&self) -> anyhow::Result<()> {
        for (name, d) in [
            ("finished_job_ttl", self.finished_job_ttl),
            ("idempotency_window", self.idempotency_window),
            ("executor_ttl", self.executor_ttl),
        ] {
            if d > MAX_RETENTION {
                bail!("retention.{name} is {d:?}, at most {MAX_RETENTION:?}");
            }
        }
        Ok(())
    }

    /// The policy commands carry (ms, 0 meaning off as in the config).
    pub fn policy(&self) -> Retention {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Retention {
            finished_job_ttl_ms: ms(self.finished_job_ttl),
            max_finished_jobs: self.max_finished_jobs,
            idempotency_window_ms: ms(self.idempotency_window),
            executor_ttl_ms: ms(self.executor_ttl),
        }
    }
}

/// Durations in the TOML file as text ("24h"), or as a number of seconds.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Secs(u64),
            Text(String),
        }
        match Text::deserialize(d)? {
            Text::Secs(n) => Ok(Duration::from_secs(n)),
            Text::Text(t) => humantime::parse_duration(t.trim()).map_err(serde::de::Error::custom),
        }
    }
}

/// What the JobService needs for `DeleteJob` and `CollectGarbage`.
#[derive(Clone, Default)]
pub struct Ctx {
    pub cfg: RetentionConfig,
    /// The leader's liveness table (pruned of forgotten executors).
    pub liveness: std::sync::Arc<Liveness>,
    /// The executors' liveness TTL (`[executors] ttl_ms`).
    pub executor_ttl: Duration,
}

/// Commits `cmd` (a collection or a deletion) and runs what follows from its outcome: the
/// DeleteOutput calls (in the background) and the pruning of forgotten executors.
pub async fn commit(
    node: &Node,
    liveness: &Liveness,
    executor_ttl: Duration,
    cmd: Command,
) -> Result<Result<Collected, Rejection>, LocalError> {
    let r = node.write_one(cmd).await?;
    let collected = match r {
        Ok(Outcome::Collected(c)) => c,
        Ok(other) => {
            return Err(tonic::Status::internal(format!("unexpected outcome {other:?}")).into())
        }
        Err(r) => return Ok(Err(r)),
    };
    after(node, liveness, executor_ttl, &collected);
    Ok(Ok(collected))
}

/// What follows a committed collection: output deletion and table pruning.
pub fn after(node: &Node, liveness: &Liveness, executor_ttl: Duration, collected: &Collected) {
    if collected.is_empty() {
        return;
    }
    let effects = {
        let applied = node.applied.read().expect("poisoned");
        Core::collected(&applied.state, collected)
    };
    for effect in effects {
        if let Effect::DeleteOutput { to, jobs } = effect {
            delete_output(node, to, jobs);
        }
    }
    for id in &collected.executors {
        // Only an entry silent for a whole TTL: a registration racing with the collection has
        // just been seen, and its entry must stay.
        liveness.forget_silent(id, executor_ttl, Instant::now());
        node.channels.forget_executor(id);
    }
    tracing::debug!(
        jobs = collected.jobs.len(),
        tombstones = collected.tombstones,
        executors = collected.executors.len(),
        "retention: collected"
    );
}

/// Asks executor `to` to delete the output of `jobs`, in the background, within
/// [`DISPATCH_TIMEOUT`]. Best effort: an executor that misses it expires the output itself.
pub fn delete_output(node: &Node, to: Worker, jobs: Vec<JobId>) {
    let channels = node.channels.clone();
    tokio::spawn(async move {
        let res = async {
            let chan = channels
                .executor(&to.addr, &to.id)
                .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
            let job_ids = jobs.iter().map(JobId::to_string).collect();
            let mut r = tonic::Request::new(pb::DeleteOutputRequest { job_ids });
            r.set_timeout(DISPATCH_TIMEOUT);
            tokio::time::timeout(DISPATCH_TIMEOUT, WorkerServiceClient::new(chan).delete_output(r))
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("DeleteOutput timed out"))?
        }
        .await;
        if let Err(s) = res {
            tracing::info!(executor = %to.id, jobs = jobs.len(), "DeleteOutput failed (the executor's output_ttl removes it): {}", s.message());
        }
    });
}

/// `triad job gc` on the leader: collections until nothing is due (at most
/// [`MAX_GC_PASS_BATCHES`]), each judged at a fresh leader time.
pub async fn gc_pass(
    node: &Node,
    liveness: &Liveness,
    cfg: &RetentionConfig,
    executor_ttl: Duration,
) -> Result<pb::CollectGarbageResponse, LocalError> {
    let policy = cfg.policy();
    let mut total = pb::CollectGarbageResponse::default();
    for _ in 0..MAX_GC_PASS_BATCHES {
        let cmd = {
            let applied = node.applied.read().expect("poisoned");
            applied.state.collection_due(
                &policy,
                now_ms(),
                super::duties::core::GC_BATCH,
                None,
                usize::MAX,
            )
        };
        let Some(cmd) = cmd else { break };
        let c = match commit(node, liveness, executor_ttl, cmd).await? {
            Ok(c) => c,
            Err(r) => return Err(crate::api::convert::rejection_to_status(&r).into()),
        };
        if c.is_empty() {
            break; // what looked due was not (judged again at apply): nothing more to gain
        }
        total.jobs_deleted += c.jobs.len() as u32;
        total.tombstones_expired += c.tombstones;
        total.executors_forgotten += c.executors.len() as u32;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_options_parse_from_toml_and_every_one_has_an_env_override() {
        let cfg: RetentionConfig = toml::from_str(
            "finished_job_ttl = \"10s\"\nmax_finished_jobs = 5\nidempotency_window = 60\nexecutor_ttl = \"0s\"",
        )
        .unwrap();
        assert_eq!(cfg.finished_job_ttl, Duration::from_secs(10));
        assert_eq!(cfg.idempotency_window, Duration::from_secs(60));
        let p = cfg.policy();
        assert_eq!((p.finished_job_ttl_ms, p.max_finished_jobs, p.executor_ttl_ms), (10_000, 5, 0));

        let mut cfg = RetentionConfig::default();
        assert_eq!(cfg.policy().finished_job_ttl_ms, 24 * 3600 * 1000);
        let env = |k: &str| {
            let v = match k {
                "TRIAD_RETENTION_FINISHED_JOB_TTL" => "5s",
                "TRIAD_RETENTION_MAX_FINISHED_JOBS" => "7",
                "TRIAD_RETENTION_IDEMPOTENCY_WINDOW" => "1m",
                "TRIAD_RETENTION_EXECUTOR_TTL" => "2h",
                _ => return None,
            };
            Some(v.to_string())
        };
        cfg.apply_env(env).unwrap();
        let p = cfg.policy();
        assert_eq!(
            (
                p.finished_job_ttl_ms,
                p.max_finished_jobs,
                p.idempotency_window_ms,
                p.executor_ttl_ms
            ),
            (5_000, 7, 60_000, 7_200_000)
        );
        // The file's text round-trips (`triad dev` and the tests write configs with it).
        let back: RetentionConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);

        let bad = |k: &'static str, v: &'static str| {
            let mut c = RetentionConfig::default();
            c.apply_env(move |q: &str| (q == k).then(|| v.to_string())).unwrap_err().to_string()
        };
        assert!(bad("TRIAD_RETENTION_FINISHED_JOB_TTL", "soon").contains("not a duration"));
        assert!(bad("TRIAD_RETENTION_MAX_FINISHED_JOBS", "-1").contains("not a number"));
        let huge = RetentionConfig { executor_ttl: MAX_RETENTION * 2, ..Default::default() };
        assert!(huge.check().unwrap_err().to_string().contains("retention.executor_ttl"));
    }
}
