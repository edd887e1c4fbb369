//! A master: one openraft node with its sled store, serving the client API (jobs, cluster), the
//! Raft RPCs, gRPC health and reflection on one address.
//!
//! Lifecycle: open the store, start Raft, serve, bootstrap the cluster on first start when
//! configured, then run until shutdown; on shutdown stop serving (bounded) and stop Raft.

pub(crate) mod batcher;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod cron;
pub(crate) mod duties;
pub(crate) mod errors;
pub mod events;
pub(crate) mod executors;
pub(crate) mod forward;
pub(crate) mod http;
pub(crate) mod https;
pub mod identity;
pub(crate) mod jobs;
pub(crate) mod liveness;
pub(crate) mod node;
pub mod rest;
pub mod retention;
pub(crate) mod ui;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::{BasicNode, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

use crate::api::pb::cluster_service_server::ClusterServiceServer;
use crate::api::pb::executor_service_server::ExecutorServiceServer;
use crate::api::pb::job_service_server::JobServiceServer;
use crate::api::pb::raft_service_server::RaftServiceServer;
use crate::api::MAX_MESSAGE_BYTES;
use crate::raft::election::Election;
use crate::raft::network::{Channels, Network};
use crate::raft::service::RaftServer;
use crate::raft::Raft;
use crate::shutdown::Shutdown;
use config::MasterConfig;
use node::Node;

/// How long each step of a graceful stop may take before in-flight work is dropped.
use crate::timings::MASTER_STOP_GRACE as STOP_GRACE;

/// The snapshot interval of master `id`: `every` plus 1/16 of it per id (mod 8). Masters that
/// apply the same log would otherwise all snapshot at the same index, and each snapshot of a
/// large state takes a second of CPU and disk: together they starved the quorum (elections at
/// 0.5 M jobs). Staggered, at most one master of three is busy snapshotting at a time.
fn staggered(every: u64, id: u64) -> u64 {
    every + every / 16 * (id % 8)
}

fn raft_config(cfg: &MasterConfig) -> anyhow::Result<openraft::Config> {
    let r = &cfg.raft;
    let c = openraft::Config {
        cluster_name: "triad".into(),
        // openraft's own timers are off: `raft::election` campaigns and sends the heartbeats.
        // What is left of these three: `election_timeout_max` is the leader lease voters honour,
        // and `heartbeat_interval` bounds every append-entries call (openraft 0.9 uses it as the
        // call's timeout), so it is as long as the lease allows (validate() wants
        // heartbeat_interval < election_timeout_min < election_timeout_max).
        heartbeat_interval: r.lease_ms() - 2,
        election_timeout_min: r.lease_ms() - 1,
        election_timeout_max: r.lease_ms(),
        enable_elect: false,
        enable_heartbeat: false,
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(staggered(r.snapshot_every, cfg.id)),
        max_in_snapshot_log_to_keep: r.keep_logs,
        purge_batch_size: 256,
        max_payload_entries: 512,
        snapshot_max_chunk_size: 4 * 1024 * 1024,
        ..Default::default()
    };
    c.validate().context("invalid raft timings")
}

/// Runs a master until `shutdown` fires: start Raft on the store, serve gRPC (and HTTP when
/// configured), run the background tasks, bootstrap on first start when configured; then stop
/// each part within its grace and flush the log.
pub async fn run(cfg: MasterConfig, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let secured = cfg.security().load(crate::security::Role::Master)?;
    if cfg.insecure {
        let mut stop = shutdown.clone();
        tokio::spawn(crate::security::warn_insecure(format!("master {}", cfg.id), async move {
            stop.wait().await
        }));
    }
    let (storage, node, election) = start_raft(&cfg, &secured).await?;
    let listener =
        TcpListener::bind(&cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(id = cfg.id, listen = %cfg.listen, advertise = %node.addr, data_dir = %cfg.data_dir.display(), tls = !cfg.insecure, tokens = cfg.auth.tokens.len(), "master starting");
    let liveness = Arc::new(liveness::Liveness::default());
    let services = Services::new(&cfg, &node, liveness.clone(), &shutdown);
    let http = serve_http(&cfg, &secured, &node, &services, &shutdown).await?;
    let (serving, health_reporter) =
        serve_grpc(&secured, &node, election.clone(), services, listener, &shutdown)?;
    let tasks =
        Background::start(&cfg, &node, election, liveness, health_reporter, http, &shutdown);
    bootstrap(&cfg, &node.raft).await?;

    let fatal = tokio::select! {
        _ = shutdown.wait() => None,
        f = raft_fatal(node.raft.clone()) => Some(f),
    };
    match &fatal {
        None => tracing::info!(id = cfg.id, "master stopping"),
        // A storage error (ENOSPC, EIO) stops openraft for good: exit non-zero so that the
        // supervisor restarts the process, instead of answering "raft stopped" forever.
        Some(f) => tracing::error!(id = cfg.id, error = %f, "raft stopped; master exiting"),
    }
    match tokio::time::timeout(STOP_GRACE, serving).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server error while stopping"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("server did not stop within {STOP_GRACE:?}"),
    }
    tasks.stop().await;
    if tokio::time::timeout(STOP_GRACE, node.raft.shutdown()).await.is_err() {
        tracing::warn!("raft did not stop within {STOP_GRACE:?}");
    }
    if let Some(f) = fatal {
        anyhow::bail!(
            "master {}: raft stopped ({f}); nothing more is acknowledged, exiting so that the \
             supervisor restarts this master (check the disk of {})",
            cfg.id,
            cfg.data_dir.display()
        );
    }
    storage.log.sync_now().await.context("final log sync")?;
    storage.raft.flush_async().await.context("final flush")?;
    Ok(())
}

/// Resolves with openraft's fatal error once it has stopped on one (a storage error, a panic in
/// its core). Never resolves while Raft runs.
async fn raft_fatal(raft: crate::raft::Raft) -> String {
    let mut rx = raft.metrics();
    loop {
        if let Err(f) = &rx.borrow_and_update().running_state {
            return f.to_string();
        }
        if rx.changed().await.is_err() {
            return "raft's metrics ended".into();
        }
    }
}

/// Opens the store in the data dir and starts Raft on it; returns the store (flushed last on
/// stop), the master's shared context and the election timer (shared by the campaigns and the
/// Raft service).
async fn start_raft(
    cfg: &MasterConfig,
    secured: &crate::security::Secured,
) -> anyhow::Result<(crate::store::Storage, Arc<Node>, Election)> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let channels = Channels::new(crate::api::Dialer::new(secured.client.clone()));
    let identity = identity::ensure(cfg, &channels).await?;
    let storage = crate::store::open(&cfg.data_dir)
        .with_context(|| format!("opening store in {}", cfg.data_dir.display()))?;
    let (log_store, sm_store) =
        crate::store::open_stores(&storage).context("opening raft stores")?;
    let applied = sm_store.applied();
    let events = sm_store.events();
    let election = Election::new(
        Duration::from_millis(cfg.raft.election_min_ms),
        Duration::from_millis(cfg.raft.election_max_ms),
    );
    let network = Network {
        channels: channels.clone(),
        election: election.clone(),
        retry: Duration::from_millis(cfg.raft.heartbeat_ms),
    };
    let raft = Raft::new(cfg.id, Arc::new(raft_config(cfg)?), network, log_store, sm_store)
        .await
        .context("starting raft")?;
    let addr = cfg.advertise_addr().to_string();
    let node = Arc::new(Node::new(
        cfg.id,
        addr,
        raft,
        applied,
        events,
        channels,
        cfg.leader_wait(),
        identity.cluster,
    ));
    Ok((storage, node, election))
}

/// The client-facing gRPC services of a master: one instance of each, run by the gRPC server
/// and called in process by the HTTP API ([`rest`]), so both APIs share every rule.
struct Services {
    jobs: jobs::Jobs,
    cluster: cluster::Cluster,
    executors: executors::Executors,
    crons: cron::Crons,
}

impl Services {
    fn new(
        cfg: &MasterConfig,
        node: &Arc<Node>,
        liveness: Arc<liveness::Liveness>,
        shutdown: &Shutdown,
    ) -> Services {
        Services {
            jobs: jobs::Jobs::new(node.clone(), shutdown.clone()).with_retention(retention::Ctx {
                cfg: cfg.retention.clone(),
                liveness: liveness.clone(),
                executor_ttl: Duration::from_millis(cfg.executors.ttl_ms),
            }),
            cluster: cluster::Cluster { node: node.clone() },
            crons: cron::Crons { node: node.clone() },
            executors: executors::Executors {
                node: node.clone(),
                liveness,
                timings: cfg.executors.clone(),
                // Stamps and acks stop before the voters' lease ends, so every beat a deposed
                // leader acknowledged came before any successor was elected (see
                // `crate::fencing`).
                quorum_lease: Duration::from_millis(cfg.raft.lease_ms()),
                shutdown: shutdown.clone(),
            },
        }
    }
}

/// Binds and serves `/metrics`, `/status`, the HTTP API and the dashboard when `http_listen` is
/// set: over HTTPS with the master's certificate (and plain HTTP for the public pages) when the
/// cluster is secure.
async fn serve_http(
    cfg: &MasterConfig,
    secured: &crate::security::Secured,
    node: &Arc<Node>,
    services: &Services,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(addr) = &cfg.http_listen else { return Ok(None) };
    let tls = match (&cfg.tls, cfg.insecure) {
        (Some(files), false) => Some(https::acceptor(files)?),
        _ => None,
    };
    let l = TcpListener::bind(addr).await.with_context(|| format!("binding http {addr}"))?;
    tracing::info!(http = %addr, https = tls.is_some(), "serving /metrics, /status, /v1/ and /ui/");
    let api = Arc::new(rest::Api {
        node: node.clone(),
        jobs: services.jobs.clone(),
        cluster: services.cluster.clone(),
        executors: services.executors.clone(),
        crons: services.crons.clone(),
        authority: secured.authority.clone(),
        shutdown: shutdown.clone(),
    });
    let serve = http::serve(node.clone(), api, l, tls, shutdown.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "http server stopped");
        }
    })))
}

/// Builds the gRPC server (health, reflection v1 and v1alpha, Raft, jobs, cluster, executors)
/// and serves it on `listener` until shutdown; returns the serving task and the health reporter
/// to drive.
fn serve_grpc(
    secured: &crate::security::Secured,
    node: &Arc<Node>,
    election: Election,
    services: Services,
    listener: TcpListener,
    shutdown: &Shutdown,
) -> anyhow::Result<(JoinHandle<Result<(), tonic::transport::Error>>, HealthReporter)> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let (reflection, reflection_v1alpha) = crate::api::reflection()?;
    let server = crate::api::server(secured)?
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            RaftServiceServer::new(RaftServer::new(node.raft.clone(), election))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            JobServiceServer::new(services.jobs).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ClusterServiceServer::new(services.cluster))
        .add_service(crate::api::pb::cron_service_server::CronServiceServer::new(services.crons))
        .add_service(ExecutorServiceServer::new(services.executors));
    let mut stop = shutdown.clone();
    let serving = tokio::spawn(server.serve_with_incoming_shutdown(
        crate::api::incoming(listener),
        async move { stop.wait().await },
    ));
    Ok((serving, health_reporter))
}

/// Initialises a new cluster from `peers` on first start, when `bootstrap` is on.
async fn bootstrap(cfg: &MasterConfig, raft: &Raft) -> anyhow::Result<()> {
    if cfg.bootstrap && !raft.is_initialized().await.context("reading raft state")? {
        let members: BTreeMap<u64, BasicNode> =
            cfg.peers.iter().map(|p| (p.id, BasicNode { addr: p.addr.clone() })).collect();
        // Every bootstrapping master proposes the same initial membership; openraft accepts it
        // once and the others' identical proposals are refused harmlessly.
        if let Err(e) = raft.initialize(members).await {
            tracing::info!(error = %e, "cluster already initialised by a peer");
        }
    }
    Ok(())
}

/// The master's background tasks besides the gRPC server, stopped in this order.
struct Background {
    duties: JoinHandle<()>,
    /// The leader's cron firing loop (idle unless this master is a ready leader).
    cron: JoinHandle<()>,
    campaigns: JoinHandle<()>,
    http: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts gRPC health tracking, the election campaigns and the leader duties.
    fn start(
        cfg: &MasterConfig,
        node: &Arc<Node>,
        election: Election,
        liveness: Arc<liveness::Liveness>,
        health_reporter: HealthReporter,
        http: Option<JoinHandle<()>>,
        shutdown: &Shutdown,
    ) -> Background {
        let raft = node.raft.clone();
        let lease = Duration::from_millis(cfg.raft.election_max_ms * 2);
        tokio::spawn(health::track(raft.clone(), health_reporter, lease, shutdown.clone()));
        let heartbeat = Duration::from_millis(cfg.raft.heartbeat_ms);
        let campaigns =
            crate::raft::election::run(raft, cfg.id, election, heartbeat, shutdown.clone());
        let duties = duties::watch(
            node.clone(),
            liveness,
            cfg.executors.clone(),
            cfg.retention.policy(),
            shutdown.clone(),
        );
        Background {
            cron: tokio::spawn(cron::fire_loop(node.clone(), shutdown.clone())),
            campaigns: tokio::spawn(async move {
                campaigns.await;
            }),
            duties: tokio::spawn(async move {
                duties.await;
            }),
            http,
        }
    }

    /// Waits for each task to end, at most [`STOP_GRACE`] each.
    async fn stop(self) {
        let _ = tokio::time::timeout(STOP_GRACE, self.duties).await;
        let _ = tokio::time::timeout(STOP_GRACE, self.cron).await;
        let _ = tokio::time::timeout(STOP_GRACE, self.campaigns).await;
        if let Some(h) = self.http {
            let _ = tokio::time::timeout(STOP_GRACE, h).await;
        }
    }
}

mod health {
    //! gRPC health: SERVING only while this master is part of a working quorum: it knows a leader
    //! and, if it is the leader, a quorum acknowledged it recently (a leader cut off from the
    //! others keeps believing it leads; the lease check catches that). Re-evaluated on every Raft
    //! metrics change and on a tick, since a lease expires without any change.

    use std::time::Duration;

    use openraft::ServerState;
    use tonic_health::server::HealthReporter;
    use tonic_health::ServingStatus;

    use crate::api::pb::job_service_server::JobServiceServer;
    use crate::raft::Raft;
    use crate::shutdown::Shutdown;

    pub async fn track(
        raft: Raft,
        reporter: HealthReporter,
        lease: Duration,
        mut shutdown: Shutdown,
    ) {
        let mut rx = raft.metrics();
        let mut last = None;
        let mut term = 0;
        let mut tick = tokio::time::interval(crate::timings::HEALTH_TICK);
        loop {
            let healthy = {
                let m = rx.borrow_and_update();
                if m.current_term > term {
                    if term > 0 {
                        crate::metrics::get().elections.inc_by(m.current_term - term);
                    }
                    term = m.current_term;
                }
                let lease_ok = m.state != ServerState::Leader
                    || m.millis_since_quorum_ack.is_some_and(|ms| ms < lease.as_millis() as u64);
                m.current_leader.is_some()
                    && lease_ok
                    && m.state != ServerState::Shutdown
                    && m.state != ServerState::Candidate
            };
            if last != Some(healthy) {
                let status =
                    if healthy { ServingStatus::Serving } else { ServingStatus::NotServing };
                reporter.set_service_status("", status).await;
                reporter.set_service_status(<JobServiceServer<crate::master::jobs::Jobs> as tonic::server::NamedService>::NAME, status).await;
                last = Some(healthy);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}
