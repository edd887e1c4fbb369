//! The client workload: `concurrency` workers, each a logical Jepsen process (a fresh one after
//! every `info`), issuing idempotent submits, linearizable reads and cancels at `rate` ops/s in
//! total, recording every op in the history. And the final read after healing.
//!
//! - **submit**: a new idempotency key, or (half the time when there are any) a key whose earlier
//!   submit ended `info`, retried as a new op with the same key. `ok` carries the job id.
//!   Only a definite rejection (`INVALID_ARGUMENT`, ...) is `fail`; timeouts and `UNAVAILABLE` are
//!   `info` (the submit may have been committed).
//! - **read**: a linearizable `GetJob` of a job from an earlier `ok` submit (recent ones more
//!   often); `ok` carries the job state, or `not-found` for `NOT_FOUND`.
//! - **cancel**: of a job from an earlier `ok` submit; `ok` carries the state after the cancel
//!   (`not-found` for `NOT_FOUND`, which after an `ok` submit is itself a violation).
//!
//! Every job's tasks run this very binary as a side-effect recorder (`triad-jepsen task`), with
//! `shell = false` and an absolute path.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;
use triad::api::{pb, Dialer};
use triad::client::Client;
use triad_jepsen::history::{AttemptView, Call, Deleted, JobView, OpType, TaskView};

use crate::recorder::Recorder;

/// How jobs look and how clients behave.
#[derive(Clone, Debug)]
pub struct Params {
    pub concurrency: usize,
    pub rate: f64,
    pub seed: u64,
    /// Task command: this binary, absolute.
    pub task_program: PathBuf,
    pub sink: PathBuf,
    /// Task duration range, ms.
    pub task_millis: (u64, u64),
    pub max_tasks: u32,
    pub max_attempts: u32,
    /// Probability of each op kind (reads take the rest).
    pub p_submit: f64,
    pub p_cancel: f64,
    /// Client per-call deadline and total retry time; the op's own bound is a bit more.
    pub call_timeout: Duration,
    pub retry_for: Duration,
}

impl Params {
    pub fn op_bound(&self) -> Duration {
        self.retry_for + self.call_timeout + Duration::from_secs(1)
    }
}

/// What the workers share: keys to retry and jobs to read or cancel.
#[derive(Default)]
pub struct Shared {
    next_key: u64,
    /// Keys whose last submit was `info` and that no submit acknowledged yet.
    retry: VecDeque<String>,
    /// (key, job id) of every acknowledged submit, in order.
    known: Vec<(String, String)>,
}

pub struct Workload {
    pub params: Params,
    pub rec: Arc<Recorder>,
    pub masters: Vec<String>,
    /// What the clients present: the client token over TLS.
    pub dialer: Dialer,
    pub shared: Mutex<Shared>,
}

enum Kind {
    Submit(String),
    Read(String, String),
    Cancel(String, String),
}

/// Codes after which a submit certainly did not happen (a rejected request).
fn definite(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// For reads and cancels also `FAILED_PRECONDITION`: the state machine applied the command and
/// rejected it (e.g. cancelling a job that already finished), which changed nothing.
fn definite_rejection(code: Code) -> bool {
    definite(code) || code == Code::FailedPrecondition
}

impl Workload {
    fn client(&self, worker: usize) -> anyhow::Result<Client> {
        // Each worker prefers a different master first (the client sticks to one that answers).
        let mut m = self.masters.clone();
        let n = m.len().max(1);
        m.rotate_left(worker % n);
        let mut c = Client::new(m, &self.dialer)?;
        c.call_timeout = self.params.call_timeout;
        c.retry_for = self.params.retry_for;
        // Every other worker ignores the leader hint and stays on the master it started with, as
        // a generic client does: its submissions are forwarded by followers (issue 19).
        c.follow_leader = worker.is_multiple_of(2);
        Ok(c)
    }

    fn spec(&self, rng: &mut StdRng) -> pb::JobSpec {
        let p = &self.params;
        pb::JobSpec {
            command: p.task_program.display().to_string(),
            args: vec![
                "task".into(),
                "--sink".into(),
                p.sink.display().to_string(),
                "--millis".into(),
                format!("{}..{}", p.task_millis.0, p.task_millis.1),
            ],
            env: Default::default(),
            shell: false,
            task_count: rng.gen_range(1..=p.max_tasks.max(1)),
            resources: Some(pb::Resources { slots: 1, cpu_millis: 0, memory_mib: 0 }),
            constraints: Default::default(),
            max_attempts: p.max_attempts,
            retry_backoff_ms: 200,
            timeout_ms: 0,
            priority: 0,
            ttl_after_finished_ms: None, // the cluster's retention.finished_job_ttl
            // Batch semantics (issue 16) at their defaults: lost attempts do not use up
            // max_attempts, so ordinary faults need no inflated budget.
            ..Default::default()
        }
    }

    fn choose(&self, rng: &mut StdRng) -> Kind {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let r: f64 = rng.gen();
        let pick = |s: &Shared, rng: &mut StdRng| -> Option<(String, String)> {
            if s.known.is_empty() {
                return None;
            }
            // Recent jobs change state: read them more often.
            let n = s.known.len();
            let i = if rng.gen_bool(0.6) {
                n - 1 - rng.gen_range(0..n.min(30))
            } else {
                rng.gen_range(0..n)
            };
            Some(s.known[i].clone())
        };
        if r >= self.params.p_submit {
            if let Some((k, j)) = pick(&s, rng) {
                return if r < self.params.p_submit + self.params.p_cancel {
                    Kind::Cancel(k, j)
                } else {
                    Kind::Read(k, j)
                };
            }
        }
        if !s.retry.is_empty() && rng.gen_bool(0.5) {
            let k = s.retry.pop_front().expect("non-empty");
            return Kind::Submit(k);
        }
        s.next_key += 1;
        Kind::Submit(format!("k{}", s.next_key))
    }

    /// One op; returns its completion type.
    async fn op(&self, client: &Client, process: u64, kind: Kind, rng: &mut StdRng) -> OpType {
        let bound = self.params.op_bound();
        let rec = &self.rec;
        match kind {
            Kind::Submit(key) => {
                let req = pb::SubmitJobRequest {
                    name: key.clone(),
                    idempotency_key: key.clone(),
                    spec: Some(self.spec(rng)),
                };
                rec.invoke(process, Call::Submit { key: key.clone(), job_id: None });
                let r = tokio::time::timeout(bound, client.submit_job(req)).await;
                let (t, job_id) = match r {
                    Ok(Ok(resp)) => (OpType::Ok, Some(resp.job_id)),
                    Ok(Err(s)) if definite(s.code()) => (OpType::Fail, None),
                    _ => (OpType::Info, None),
                };
                rec.record(process, t, Call::Submit { key: key.clone(), job_id: job_id.clone() });
                let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                match (t, job_id) {
                    (OpType::Ok, Some(id)) => {
                        s.retry.retain(|k| *k != key);
                        if !s.known.iter().any(|(k, _)| *k == key) {
                            s.known.push((key, id));
                        }
                    }
                    (OpType::Info, _) if !s.known.iter().any(|(k, _)| *k == key) => {
                        s.retry.push_back(key)
                    }
                    _ => {}
                }
                t
            }
            Kind::Read(key, job_id) => {
                rec.invoke(
                    process,
                    Call::Read { key: key.clone(), job_id: job_id.clone(), state: None },
                );
                let r = tokio::time::timeout(bound, client.get_job(&job_id, false)).await;
                let (t, state) = match r {
                    Ok(Ok(job)) => (OpType::Ok, Some(job.state)),
                    Ok(Err(s)) if s.code() == Code::NotFound => (OpType::Ok, Some(not_found(&s))),
                    Ok(Err(s)) if definite_rejection(s.code()) => (OpType::Fail, None),
                    _ => (OpType::Info, None),
                };
                rec.record(process, t, Call::Read { key, job_id, state });
                t
            }
            Kind::Cancel(key, job_id) => {
                rec.invoke(
                    process,
                    Call::Cancel { key: key.clone(), job_id: job_id.clone(), state: None },
                );
                let r = tokio::time::timeout(bound, client.cancel_job(&job_id)).await;
                let (t, state) = match r {
                    Ok(Ok(resp)) => (OpType::Ok, Some(resp.state)),
                    Ok(Err(s)) if s.code() == Code::NotFound => (OpType::Ok, Some(not_found(&s))),
                    Ok(Err(s)) if definite_rejection(s.code()) => (OpType::Fail, None),
                    _ => (OpType::Info, None),
                };
                rec.record(process, t, Call::Cancel { key, job_id, state });
                t
            }
        }
    }

    /// One worker until `until` (no new op starts after it; the last one completes, bounded).
    pub async fn worker(self: Arc<Self>, worker: usize, until: Instant) {
        let client = match self.client(worker) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("worker {worker}: {e:#}");
                return;
            }
        };
        let mut rng = StdRng::seed_from_u64(
            self.params.seed.wrapping_mul(1_000_003).wrapping_add(worker as u64),
        );
        let mut process = self.rec.new_process();
        // Each worker issues rate/concurrency ops per second on average (exponential gaps).
        let mean = self.params.concurrency as f64 / self.params.rate.max(0.001);
        let mut next = Instant::now();
        loop {
            let gap: f64 = -mean * (1.0 - rng.gen::<f64>()).ln();
            next += Duration::from_secs_f64(gap.min(10.0 * mean));
            // Slow ops (faults) delay the schedule; catch up with at most a second of backlog.
            let now = Instant::now();
            if next + Duration::from_secs(1) < now {
                next = now;
            }
            if next >= until {
                return;
            }
            tokio::time::sleep_until(next.into()).await;
            let kind = self.choose(&mut rng);
            if self.op(&client, process, kind, &mut rng).await == OpType::Info {
                process = self.rec.new_process();
            }
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).known.len()
    }

    /// Every (key, job id) an `ok` submit returned.
    pub fn acknowledged_jobs(&self) -> Vec<(String, String)> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).known.clone()
    }
}

/// Retention (issue 14): a deleted job's tombstone, from the metadata of a NOT_FOUND.
fn tombstone(s: &tonic::Status) -> Option<Deleted> {
    use triad::master::retention::{DELETED_AT, DELETED_STATE, FINISHED_AT};
    let md = s.metadata();
    let text = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    Some(Deleted {
        state: text(DELETED_STATE)?,
        finished_at_ms: text(FINISHED_AT)?.parse().ok()?,
        deleted_at_ms: text(DELETED_AT)?.parse().ok()?,
    })
}

/// What a NOT_FOUND observed: `deleted` (retention deleted the job) or `not-found`.
fn not_found(s: &tonic::Status) -> String {
    if tombstone(s).is_some() { "deleted" } else { "not-found" }.to_string()
}

fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

/// Polls (linearizable `ListJobs`) until every job is terminal or `deadline` passes; returns
/// (jobs, non-terminal jobs) from the last successful poll.
pub async fn wait_terminal(
    dialer: &Dialer,
    masters: Vec<String>,
    deadline: Instant,
) -> (usize, usize) {
    let mut client = match Client::new(masters, dialer) {
        Ok(c) => c,
        Err(_) => return (0, 0),
    };
    client.call_timeout = Duration::from_secs(3);
    client.retry_for = Duration::from_secs(5);
    let mut last = (0, usize::MAX);
    loop {
        if let Ok(Ok(jobs)) =
            tokio::time::timeout(Duration::from_secs(10), client.list_all_jobs("", false)).await
        {
            let live = jobs.iter().filter(|j| !is_terminal(&j.state)).count();
            last = (jobs.len(), live);
            if live == 0 {
                return last;
            }
        }
        if Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

/// The final read: every job (linearizable `ListJobs`), each with its tasks and attempts
/// (linearizable `GetJob`), recorded as one `final-read` op. Retried within `bound`; `fail` if
/// the cluster never answered.
pub async fn final_read(
    rec: &Recorder,
    dialer: &Dialer,
    masters: Vec<String>,
    acknowledged: Vec<(String, String)>,
    bound: Duration,
) -> Option<usize> {
    let process = rec.new_process();
    rec.invoke(process, Call::FinalRead { jobs: vec![] });
    let deadline = Instant::now() + bound;
    let mut client = Client::new(masters, dialer).ok()?;
    client.call_timeout = Duration::from_secs(5);
    client.retry_for = Duration::from_secs(10);
    let client = Arc::new(client);
    loop {
        match read_all(client.clone(), &acknowledged).await {
            Ok(jobs) => {
                let n = jobs.len();
                rec.record(process, OpType::Ok, Call::FinalRead { jobs });
                return Some(n);
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("final read: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                eprintln!("final read failed: {e}");
                rec.record(process, OpType::Fail, Call::FinalRead { jobs: vec![] });
                return None;
            }
        }
    }
}

/// Every job listed, and every acknowledged job that is not (retention may have deleted it:
/// its tombstone is recorded, as a job in state `deleted`; one without is left out, i.e. lost).
/// The chaos cron's jobs are not the clients' (the `cron_once` checker judges them).
async fn read_all(
    client: Arc<Client>,
    acknowledged: &[(String, String)],
) -> Result<Vec<JobView>, String> {
    let list = client.list_all_jobs("", false).await.map_err(|s| format!("listing jobs: {s}"))?;
    let mut keys: std::collections::BTreeMap<String, String> =
        acknowledged.iter().map(|(k, id)| (id.clone(), k.clone())).collect();
    for j in list.iter().filter(|j| j.name != crate::watch::CRON) {
        keys.insert(j.id.clone(), j.idempotency_key.clone());
    }
    let keys = Arc::new(keys);
    let ids: Vec<String> = keys.keys().cloned().collect();
    // A few readers in parallel; each job is one linearizable GetJob.
    let chunks: Vec<Vec<String>> =
        ids.chunks(ids.len().div_ceil(8).max(1)).map(|c| c.to_vec()).collect();
    let mut handles = Vec::new();
    for chunk in chunks {
        let (client, keys) = (client.clone(), keys.clone());
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for id in chunk {
                match client.get_job(&id, false).await {
                    Ok(job) => out.push(job_view(job)),
                    Err(s) if s.code() == Code::NotFound => {
                        if let Some(t) = tombstone(&s) {
                            let key = keys.get(&id).cloned().unwrap_or_default();
                            out.push(JobView {
                                id,
                                key,
                                state: "deleted".into(),
                                tasks: vec![],
                                deleted: Some(t),
                            });
                        }
                    }
                    Err(s) => return Err(format!("reading job {id}: {s}")),
                }
            }
            Ok::<_, String>(out)
        }));
    }
    let mut jobs = Vec::new();
    for h in handles {
        jobs.extend(h.await.map_err(|e| e.to_string())??);
    }
    Ok(jobs)
}

fn job_view(j: pb::Job) -> JobView {
    JobView {
        deleted: None,
        id: j.id,
        key: j.idempotency_key,
        state: j.state,
        tasks: j
            .tasks
            .into_iter()
            .map(|t| TaskView {
                index: t.index,
                state: t.state,
                attempts: t
                    .attempts
                    .into_iter()
                    .map(|a| AttemptView {
                        number: a.number,
                        token: a.token,
                        executor: a.executor,
                        state: a.state,
                    })
                    .collect(),
            })
            .collect(),
    }
}
