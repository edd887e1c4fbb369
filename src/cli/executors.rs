//! CLI commands around executors: running one, listing and draining them, reading task output.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use super::output::{json, table, Format};
use super::{st, ExecutorCmd, ExecutorRunArgs};
use crate::api::pb;
use crate::api::pb::executor_service_client::ExecutorServiceClient;
use crate::api::pb::worker_service_client::WorkerServiceClient;
use crate::client::{parse_masters, Client};
use crate::executor::config::ExecutorFile;
use crate::executor::ExecutorConfig;

pub async fn run(a: ExecutorRunArgs) -> anyhow::Result<()> {
    // Precedence: flags > environment > file > defaults. (--masters reads TRIAD_MASTERS itself.)
    let mut f = match &a.config {
        Some(path) => ExecutorFile::load(path)?,
        None => ExecutorFile::default(),
    };
    f.apply_env(|k| std::env::var(k).ok())?;
    if let Some(m) = a.m.masters.as_deref() {
        f.masters = parse_masters(m)?;
    }
    f.slots = a.slots.or(f.slots);
    f.cpu_millis = a.cpu.or(f.cpu_millis);
    f.memory_mib = a.memory.or(f.memory_mib);
    f.labels.extend(a.labels);
    f.work_dir = a.work_dir.or(f.work_dir);
    f.listen = a.listen.or(f.listen);
    f.advertise = a.advertise.or(f.advertise);
    f.http_listen = a.http_listen.or(f.http_listen);
    // The shared credential flags (TRIAD_CA, TRIAD_CERT, TRIAD_KEY, TRIAD_INSECURE) apply when
    // all of a certificate's files are given.
    if a.m.insecure {
        f.insecure = Some(true);
    }
    if let (Some(ca), Some(cert), Some(key)) = (&a.m.ca, &a.m.cert, &a.m.key) {
        f.tls = Some(crate::security::tls::TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    let cfg: ExecutorConfig = f.into_config()?;
    let (trigger, shutdown) = crate::shutdown::channel();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        trigger.fire();
    });
    crate::executor::run(cfg, shutdown).await
}

pub async fn list_executors(client: &Client) -> Result<Vec<pb::ExecutorInfo>, tonic::Status> {
    let r = client
        .call(|c| async move {
            ExecutorServiceClient::new(c)
                .list_executors(pb::ListExecutorsRequest { consistency: 0 })
                .await
        })
        .await?;
    Ok(r.executors)
}

pub async fn command(cmd: ExecutorCmd) -> anyhow::Result<i32> {
    match cmd {
        ExecutorCmd::List { out, m } => {
            let execs = list_executors(&m.client()?).await.map_err(st)?;
            match out.format {
                Format::Json => json(&execs)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = execs
                        .iter()
                        .map(|e| {
                            let cap = e.capacity.unwrap_or_default();
                            let used = e.used.unwrap_or_default();
                            let mut labels: Vec<String> =
                                e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            labels.sort();
                            vec![
                                e.id.clone(),
                                e.addr.clone(),
                                e.state.clone(),
                                format!("{}/{}", used.slots, cap.slots),
                                e.running.to_string(),
                                e.epoch.to_string(),
                                labels.join(","),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(
                            &["ID", "ADDRESS", "STATE", "SLOTS", "RUNNING", "EPOCH", "LABELS"],
                            &rows
                        )
                    );
                }
            }
            Ok(0)
        }
        ExecutorCmd::Drain { id, m } => {
            let client = m.client()?;
            client
                .call(|c| {
                    let id = id.clone();
                    async move {
                        ExecutorServiceClient::new(c)
                            .drain_executor(pb::DrainExecutorRequest { executor_id: id })
                            .await
                    }
                })
                .await
                .map_err(st)?;
            println!("{id} draining");
            Ok(0)
        }
    }
}

/// Streams a task's stdout (or stderr) from the executor that ran the chosen attempt.
pub async fn logs(
    client: &Client,
    job_id: &str,
    task: u32,
    attempt: Option<u32>,
    stderr: bool,
) -> anyhow::Result<()> {
    let job = client.get_job(job_id, false).await.map_err(st)?;
    let t = job
        .tasks
        .iter()
        .find(|t| t.index == task)
        .with_context(|| format!("job {job_id} has no task {task}"))?;
    let a = crate::api::convert::choose_attempt(t, job_id, attempt).map_err(st)?;
    let execs = list_executors(client).await.map_err(st)?;
    let exec = execs
        .iter()
        .find(|e| e.id == a.executor)
        .with_context(|| format!("executor {} is unknown", a.executor))?;
    let req = pb::ReadOutputRequest {
        job_id: job_id.to_string(),
        task_index: task,
        attempt: a.number,
        stderr,
        offset: 0,
        max_bytes: 0,
    };
    stream_output(client.dialer(), exec, req).await
}

/// Copies the output `req` names from `exec` to stdout, chunk by chunk from `req.offset`, until
/// the executor says it has reached the end (or returns nothing more).
async fn stream_output(
    dialer: &crate::api::Dialer,
    exec: &pb::ExecutorInfo,
    mut req: pb::ReadOutputRequest,
) -> anyhow::Result<()> {
    let chan = dialer.channel(&exec.addr, &crate::api::ServerName::Executor(exec.id.clone()))?;
    let mut worker =
        WorkerServiceClient::new(chan).max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES);
    let mut out = std::io::stdout().lock();
    loop {
        let mut call = tonic::Request::new(req.clone());
        call.set_timeout(Duration::from_secs(10));
        let r = worker
            .read_output(call)
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "reading output from executor {} at {}: {}",
                    exec.id,
                    exec.addr,
                    super::status_line(&s)
                )
            })?
            .into_inner();
        out.write_all(&r.data)?;
        req.offset += r.data.len() as u64;
        if r.eof || r.data.is_empty() {
            break;
        }
    }
    out.flush()?;
    Ok(())
}
