//! CLI commands around executors: running one, listing and draining them (reading task output
//! is `logs.rs`).

use super::output::{json, table, Format};
use super::{st, ExecutorCmd, ExecutorRunArgs};
use crate::api::pb;
use crate::api::pb::executor_service_client::ExecutorServiceClient;
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
                .list_executors(pb::ListExecutorsRequest { consistency: 0, ..Default::default() })
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
