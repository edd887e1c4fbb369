//! `triad bench`: load generators for SPEC "Performance targets". Each prints a one-line summary
//! and a table (rate, p50/p99/p999 from an HDR histogram, errors), or JSON with `-o json`.
//! Client-side benches talk to the leader directly (found through `cluster status`), so the
//! figures measure the cluster, not the forwarding hop. `failover` (in its own module) is the
//! exception: it starts its own cluster and goes through the failing-over client on purpose.

pub mod etcd;
pub mod failover;
pub mod http;
pub mod plot;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::output::{json, table, Format};
use crate::api::pb;
use crate::client::Client;
use crate::scheduler::{self, ExecutorView, PendingTask, PlanInput};
use crate::state::{Assignment, Resources};

#[derive(Serialize, Debug)]
pub struct Report {
    pub bench: String,
    pub summary: String,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rate_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub extra: BTreeMap<String, String>,
    /// Every measurement in order, when there are few enough to list (failover rounds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples_ms: Vec<f64>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

impl Report {
    fn from_hist(
        bench: &str,
        h: &Histogram<u64>,
        errors: u64,
        elapsed: Duration,
        extra: BTreeMap<String, String>,
    ) -> Report {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let ops = h.len();
        let rate = ops as f64 / elapsed.as_secs_f64();
        Report {
            bench: bench.into(),
            summary: format!(
                "{bench}: {ops} ops in {:.1}s = {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, {errors} errors",
                elapsed.as_secs_f64(),
                ms(0.5),
                ms(0.99),
                ms(0.999)
            ),
            ops,
            errors,
            seconds: elapsed.as_secs_f64(),
            rate_per_sec: rate,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
            extra,
            samples_ms: Vec::new(),
        }
    }

    pub fn print(&self, format: Format) -> anyhow::Result<()> {
        match format {
            Format::Json => json(self),
            Format::Table => {
                println!("{}", self.summary);
                // Slow benches (failover: a kill every few seconds) would show "0/s".
                let rate = if self.rate_per_sec < 10.0 {
                    format!("{:.2}/s", self.rate_per_sec)
                } else {
                    format!("{:.0}/s", self.rate_per_sec)
                };
                let mut rows = vec![vec![
                    rate,
                    format!("{:.2}", self.p50_ms),
                    format!("{:.2}", self.p99_ms),
                    format!("{:.2}", self.p999_ms),
                    format!("{:.2}", self.max_ms),
                    self.errors.to_string(),
                ]];
                rows[0].extend(self.extra.values().cloned());
                let mut header = vec!["RATE", "P50 MS", "P99 MS", "P999 MS", "MAX MS", "ERRORS"];
                header.extend(self.extra.keys().map(String::as_str));
                println!("{}", table(&header, &rows));
                Ok(())
            }
        }
    }
}

use crate::api::ServerName;

/// The leader's address, so the bench talks to it directly.
pub async fn leader_client(masters: &Client) -> anyhow::Result<Client> {
    let s = masters.cluster_status().await.map_err(|e| anyhow::anyhow!(super::status_line(&e)))?;
    anyhow::ensure!(s.leader_id != 0, "the cluster has no leader");
    let mut list = vec![s.leader_addr.clone()];
    list.extend(masters.masters().iter().filter(|m| **m != s.leader_addr).cloned());
    Client::new(list, masters.dialer())
}

/// A trivial job. `placeable: false` adds a constraint no executor has, so submit-bench jobs
/// measure the durable submission path without occupying executors afterwards.
fn trivial_job(key: String, placeable: bool) -> pb::SubmitJobRequest {
    let mut constraints = std::collections::HashMap::new();
    if !placeable {
        constraints.insert("triad-bench".to_string(), "never-placed".to_string());
    }
    pb::SubmitJobRequest {
        name: "bench".into(),
        idempotency_key: key,
        spec: Some(pb::JobSpec {
            command: "true".into(),
            task_count: 1,
            constraints,
            ..Default::default()
        }),
    }
}

/// A job an executor runs: one task printing one line (so output accumulates on executors and
/// their retention is exercised).
fn running_job(key: String) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        name: "bench".into(),
        idempotency_key: key,
        spec: Some(pb::JobSpec {
            command: "echo".into(),
            args: vec!["triad bench soak: a line of output".into()],
            task_count: 1,
            ..Default::default()
        }),
    }
}

/// How `bench submit` sends its submissions.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// One SubmitJobs stream per connection, shared by its workers.
    Stream,
    /// One SubmitJob call per submission.
    Unary,
    /// One SubmitJob call per submission, as a generic gRPC client makes them (issue 19): spread
    /// round-robin over every master given (two in three land on a follower, which forwards
    /// them), no leader hint followed, no retry.
    UnaryAny,
    /// One `POST /v1/jobs` per submission to the HTTP API given by `--http`.
    Http,
}

/// Closed-loop submissions: `concurrency` workers, each submitting as soon as its last
/// submission was acknowledged, optionally paced to `rate` per second in total.
pub async fn submit(
    client: Client,
    load: Load,
    api: Api,
    run_tasks: bool,
) -> anyhow::Result<Report> {
    let job = move |key: String| if run_tasks { running_job(key) } else { trivial_job(key, false) };
    if api == Api::UnaryAny {
        let mut report = unary_any(&client, load, job).await?;
        report.extra.insert("API".into(), "unary-any".into());
        report.extra.insert("TASKS".into(), if run_tasks { "run" } else { "never placed" }.into());
        return Ok(report);
    }
    // One client (one HTTP/2 connection) per `--connections`, the workers spread over them.
    let first = leader_client(&client).await?;
    let mut clients = (1..load.connections.max(1))
        .map(|_| Client::new(first.masters().to_vec(), client.dialer()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    clients.insert(0, first);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut report = match api {
        Api::Http => anyhow::bail!("--api http needs --http URL"),
        Api::UnaryAny => unreachable!("handled above"),
        Api::Unary => {
            let clients = Arc::new(clients);
            closed_loop("submit", load, move |w, i| {
                let (clients, key) = (clients.clone(), format!("{run}-{w}-{i}"));
                async move { clients[w % clients.len()].submit_job(job(key)).await.is_ok() }
            })
            .await
        }
        Api::Stream => {
            let mut pipelines = Vec::new();
            for c in &clients {
                pipelines
                    .push(c.pipeline().await.map_err(|e| anyhow::anyhow!(super::status_line(&e)))?);
            }
            let pipelines = Arc::new(pipelines);
            closed_loop("submit", load, move |w, i| {
                let (pipelines, key) = (pipelines.clone(), format!("{run}-{w}-{i}"));
                async move { pipelines[w % pipelines.len()].submit(job(key)).await.is_ok() }
            })
            .await
        }
    };
    report.extra.insert("API".into(), format!("{api:?}").to_lowercase());
    report.extra.insert("TASKS".into(), if run_tasks { "run" } else { "never placed" }.into());
    Ok(report)
}

/// Deadline of one submission in `--api unary-any` (a generic client's deadline).
const UNARY_ANY_TIMEOUT: Duration = Duration::from_secs(5);

/// `--api unary-any`: one channel per master per `--connections`; worker `w`'s `i`-th call goes
/// to master `(w + i) % masters`, whoever leads, and is not retried (a failure is an error).
async fn unary_any(
    client: &Client,
    load: Load,
    job: impl Fn(String) -> pb::SubmitJobRequest + Copy + Send + Sync + 'static,
) -> anyhow::Result<Report> {
    let masters = client.masters().to_vec();
    let conns = (0..load.connections.max(1))
        .map(|_| masters.iter().map(|m| client.dialer().master(m)).collect())
        .collect::<anyhow::Result<Vec<Vec<_>>>>()?;
    let conns = Arc::new(conns);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut report = closed_loop("submit", load, move |w, i| {
        let (conns, key) = (conns.clone(), format!("{run}-{w}-{i}"));
        async move {
            let per_master = &conns[w % conns.len()];
            let chan = per_master[(w + i as usize) % per_master.len()].clone();
            let mut req = tonic::Request::new(job(key));
            req.set_timeout(UNARY_ANY_TIMEOUT);
            Client::jobs(chan).submit_job(req).await.is_ok()
        }
    })
    .await;
    report.extra.insert("MASTERS".into(), masters.len().to_string());
    Ok(report)
}

/// The shape of a closed-loop load: how many workers, for how long, paced or not.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Load {
    /// Concurrent closed loops.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Pace to this many operations per second in total (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Client connections (one HTTP/2 connection each); worker `w` uses connection `w % N`.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
}

/// How long a closed-loop worker pauses after a failed operation.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Runs `op(worker, i)` in `concurrency` closed loops (each worker issues its next operation as
/// soon as the last returned, or at its paced slot) for `duration`, and reports the latency of
/// the operations that succeeded (`op` returns whether it did). The one load generator behind
/// `bench submit` and `bench etcd-put`, so the two figures are comparable.
pub async fn closed_loop<F, Fut>(name: &str, load: Load, op: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let hist = Arc::new(Mutex::new(new_hist()));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let per_worker = load.rate.map(|r| Duration::from_secs_f64(load.concurrency as f64 / r));
    let mut tasks = Vec::new();
    for w in 0..load.concurrency {
        let (hist, errors, stop, op) = (hist.clone(), errors.clone(), stop.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = new_hist();
            let mut i = 0u64;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(p) = per_worker {
                    tokio::time::sleep_until(next.into()).await;
                    next += p;
                }
                let t = Instant::now();
                if op(w, i).await {
                    let _ = local.record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    // A target that fails fast (a broken stream, a refusing master) is not
                    // hammered in a tight loop that would take the CPU the cluster needs.
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                i += 1;
            }
            hist.lock().expect("poisoned").add(&local).expect("same bounds");
        }));
    }
    tokio::time::sleep(load.duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let mut extra = BTreeMap::new();
    extra.insert("CONCURRENCY".into(), load.concurrency.to_string());
    extra.insert("CONNECTIONS".into(), load.connections.max(1).to_string());
    let h = hist.lock().expect("poisoned");
    Report::from_hist(name, &h, errors.load(Ordering::Relaxed), elapsed, extra)
}

/// Submit → first attempt running, and submit → succeeded, for trivial tasks, one at a time.
/// How often `bench e2e` reads the job: the figures are late by at most this (plus a timer tick).
const E2E_POLL: Duration = Duration::from_millis(1);

/// Submit → running, one job at a time on an idle cluster, three ways:
/// - `process running`: the task's own process reads the clock first thing (`date +%s%N`, so the
///   figure includes its exec and start-up) and prints it; read back from the executor after the
///   job ends. Same machine, same clock as the submit instant (the bench runs beside the cluster).
/// - `Started committed`: the leader's state shows the attempt started (the executor's report
///   went through Raft); polled from the leader every [`E2E_POLL`].
/// - `succeeded`: the job's end is committed.
pub async fn e2e(client: Client, count: usize) -> anyhow::Result<Vec<Report>> {
    let client = leader_client(&client).await?;
    let (mut process, mut running, mut done) = (new_hist(), new_hist(), new_hist());
    let mut errors = 0;
    let mut workers = Workers::new();
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        let wall = std::time::SystemTime::now();
        let mut job = trivial_job(uuid::Uuid::new_v4().to_string(), true);
        if let Some(spec) = job.spec.as_mut() {
            spec.command = "date".into();
            spec.args = vec!["+%s%N".into()];
        }
        let r = match client.submit_job(job).await {
            Ok(r) => r,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        let Some(finished) = watch_e2e_job(&client, &r.job_id, t, &mut running, &mut done).await?
        else {
            errors += 1;
            continue;
        };
        // The process's own clock reading, from its stdout on the executor that ran it.
        let Some(attempt) = finished.tasks.first().and_then(|t| t.attempts.last()) else {
            continue;
        };
        let ran_at = workers.process_clock(&client, &r.job_id, attempt).await?;
        let submitted = wall.duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let _ = process.record((ran_at.saturating_sub(submitted) / 1000).max(1) as u64);
    }
    let elapsed = started.elapsed();
    Ok(vec![
        Report::from_hist(
            "e2e submit->process running",
            &process,
            errors,
            elapsed,
            BTreeMap::new(),
        ),
        Report::from_hist(
            "e2e submit->Started committed",
            &running,
            errors,
            elapsed,
            BTreeMap::new(),
        ),
        Report::from_hist("e2e submit->succeeded", &done, errors, elapsed, BTreeMap::new()),
    ])
}

/// Polls job `job_id`, submitted at `t`, every [`E2E_POLL`] until it ends; records submit →
/// first attempt started in `running` and submit → succeeded in `done`. `None` if it failed, was
/// cancelled or did not succeed within 30 s.
async fn watch_e2e_job(
    client: &Client,
    job_id: &str,
    t: Instant,
    running: &mut Histogram<u64>,
    done: &mut Histogram<u64>,
) -> anyhow::Result<Option<pb::Job>> {
    let mut saw_running = false;
    let deadline = t + Duration::from_secs(30);
    loop {
        // A stale read from the leader: its applied state is the committed state as soon as the
        // Started report commits, and the read costs no Raft round (which would load the
        // very cluster being measured).
        let j = client
            .get_job(job_id, true)
            .await
            .map_err(|e| anyhow::anyhow!(super::status_line(&e)))?;
        let started_attempt =
            j.tasks.iter().any(|t| t.attempts.iter().any(|a| a.started_at_ms != 0));
        if !saw_running && (started_attempt || j.state != "pending") {
            saw_running = true;
            let _ = running.record(t.elapsed().as_micros().max(1) as u64);
        }
        if j.state == "succeeded" {
            let _ = done.record(t.elapsed().as_micros().max(1) as u64);
            return Ok(Some(j));
        }
        if matches!(j.state.as_str(), "failed" | "cancelled") || Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(E2E_POLL).await;
    }
}

/// Worker API clients of the executors, by executor id, connected as they are first needed.
struct Workers(
    HashMap<
        String,
        crate::api::pb::worker_service_client::WorkerServiceClient<crate::api::Channel>,
    >,
);

impl Workers {
    fn new() -> Workers {
        Workers(HashMap::new())
    }

    /// The clock reading (ns since the epoch) that `attempt` of task 0 of `job_id` printed
    /// first thing, read from the executor that ran it.
    async fn process_clock(
        &mut self,
        client: &Client,
        job_id: &str,
        attempt: &pb::Attempt,
    ) -> anyhow::Result<u128> {
        use crate::api::pb::worker_service_client::WorkerServiceClient;
        if !self.0.contains_key(&attempt.executor) {
            let list = super::executors::list_executors(client)
                .await
                .map_err(|e| anyhow::anyhow!(super::status_line(&e)))?;
            for e in list {
                self.0.insert(
                    e.id.clone(),
                    WorkerServiceClient::new(
                        client.dialer().channel(&e.addr, &ServerName::Executor(e.id.clone()))?,
                    ),
                );
            }
        }
        let worker = self
            .0
            .get_mut(&attempt.executor)
            .with_context(|| format!("executor {} is unknown", attempt.executor))?;
        let out = worker
            .read_output(pb::ReadOutputRequest {
                job_id: job_id.to_owned(),
                task_index: 0,
                attempt: attempt.number,
                stderr: false,
                offset: 0,
                max_bytes: 0,
                tail_lines: 0,
            })
            .await
            .map_err(|e| anyhow::anyhow!("reading the task's output: {}", super::status_line(&e)))?
            .into_inner();
        String::from_utf8_lossy(&out.data).trim().parse::<u128>().with_context(|| {
            format!("the task printed {:?}, not a time", String::from_utf8_lossy(&out.data))
        })
    }
}

/// The pure planner's throughput on a synthetic state: `executors` × `tasks` pending.
pub fn placement(executors: usize, tasks: usize, rounds: usize) -> Report {
    let labels = |i: usize| {
        let mut m = BTreeMap::new();
        m.insert("zone".to_string(), format!("z{}", i % 3));
        m
    };
    let input = PlanInput {
        executors: (0..executors)
            .map(|i| ExecutorView {
                id: format!("exec-{i:05}"),
                capacity: Resources { slots: 16, cpu_millis: 16_000, memory_mib: 65_536 },
                used: Resources::default(),
                labels: labels(i),
                placeable: true,
            })
            .collect(),
        pending: (0..tasks)
            .map(|i| PendingTask {
                job: uuid::Uuid::from_u128(i as u128 / 4),
                index: (i % 4) as u32,
                priority: (i % 3) as i32,
                seq: (i / 4) as u64,
                demand: Resources {
                    slots: 1,
                    cpu_millis: 500,
                    memory_mib: 256 * (1 + (i % 4) as u64),
                },
                constraints: if i % 5 == 0 { labels(i) } else { BTreeMap::new() },
                job_headroom: u32::MAX,
            })
            .collect(),
    };
    let mut h = new_hist();
    let mut placed = 0usize;
    let started = Instant::now();
    for _ in 0..rounds {
        let t = Instant::now();
        let p = scheduler::plan(&input, usize::MAX);
        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
        placed += p.assignments.len();
        std::hint::black_box::<&Vec<Assignment>>(&p.assignments);
    }
    let elapsed = started.elapsed();
    let per_sec = placed as f64 / elapsed.as_secs_f64();
    let mut r = Report::from_hist("placement", &h, 0, elapsed, BTreeMap::new());
    r.summary = format!(
        "placement: {executors} executors x {tasks} pending tasks: {placed} placed in {rounds} rounds, {per_sec:.0} tasks placed/s, round p50 {:.2} ms",
        r.p50_ms
    );
    r.extra.insert("TASKS PLACED/S".into(), format!("{per_sec:.0}"));
    r.rate_per_sec = per_sec;
    r
}

/// CPU time (user + system) of a process so far, from /proc (Linux).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the command name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// How long a simulated executor's stream may take to open, and at the end of a run how long
/// beats still in flight may take to be answered.
const SIM_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Heartbeat streams a connection opens at a time while the bench sets up.
const SIM_OPENS_PER_CONNECTION: usize = 4;

/// One simulated executor's heartbeat stream, as one connection's worker drives it.
#[derive(Default)]
struct SimBeats {
    /// The request side of its open stream (none: closed or broken; reopened at its next beat).
    tx: Option<tokio::sync::mpsc::Sender<pb::HeartbeatRequest>>,
    /// When its unanswered beat was sent.
    sent: Option<Instant>,
    /// The number of its last beat (numbered like a real executor's, see `fencing`).
    seq: u64,
    /// Which of its streams `tx` belongs to: answers from a stream it replaced are ignored.
    stream: u64,
}

/// The answers of simulated executor `i`'s stream number `n`, tagged `(i, n)`; the stream's end
/// is an error.
type SimAnswers = std::pin::Pin<
    Box<
        dyn futures::Stream<Item = ((usize, u64), Result<pb::HeartbeatResponse, tonic::Status>)>
            + Send,
    >,
>;

/// Opens simulated executor `i`'s heartbeat stream number `n` on `chan` (no beat sent yet).
async fn open_sim_stream(
    chan: crate::api::Channel,
    i: usize,
    n: u64,
) -> Result<(tokio::sync::mpsc::Sender<pb::HeartbeatRequest>, SimAnswers), tonic::Status> {
    use crate::api::pb::executor_service_client::ExecutorServiceClient;
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut client = ExecutorServiceClient::new(chan);
    let answers = tokio::time::timeout(
        SIM_OPEN_TIMEOUT,
        client.heartbeat_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("opening a heartbeat stream"))??
    .into_inner();
    let ended = futures::stream::once(async move {
        ((i, n), Err(tonic::Status::unavailable("the leader ended the heartbeat stream")))
    });
    Ok((tx, Box::pin(answers.map(move |r| ((i, n), r)).chain(ended))))
}

/// `executors` simulated executors register (capacity 0, so nothing is placed on them) and
/// heartbeat at `hz` each for `duration` the way executors do: each holds one heartbeat stream to
/// the leader (multiplexed over `connections` channels) and sends one beat per period on it,
/// paced evenly and without waiting for other executors' answers. Reports the beat round trip
/// (sent → its answer; no answer before the executor's next beat is an error, and the stream is
/// reopened) and the leader's CPU share (sampled from /proc when the leader runs on this
/// machine), measured once every stream is open.
pub async fn heartbeats(
    client: Client,
    executors: usize,
    hz: f64,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<Report> {
    // Thousands of simulated executors would each need a certificate naming their id (an
    // executor acts only as itself); the heartbeat cost is measured on an insecure cluster.
    anyhow::ensure!(
        !client.dialer().credentials().is_tls(),
        "bench heartbeats simulates executors under made-up ids, which a TLS cluster refuses \
         (an executor acts only as the id its certificate names): run it against `triad dev \
         --insecure` with --insecure"
    );
    let status =
        client.cluster_status().await.map_err(|e| anyhow::anyhow!(super::status_line(&e)))?;
    anyhow::ensure!(status.leader_id != 0, "the cluster has no leader");
    anyhow::ensure!(hz > 0.0, "--hz must be positive");
    let leader_pid =
        status.masters.iter().find(|m| m.id == status.leader_id).map(|m| m.pid).unwrap_or(0);
    let chans: Vec<_> = (0..connections.max(1))
        .map(|_| client.dialer().master(&status.leader_addr))
        .collect::<Result<_, _>>()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let ids: Vec<String> = (0..executors).map(|i| format!("sim-{run}-{i:05}")).collect();
    let epochs = register_sims(&chans, &ids).await?;
    // Each connection drives `per` executors.
    let per = executors.div_ceil(connections.max(1)).max(1);
    let streams = open_sim_streams(&chans, &ids, per).await?;
    let period = Duration::from_secs_f64(1.0 / hz);
    let cpu0 = cpu_time(leader_pid);
    let started = Instant::now();
    let end = started + duration;
    let mut workers = Vec::new();
    for ((w, chunk), opened) in ids.chunks(per).enumerate().zip(streams) {
        let my_epochs = epochs[w * per..(w * per + chunk.len())].to_vec();
        let conn =
            SimConnection::new(chans[w % chans.len()].clone(), chunk.to_vec(), my_epochs, opened);
        workers.push(tokio::spawn(conn.run(period, end)));
    }
    let mut hist = new_hist();
    let mut errors = 0;
    for w in workers {
        let (local, errs) = w.await?;
        hist.add(&local).expect("same bounds");
        errors += errs;
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu0, cpu_time(leader_pid)) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64() / elapsed.as_secs_f64() * 100.0),
        _ => None,
    };
    deregister_sims(&chans, &ids, &epochs).await;
    // The rate is over the window beats were sent in (not the answers still in flight after it).
    Ok(heartbeats_report(executors, hz, cpu, &hist, errors, elapsed.min(duration)))
}

/// Registers the simulated executors `ids` (capacity 0) from 64 tasks at once, so group commit
/// batches them; returns their epochs, in the order of `ids`.
async fn register_sims(chans: &[crate::api::Channel], ids: &[String]) -> anyhow::Result<Vec<u64>> {
    use crate::api::pb::executor_service_client::ExecutorServiceClient;
    let executors = ids.len();
    let epochs = Arc::new(Mutex::new(vec![0u64; executors]));
    let mut regs = Vec::new();
    for (w, chunk) in ids.chunks(executors.div_ceil(64).max(1)).enumerate() {
        let (chunk, chan, epochs) =
            (chunk.to_vec(), chans[w % chans.len()].clone(), epochs.clone());
        let base = w * executors.div_ceil(64).max(1);
        regs.push(tokio::spawn(async move {
            for (j, id) in chunk.into_iter().enumerate() {
                let r = ExecutorServiceClient::new(chan.clone())
                    .register(pb::RegisterRequest {
                        executor_id: id,
                        addr: "127.0.0.1:9".into(),
                        capacity: Some(pb::Resources::default()),
                        labels: Default::default(),
                        seq: 0,
                    })
                    .await?;
                epochs.lock().expect("poisoned")[base + j] = r.into_inner().epoch;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for r in regs {
        r.await?.map_err(|e| {
            anyhow::anyhow!("registering simulated executors: {}", super::status_line(&e))
        })?;
    }
    let epochs = epochs.lock().expect("poisoned").clone();
    Ok(epochs)
}

/// An open heartbeat stream of one simulated executor: its request side and its answers.
type SimStream = (tokio::sync::mpsc::Sender<pb::HeartbeatRequest>, SimAnswers);

/// Opens every simulated executor's stream, `per` executors to a connection, before the
/// measured steady state. A few at a time per connection: 10,000 opens at once stall a leader on
/// a loaded machine long enough for its followers to elect another (real executors open theirs
/// spread over a beat).
async fn open_sim_streams(
    chans: &[crate::api::Channel],
    ids: &[String],
    per: usize,
) -> anyhow::Result<Vec<Vec<SimStream>>> {
    use futures::StreamExt;
    let mut opened = Vec::new();
    for (w, chunk) in ids.chunks(per).enumerate() {
        let chan = chans[w % chans.len()].clone();
        let opens = futures::stream::iter(
            (0..chunk.len()).map(move |i| open_sim_stream(chan.clone(), i, 0)),
        )
        .buffered(SIM_OPENS_PER_CONNECTION);
        opened.push(tokio::spawn(opens.collect::<Vec<_>>()));
    }
    let mut streams = Vec::new();
    for o in opened {
        let all: Result<Vec<_>, _> = o.await?.into_iter().collect();
        streams.push(all.map_err(|e| {
            anyhow::anyhow!("opening heartbeat streams: {}", super::status_line(&e))
        })?);
    }
    Ok(streams)
}

/// Leaves cleanly: deregisters the simulated executors (failures ignored; they expire anyway).
async fn deregister_sims(chans: &[crate::api::Channel], ids: &[String], epochs: &[u64]) {
    use crate::api::pb::executor_service_client::ExecutorServiceClient;
    for (i, id) in ids.iter().enumerate() {
        let _ = ExecutorServiceClient::new(chans[i % chans.len()].clone())
            .deregister(pb::DeregisterRequest { executor_id: id.clone(), epoch: epochs[i] })
            .await;
    }
}

/// The `bench heartbeats` report: round trips over the `window` beats were sent in.
fn heartbeats_report(
    executors: usize,
    hz: f64,
    cpu: Option<f64>,
    hist: &Histogram<u64>,
    errors: u64,
    window: Duration,
) -> Report {
    let mut extra = BTreeMap::new();
    extra.insert("EXECUTORS".into(), executors.to_string());
    extra.insert("LEADER CPU %".into(), cpu.map_or("n/a".into(), |c| format!("{c:.1}")));
    let mut r = Report::from_hist("heartbeats", hist, errors, window, extra);
    r.summary = format!(
        "heartbeats: {executors} executors at {hz} Hz: {:.0} heartbeats/s, p50 {:.2} ms, p99 {:.2} ms, leader CPU {} of one core, {} errors",
        r.rate_per_sec,
        r.p50_ms,
        r.p99_ms,
        cpu.map_or("n/a".into(), |c| format!("{c:.1} %")),
        r.errors
    );
    r
}

/// One connection's share of the simulated executors: executor `i` of `n` beats at offset
/// `i/n` within each period, on its own stream; answers arrive on any of them.
struct SimConnection {
    /// The connection every stream of this share is opened on.
    chan: crate::api::Channel,
    /// The executors' ids; index `i` here is `sims[i]`.
    ids: Vec<String>,
    /// Their epochs from registration.
    epochs: Vec<u64>,
    /// Their streams and unanswered beats.
    sims: Vec<SimBeats>,
    /// The answers of every stream opened, tagged with executor and stream number.
    answers: futures::stream::SelectAll<SimAnswers>,
    /// Round trips of answered beats.
    hist: Histogram<u64>,
    /// Unanswered beats, failed sends and failed reopens.
    errors: u64,
}

impl SimConnection {
    fn new(
        chan: crate::api::Channel,
        ids: Vec<String>,
        epochs: Vec<u64>,
        opened: Vec<SimStream>,
    ) -> SimConnection {
        let mut sims: Vec<SimBeats> = Vec::with_capacity(ids.len());
        let mut answers = futures::stream::SelectAll::new();
        for (tx, a) in opened {
            sims.push(SimBeats { tx: Some(tx), sent: None, stream: 0, seq: 0 });
            answers.push(a);
        }
        SimConnection { chan, ids, epochs, sims, answers, hist: new_hist(), errors: 0 }
    }

    /// Beats until `end`, then collects the answers still in flight (for at most
    /// [`SIM_OPEN_TIMEOUT`]); a beat left unanswered is an error. Returns the round trips and
    /// the error count.
    async fn run(mut self, period: Duration, end: Instant) -> (Histogram<u64>, u64) {
        use futures::StreamExt;
        let step = period.div_f64(self.ids.len().max(1) as f64);
        let mut next = Instant::now();
        let mut i = 0;
        let mut closing: Option<Instant> = None;
        loop {
            if closing.is_none() && Instant::now() >= end {
                closing = Some(Instant::now() + SIM_OPEN_TIMEOUT);
            }
            if let Some(until) = closing {
                if self.sims.iter().all(|s| s.sent.is_none()) || Instant::now() >= until {
                    break;
                }
            }
            let beat_at = closing.unwrap_or(next);
            tokio::select! {
                _ = tokio::time::sleep_until(beat_at.into()) => {
                    if closing.is_some() {
                        continue;
                    }
                    next += step;
                    self.beat(i).await;
                    i = (i + 1) % self.sims.len();
                }
                Some(((j, n), r)) = self.answers.next() => self.answer(j, n, r),
            }
        }
        self.errors += self.sims.iter().filter(|s| s.sent.is_some()).count() as u64;
        (self.hist, self.errors)
    }

    /// Sends executor `i`'s next beat, first reopening its stream if its last beat went
    /// unanswered for a whole period or the stream broke.
    async fn beat(&mut self, i: usize) {
        let s = &mut self.sims[i];
        if s.sent.take().is_some() {
            // Its last beat went unanswered for a whole period: drop that stream.
            self.errors += 1;
            s.tx = None;
        }
        if s.tx.is_none() {
            match open_sim_stream(self.chan.clone(), i, s.stream + 1).await {
                Ok((tx, a)) => {
                    s.stream += 1;
                    s.tx = Some(tx);
                    self.answers.push(a);
                }
                Err(_) => self.errors += 1,
            }
        }
        if let Some(tx) = &s.tx {
            s.seq += 1;
            let req = pb::HeartbeatRequest {
                executor_id: self.ids[i].clone(),
                epoch: self.epochs[i],
                attempts: Vec::new(),
                seq: s.seq,
                unhealthy: String::new(),
            };
            match tx.try_send(req) {
                Ok(()) => s.sent = Some(Instant::now()),
                Err(_) => {
                    self.errors += 1;
                    s.tx = None;
                }
            }
        }
    }

    /// Takes an answer from executor `j`'s stream number `n` (ignored if that stream was
    /// replaced): records the round trip, or on an error counts it and drops the stream.
    fn answer(&mut self, j: usize, n: u64, r: Result<pb::HeartbeatResponse, tonic::Status>) {
        let s = &mut self.sims[j];
        if n != s.stream {
            return;
        }
        match r {
            Ok(_) => {
                if let Some(t) = s.sent.take() {
                    let _ = self.hist.record(t.elapsed().as_micros().max(1) as u64);
                }
            }
            Err(_) => {
                // The stream broke, or ended after the leader refused a beat.
                if s.tx.take().is_some() || s.sent.is_some() {
                    self.errors += 1;
                }
                s.sent = None;
            }
        }
    }
}
