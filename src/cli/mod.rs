//! The `triad` command line (SPEC "Command line"): argument parsing and one function per
//! command. Errors reach the user as one line on stderr and a non-zero exit status.

pub(crate) mod batch;
pub(crate) mod bench;
pub mod creds;
pub(crate) mod cron;
pub(crate) mod dev;
pub(crate) mod events;
pub(crate) mod executors;
pub(crate) mod logs;
pub(crate) mod output;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tonic::Status;

use crate::api::pb;
use crate::client::{parse_masters, Client};
use output::{age, json, table, Format};

#[derive(Parser, Debug)]
#[command(
    name = "triad",
    version,
    about = "A fault-tolerant job scheduler: Raft masters, executors, a CLI."
)]
pub struct Cli {
    /// Log format of long-running commands (master, executor).
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Cmd,
}

impl Cli {
    /// Short-lived commands that print results (job, cluster, executor list): a closed stdout
    /// (`triad job list | head`) ends them quietly, the way it ends any Unix filter, instead of
    /// a panic message from `println!` (the binary's `main` sees to it; SIGPIPE stays ignored
    /// everywhere, since its default would also kill the CLI on a socket the peer closed).
    pub fn is_printing_command(&self) -> bool {
        match &self.command {
            Cmd::Job(_) | Cmd::Cluster(_) | Cmd::Events { .. } | Cmd::Cron(_) => true,
            Cmd::Executor { cmd, .. } => cmd.is_some(),
            Cmd::Dev { .. } | Cmd::Master { .. } | Cmd::Bench(_) => false,
            Cmd::Tls(_) | Cmd::Token(_) => false,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct MastersArg {
    /// Masters to talk to (host:port,...); any one will do.
    #[arg(long, env = "TRIAD_MASTERS", global = true, hide_env_values = true)]
    pub masters: Option<String>,
    /// The cluster's CA certificate (PEM), to verify the masters by.
    #[arg(long, env = "TRIAD_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Bearer token (`triad_…`; `triad dev` writes one per role under its tokens/).
    #[arg(long, env = "TRIAD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Client certificate (PEM), instead of a token; with --key.
    #[arg(long, env = "TRIAD_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "TRIAD_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// Plaintext and no credentials: only for a cluster configured `insecure = true`.
    #[arg(long, env = "TRIAD_INSECURE", global = true)]
    pub insecure: bool,
}

impl MastersArg {
    /// The credentials the flags and `TRIAD_*` variables give.
    pub fn credentials(&self) -> anyhow::Result<crate::api::ClientCredentials> {
        if self.insecure {
            return Ok(crate::api::ClientCredentials::insecure());
        }
        let ca = self.ca.as_deref().context(
            "no CA certificate: set TRIAD_CA (the export line of `triad dev` has it) or pass \
             --ca; --insecure only for a cluster run with insecure = true",
        )?;
        let cert_key = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => anyhow::bail!("--cert and --key (TRIAD_CERT, TRIAD_KEY) go together"),
        };
        let token = self.token.clone().filter(|t| !t.trim().is_empty());
        crate::api::ClientCredentials::tls(ca, cert_key, token)
    }

    pub fn dialer(&self) -> anyhow::Result<crate::api::Dialer> {
        Ok(crate::api::Dialer::new(self.credentials()?))
    }

    fn client(&self) -> anyhow::Result<Client> {
        let list = self.masters.as_deref().unwrap_or_default();
        Client::new(parse_masters(list)?, &self.dialer()?)
    }
}

#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Start a local cluster on loopback (each master its own process) until Ctrl-C.
    Dev {
        #[arg(long, default_value_t = 3)]
        masters: u32,
        #[arg(long, default_value_t = 2)]
        executors: u32,
        #[arg(long, default_value = "./triad-dev")]
        data_dir: PathBuf,
        /// First master's port; masters take consecutive ports.
        #[arg(long, default_value_t = 7101)]
        base_port: u16,
        /// No TLS and no tokens: anyone who reaches the ports owns the cluster.
        #[arg(long)]
        insecure: bool,
    },
    /// Run one master from a TOML config.
    Master {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an executor (with no subcommand), or list / drain executors.
    #[command(args_conflicts_with_subcommands = true)]
    Executor {
        #[command(subcommand)]
        cmd: Option<ExecutorCmd>,
        #[command(flatten)]
        run: ExecutorRunArgs,
    },
    /// Jobs: submit, get, list, cancel, delete, gc, logs, wait.
    #[command(subcommand)]
    Job(JobCmd),
    /// The masters: status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Load generators for the performance figures (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Certificates: `triad tls ca create`, `triad tls cert create --role R --name N`.
    #[command(subcommand)]
    Tls(creds::TlsCmd),
    /// Bearer tokens: `triad token create --role R --name N`.
    #[command(subcommand)]
    Token(creds::TokenCmd),
    /// Cron jobs: create, list, get, delete, suspend, resume, trigger.
    #[command(subcommand)]
    Cron(cron::CronCmd),
    /// The event stream: every job, task, executor and cron transition with its Raft index,
    /// followed through failover until interrupted.
    Events {
        /// Start after this index (the last one you saw); default: from now on.
        #[arg(long = "from")]
        from: Option<u64>,
        /// Only this job's events.
        #[arg(long)]
        job: Option<String>,
        /// Catch up with the leader before streaming (on a follower, too).
        #[arg(long)]
        linearizable: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Closed-loop durable submissions against a running cluster.
    Submit {
        #[command(flatten)]
        load: bench::Load,
        /// `stream`: each connection carries one SubmitJobs stream that its workers pipeline
        /// their submissions on; `unary`: one SubmitJob call per submission (to the leader);
        /// `unary-any`: one SubmitJob call per submission, spread round-robin over every master
        /// given, no leader hint followed (a generic gRPC client).
        #[arg(long, value_enum, default_value_t = bench::Api::Stream)]
        api: bench::Api,
        /// Submit jobs that executors run (a task printing one line) instead of jobs no
        /// executor may take (the soak benchmark's load, tests/bench/soak.sh).
        #[arg(long)]
        run_tasks: bool,
        /// With `--api http`: the master's HTTP API, `https://HOST:PORT` (its leader's, for a
        /// like-for-like figure; `triad dev`: 7151 for master1).
        #[arg(long)]
        http: Option<String>,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Draws the samples of a soak run (tests/bench/soak.sh) as an SVG: one panel per measure.
    Plot {
        /// The CSV the soak wrote (first column t_s, then <process>_<measure> columns).
        csv: PathBuf,
        /// The SVG file to write.
        out: PathBuf,
    },
    /// The reference: closed-loop durable puts to etcd (v3 gRPC), same harness as `submit`.
    EtcdPut {
        /// etcd client endpoint host:port (its leader's, for a like-for-like figure), or several
        /// separated by commas: puts spread round-robin over them (a generic client; the
        /// counterpart of `bench submit --api unary-any`).
        #[arg(long, default_value = "127.0.0.1:2379")]
        endpoint: String,
        /// etcd over TLS: the CA of its certificate (with --etcd-cert and --etcd-key).
        #[arg(long)]
        etcd_ca: Option<PathBuf>,
        /// The client certificate etcd's --client-cert-auth checks.
        #[arg(long)]
        etcd_cert: Option<PathBuf>,
        #[arg(long)]
        etcd_key: Option<PathBuf>,
        #[command(flatten)]
        load: bench::Load,
        /// Bytes per value (a triad submission is ~150 bytes on the wire).
        #[arg(long, default_value_t = 150)]
        value_size: usize,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Submit -> first attempt running and submit -> succeeded, for trivial tasks on idle executors.
    E2e {
        #[arg(long, default_value_t = 200)]
        count: usize,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Thousands of simulated executors heartbeating to the leader; reports its CPU share.
    Heartbeats {
        #[arg(long, default_value_t = 10000)]
        executors: usize,
        #[arg(long, default_value_t = 1.0)]
        hz: f64,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// gRPC connections the simulated executors share.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Starts its own local cluster, kills the leader N times (kill -> writes accepted again) and
    /// an executor M times (kill -> its tasks running elsewhere).
    Failover {
        /// Leader kills (0 skips them).
        #[arg(long, default_value_t = 5)]
        kills: usize,
        /// Executor kills (0 skips them).
        #[arg(long, default_value_t = 3)]
        executor_kills: usize,
        /// Data and logs of the cluster; must be empty or absent, and is kept [default: a fresh
        /// temporary directory, removed at the end unless --keep or the bench failed].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Keep the temporary data dir and logs.
        #[arg(long)]
        keep: bool,
        /// First master's port (masters take consecutive ports, HTTP +50, executors +100).
        #[arg(long, default_value_t = 17400)]
        base_port: u16,
        /// Deadline of each round; a round that misses it fails the bench.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        round_timeout: Duration,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Cron firing lag: a cron `@every 1s` whose firings a client follows on the event stream;
    /// how long after its scheduled time each firing arrives (kill the leader meanwhile, or run
    /// `bench submit` beside it, to see those lags).
    Cron {
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Event delivery lag under submissions: closed-loop SubmitJobs (pace with --rate) while a
    /// client follows the event stream; submission acknowledged -> its creation event received.
    Events {
        #[command(flatten)]
        load: bench::Load,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// The pure planner's throughput on a synthetic state.
    Placement {
        #[arg(long, default_value_t = 1000)]
        executors: usize,
        #[arg(long, default_value_t = 10000)]
        tasks: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        #[command(flatten)]
        out: OutputArg,
    },
}

// `job submit`'s flags (with the batch ones) make its variant large; the value is parsed once
// per process, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Submit a job and print its id.
    Submit(SubmitArgs),
    /// Show one job with its tasks.
    Get {
        id: String,
        /// Read the local replica instead of a linearizable read through the leader.
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// List jobs.
    List {
        /// Only jobs in this state (pending, running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Cancel a job; its running attempts are killed.
    Cancel {
        id: String,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Stop placing a job's tasks and stop its running ones (they wait again, no attempt used).
    Suspend {
        id: String,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Place a suspended job's tasks again.
    Resume {
        id: String,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Delete a finished job now, and its output on the executors (refused while it runs).
    Delete {
        id: String,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Admin: run a retention pass now (finished jobs past their TTL, expired idempotency
    /// tombstones, executors gone past `retention.executor_ttl`).
    Gc {
        #[command(flatten)]
        m: MastersArg,
    },
    /// Print a task's output, read from the executor that ran it.
    Logs {
        id: String,
        #[arg(long, default_value_t = 0)]
        task: u32,
        /// Attempt number (default: the latest that started).
        #[arg(long)]
        attempt: Option<u32>,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Keep printing the output as it is written until the task ends, following it to its
        /// next attempt when it is rescheduled.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Start at the last N lines (of what the executor still keeps).
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Wait for a job to finish; exit status 0 only if it succeeded.
    Wait {
        id: String,
        #[command(flatten)]
        m: MastersArg,
    },
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[arg(long, default_value = "")]
    pub name: String,
    /// Number of tasks (partitions).
    #[arg(long, default_value_t = 1)]
    pub tasks: u32,
    /// Slots each task needs.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// CPU millis each task needs.
    #[arg(long, default_value_t = 0)]
    pub cpu: u32,
    /// Memory (MiB) each task needs.
    #[arg(long, default_value_t = 0)]
    pub memory: u64,
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Retry delay: BASE (e.g. 2s) or BASE..CAP (e.g. 1s..5m), doubling per bad attempt up to
    /// CAP (default 5m), with full jitter.
    #[arg(long, value_parser = batch::parse_backoff)]
    pub backoff: Option<batch::Backoff>,
    #[command(flatten)]
    pub batch: batch::BatchArgs,
    /// Per-attempt timeout (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Delete the job this long after it finished (default: the cluster's
    /// `retention.finished_job_ttl`, 24h unless configured).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl_after_finished: Option<Duration>,
    /// Executor label every task requires (k=v); repeatable.
    #[arg(long = "constraint", value_parser = parse_kv)]
    pub constraints: Vec<(String, String)>,
    /// Environment variable for every attempt (K=V); repeatable.
    #[arg(long = "env", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Retrying with the same key returns the same job (default: a fresh key per invocation).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Run CMD through /bin/sh -c.
    #[arg(long)]
    pub shell: bool,
    /// Wait for the job to finish and exit with its outcome.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub m: MastersArg,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExecutorRunArgs {
    /// TOML config (see cluster-config/executor.toml); flags and TRIAD_EXECUTOR_* override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Task slots offered [default: 4].
    #[arg(long)]
    pub slots: Option<u32>,
    /// CPU millis offered [default: 4000].
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Memory offered, MiB [default: 4096].
    #[arg(long)]
    pub memory: Option<u64>,
    /// Label (k=v) that job constraints can select on; repeatable.
    #[arg(long = "label", value_parser = parse_kv)]
    pub labels: Vec<(String, String)>,
    /// Where the executor keeps its id and its attempts' output [default: ./triad-executor].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Address of its worker API [default: 127.0.0.1:0].
    #[arg(long)]
    pub listen: Option<String>,
    /// Address the leader reaches it at (defaults to the bound address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Address of its HTTP endpoints (/metrics, /status) [default: none].
    #[arg(long)]
    pub http_listen: Option<String>,
    #[command(flatten)]
    pub m: MastersArg,
}

#[derive(Subcommand, Debug)]
pub enum ExecutorCmd {
    /// Executors with state and load.
    List {
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Stop placing work on an executor; it finishes what it runs, then leaves.
    Drain {
        id: String,
        #[command(flatten)]
        m: MastersArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Every master: id, address, role, term, last log and applied index, reachable or not.
    Status {
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Add a master at runtime (learner first, then voter).
    AddMaster {
        id: u64,
        addr: String,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Remove a master at runtime.
    RemoveMaster {
        id: u64,
        #[command(flatten)]
        m: MastersArg,
    },
}

pub use crate::executor::config::parse_kv;

/// A gRPC status as one line for a human.
pub fn status_line(s: &Status) -> String {
    let m = s.message();
    // A plaintext client talking to a TLS server (or the reverse) sees only a protocol error.
    let mismatch = ["h2 protocol error", "InvalidContentType", "CorruptMessage"];
    let hint = if mismatch.iter().any(|p| m.contains(p)) {
        "; is one side TLS and the other not? (TRIAD_CA for TLS clusters, --insecure only for \
         clusters run with insecure = true)"
    } else {
        ""
    };
    format!("{m}{hint} ({:?})", s.code())
}

fn st(s: Status) -> anyhow::Error {
    anyhow::anyhow!(status_line(&s))
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIAD_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn,h2=warn,tower=warn")
    });
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Cmd::Dev { masters, executors, data_dir, base_port, insecure } => {
            dev::run(dev::DevArgs { masters, executors, data_dir, base_port, insecure }).await?;
            Ok(0)
        }
        Cmd::Tls(cmd) => creds::tls(cmd).map(|()| 0),
        Cmd::Token(cmd) => creds::token(cmd).map(|()| 0),
        Cmd::Master { config } => {
            init_logging(cli.log_format);
            master(&config).await?;
            Ok(0)
        }
        Cmd::Executor { cmd: Some(cmd), .. } => executors::command(cmd).await,
        Cmd::Executor { cmd: None, run } => {
            init_logging(cli.log_format);
            executors::run(run).await?;
            Ok(0)
        }
        Cmd::Job(cmd) => job(cmd).await,
        Cmd::Bench(cmd) => {
            bench_command(cmd).await?;
            Ok(0)
        }
        Cmd::Cluster(cmd) => cluster(cmd).await,
        Cmd::Cron(cmd) => cron::run(cmd).await,
        Cmd::Events { from, job, linearizable, limit, out, m } => {
            let job = job.unwrap_or_default();
            events::follow(&m.client()?, from, &job, linearizable, limit, out.format).await
        }
    }
}

/// Runs a master until SIGINT or SIGTERM.
async fn master(config: &std::path::Path) -> anyhow::Result<()> {
    let cfg = crate::master::config::MasterConfig::load(config)?;
    let (trigger, shutdown) = crate::shutdown::channel();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        trigger.fire();
    });
    crate::master::run(cfg, shutdown).await?;
    Ok(())
}

/// Runs one benchmark and prints its results.
async fn bench_command(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Submit { load, api: bench::Api::Http, http, out, m, .. } => {
            let url = http.context("--api http needs --http https://HOST:PORT")?;
            let token = if m.insecure { None } else { m.token.as_deref() };
            let ca = if m.insecure { None } else { m.ca.as_deref() };
            bench::http::submit(&url, ca, token, load).await?.print(out.format)?
        }
        BenchCmd::Submit { load, api, run_tasks, http: _, out, m } => {
            bench::submit(m.client()?, load, api, run_tasks).await?.print(out.format)?
        }
        BenchCmd::Plot { csv, out } => {
            bench::plot::plot(&csv, &out)?;
            println!("{}", out.display());
        }
        BenchCmd::EtcdPut { endpoint, etcd_ca, etcd_cert, etcd_key, load, value_size, out } => {
            let tls = match (etcd_ca, etcd_cert, etcd_key) {
                (Some(ca), Some(cert), Some(key)) => Some(bench::etcd::EtcdTls { ca, cert, key }),
                (None, None, None) => None,
                _ => anyhow::bail!("--etcd-ca, --etcd-cert and --etcd-key go together"),
            };
            bench::etcd::put(&endpoint, tls.as_ref(), load, value_size).await?.print(out.format)?
        }
        BenchCmd::E2e { count, out, m } => {
            for r in bench::e2e(m.client()?, count).await? {
                r.print(out.format)?;
            }
        }
        BenchCmd::Heartbeats { executors, hz, duration, connections, out, m } => {
            bench::heartbeats(m.client()?, executors, hz, duration, connections)
                .await?
                .print(out.format)?
        }
        BenchCmd::Failover {
            kills,
            executor_kills,
            data_dir,
            keep,
            base_port,
            round_timeout,
            out,
        } => {
            let args = bench::failover::FailoverArgs {
                kills,
                executor_kills,
                data_dir,
                keep,
                base_port,
                round_timeout,
            };
            for r in bench::failover::run(args).await? {
                r.print(out.format)?;
            }
        }
        BenchCmd::Cron { duration, out, m } => {
            bench::watch::cron_lag(m.client()?, duration).await?.print(out.format)?
        }
        BenchCmd::Events { load, out, m } => {
            bench::watch::events_lag(m.client()?, load).await?.print(out.format)?
        }
        BenchCmd::Placement { executors, tasks, rounds, out } => {
            bench::placement(executors, tasks, rounds).print(out.format)?
        }
    }
    Ok(())
}

async fn job(cmd: JobCmd) -> anyhow::Result<i32> {
    match cmd {
        JobCmd::Submit(a) => submit(a).await,
        JobCmd::Get { id, stale, out, m } => {
            let j = m.client()?.get_job(&id, stale).await.map_err(st)?;
            match out.format {
                Format::Json => json(&j)?,
                Format::Table => print_job(&j),
            }
            Ok(0)
        }
        JobCmd::List { state, stale, out, m } => {
            list_jobs(m, state.as_deref().unwrap_or(""), stale, out.format).await?;
            Ok(0)
        }
        JobCmd::Cancel { id, m } => {
            let r = m.client()?.cancel_job(&id).await.map_err(st)?;
            println!("{id} {}", r.state);
            Ok(0)
        }
        JobCmd::Suspend { id, m } => {
            println!("{id} {}", m.client()?.suspend_job(&id).await.map_err(st)?.state);
            Ok(0)
        }
        JobCmd::Resume { id, m } => {
            println!("{id} {}", m.client()?.resume_job(&id).await.map_err(st)?.state);
            Ok(0)
        }
        JobCmd::Delete { id, m } => {
            let r = m.client()?.delete_job(&id).await.map_err(st)?;
            println!("{id} {}", if r.deleted { "deleted" } else { "already deleted" });
            Ok(0)
        }
        JobCmd::Gc { m } => {
            let r = m.client()?.collect_garbage().await.map_err(st)?;
            println!(
                "deleted {} jobs, expired {} tombstones, forgot {} executors",
                r.jobs_deleted, r.tombstones_expired, r.executors_forgotten
            );
            Ok(0)
        }
        JobCmd::Logs { id, task, attempt, stderr, follow, tail, m } => {
            let want = logs::Want { task, attempt, stderr, tail: tail.unwrap_or(0) };
            if follow {
                logs::follow(&m.client()?, &id, want).await?;
            } else {
                logs::print(&m.client()?, &id, want).await?;
            }
            Ok(0)
        }
        JobCmd::Wait { id, m } => wait_job(&m.client()?, &id).await,
    }
}

/// `triad job submit`: prints the new job's id, then waits for it if asked.
async fn submit(a: SubmitArgs) -> anyhow::Result<i32> {
    let client = a.m.client()?;
    let (command, args) = a.command.split_first().context("a command is required after --")?;
    let req = pb::SubmitJobRequest {
        name: a.name.clone(),
        idempotency_key: a.idempotency_key.clone().unwrap_or_default(),
        spec: Some(pb::JobSpec {
            command: command.clone(),
            args: args.to_vec(),
            env: a.env.iter().cloned().collect(),
            shell: a.shell,
            task_count: a.tasks,
            resources: Some(pb::Resources {
                slots: a.slots,
                cpu_millis: a.cpu,
                memory_mib: a.memory,
            }),
            constraints: a.constraints.iter().cloned().collect(),
            max_attempts: a.max_attempts,
            timeout_ms: a.timeout.map_or(0, |d| d.as_millis() as u64),
            priority: a.priority,
            ttl_after_finished_ms: a.ttl_after_finished.map(|d| d.as_millis() as u64),
            ..Default::default()
        }),
    };
    let mut req = req;
    if let Some(spec) = req.spec.as_mut() {
        batch::fill_spec(spec, &a.batch, a.backoff);
    }
    let r = client.submit_job(req).await.map_err(st)?;
    println!("{}", r.job_id);
    if a.wait {
        return wait_job(&client, &r.job_id).await;
    }
    Ok(0)
}

/// `triad job list`: every job (in `state`, if not empty), as JSON or a table.
async fn list_jobs(m: MastersArg, state: &str, stale: bool, format: Format) -> anyhow::Result<()> {
    let jobs = m.client()?.list_all_jobs(state, stale).await.map_err(st)?;
    match format {
        Format::Json => json(&jobs)?,
        Format::Table => {
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|j| {
                    let c = j.counts.unwrap_or_default();
                    let total = j.spec.as_ref().map_or(0, |s| s.task_count);
                    vec![
                        j.id.clone(),
                        j.name.clone(),
                        j.state.clone(),
                        format!("{}/{}", c.succeeded, total),
                        age(j.created_at_ms),
                    ]
                })
                .collect();
            println!("{}", table(&["ID", "NAME", "STATE", "DONE", "CREATED"], &rows));
        }
    }
    Ok(())
}

fn print_job(j: &pb::Job) {
    let spec = j.spec.clone().unwrap_or_default();
    let c = j.counts.unwrap_or_default();
    println!("id:        {}", j.id);
    println!("name:      {}", j.name);
    println!("state:     {}", j.state);
    println!("command:   {} {}", spec.command, spec.args.join(" "));
    println!("tasks:     {} (pending {}, assigned {}, running {}, succeeded {}, failed {}, cancelled {})",
        spec.task_count, c.pending, c.assigned, c.running, c.succeeded, c.failed, c.cancelled);
    println!("created:   {}", age(j.created_at_ms));
    if j.finished_at_ms != 0 {
        println!("finished:  {}", age(j.finished_at_ms));
    }
    batch::job_lines(j).iter().for_each(|l| println!("{l}"));
    let rows: Vec<Vec<String>> = j
        .tasks
        .iter()
        .map(|t| {
            let a = t.attempts.last();
            vec![
                t.index.to_string(),
                t.state.clone(),
                format!("{} ({}f/{}l)", t.attempts.len(), t.failed_attempts, t.lost_attempts),
                a.map_or("-".into(), |a| a.executor.clone()),
                a.map_or("-".into(), |a| a.token.to_string()),
                a.and_then(|a| a.has_exit_code.then(|| a.exit_code.to_string()))
                    .unwrap_or_else(|| "-".into()),
                a.map_or(String::new(), |a| a.error.clone()),
            ]
        })
        .collect();
    println!(
        "\n{}",
        table(&["TASK", "STATE", "ATTEMPTS", "EXECUTOR", "TOKEN", "EXIT", "ERROR"], &rows)
    );
}

/// Waits for the job to be terminal, following its events (see [`events::wait_job`]); exit
/// status 0 only when it succeeded.
pub async fn wait_job(client: &Client, id: &str) -> anyhow::Result<i32> {
    events::wait_job(client, id).await
}

async fn cluster(cmd: ClusterCmd) -> anyhow::Result<i32> {
    match cmd {
        ClusterCmd::Status { out, m } => {
            let s = m.client()?.cluster_status().await.map_err(st)?;
            match out.format {
                Format::Json => json(&s)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = s
                        .masters
                        .iter()
                        .map(|n| {
                            vec![
                                n.id.to_string(),
                                n.addr.clone(),
                                n.role.clone(),
                                if n.reachable { n.term.to_string() } else { "-".into() },
                                if n.reachable { n.last_log_index.to_string() } else { "-".into() },
                                if n.reachable { n.applied_index.to_string() } else { "-".into() },
                                if n.reachable { "yes".into() } else { format!("no: {}", n.error) },
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(
                            &["ID", "ADDRESS", "ROLE", "TERM", "LAST LOG", "APPLIED", "REACHABLE"],
                            &rows
                        )
                    );
                    if s.leader_id != 0 {
                        println!("\nleader: master {} at {}", s.leader_id, s.leader_addr);
                    } else {
                        println!("\nleader: none");
                    }
                }
            }
            Ok(0)
        }
        ClusterCmd::AddMaster { id, addr, m } => {
            let r = m.client()?.add_master(id, &addr).await.map_err(st)?;
            println!("voters {:?} learners {:?}", r.voters, r.learners);
            Ok(0)
        }
        ClusterCmd::RemoveMaster { id, m } => {
            let r = m.client()?.remove_master(id).await.map_err(st)?;
            println!("voters {:?} learners {:?}", r.voters, r.learners);
            Ok(0)
        }
    }
}
