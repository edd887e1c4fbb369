//! A master's TOML configuration. Every option has a default except the node's id, addresses,
//! data dir and peers; `TRIAD_*` environment variables override the file (see [`MasterConfig::load`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::security::tls::TlsFiles;
use crate::security::{AuthConfig, NodeSecurity};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// This master's Raft node id (unique in the cluster, never reused).
    pub id: u64,
    /// Address the gRPC server binds (clients, executors and peers all use it).
    pub listen: String,
    /// Address peers and clients reach this master at; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Address of the HTTP endpoints `/metrics` (Prometheus) and `/status` (JSON); off when unset.
    #[serde(default)]
    pub http_listen: Option<String>,
    /// Where the Raft log, vote and snapshots live (a sled database).
    pub data_dir: PathBuf,
    /// Initialise a new cluster from `peers` on first start. Set false on a master that joins an
    /// existing cluster through `triad cluster add-master`.
    #[serde(default = "default_true")]
    pub bootstrap: bool,
    /// Plaintext and no authentication: anyone who reaches the port owns the cluster. Only for
    /// experiments; logged loudly at start and every minute. Exclusive with `[tls]`.
    #[serde(default)]
    pub insecure: bool,
    /// The initial voters (including this master), used only by `bootstrap`.
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub raft: RaftTimings,
    #[serde(default)]
    pub executors: ExecutorTimings,
    /// The cluster CA and this master's certificate (`triad tls cert create --role master`).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The bearer tokens clients and executors may present instead of a certificate.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Retention (issue 14): how long finished jobs, idempotency keys and gone executors stay.
    #[serde(default)]
    pub retention: super::retention::RetentionConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
}

/// Raft timings and log retention.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimings {
    /// Leader heartbeat to followers (sent by `raft::election`).
    pub heartbeat_ms: u64,
    /// A follower campaigns after hearing from no leader for a random time in [min, max), drawn
    /// anew for every campaign (`raft::election`). Voters refuse other candidates for
    /// `election_min_ms - heartbeat_ms` after they last heard their leader (the leader lease).
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Take a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the latest snapshot (for slow followers).
    pub keep_logs: u64,
    /// How long a request waits for a leader before failing UNAVAILABLE.
    pub leader_wait_ms: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: 50,
            election_min_ms: 350,
            election_max_ms: 500,
            snapshot_every: 20_000,
            keep_logs: 1_000,
            leader_wait_ms: crate::timings::DEFAULT_LEADER_WAIT.as_millis() as u64,
        }
    }
}

/// Executor liveness and dispatch timings, used by the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorTimings {
    /// An executor not heard from for this long is declared dead.
    pub ttl_ms: u64,
    /// The heartbeat interval executors are told to use.
    pub heartbeat_ms: u64,
}

impl Default for ExecutorTimings {
    fn default() -> Self {
        ExecutorTimings {
            ttl_ms: crate::timings::DEFAULT_EXECUTOR_TTL.as_millis() as u64,
            heartbeat_ms: crate::timings::DEFAULT_EXECUTOR_HEARTBEAT.as_millis() as u64,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The initial voters of a cluster at `addrs`, numbered from 1 in order.
pub fn peers(addrs: impl IntoIterator<Item = String>) -> Vec<Peer> {
    addrs.into_iter().enumerate().map(|(i, addr)| Peer { id: i as u64 + 1, addr }).collect()
}

impl MasterConfig {
    /// The config of master `id` of a new cluster of `peers` (it must be among them): it listens
    /// at its own peer address, bootstraps the cluster on first start, keeps its data in
    /// `data_dir`, serves HTTP at `http_listen` if given, and takes every timing's default. The
    /// one builder behind `triad dev`, the integration tests and the chaos suite.
    pub fn cluster_member(
        id: u64,
        peers: &[Peer],
        data_dir: PathBuf,
        http_listen: Option<String>,
    ) -> anyhow::Result<MasterConfig> {
        let me = peers
            .iter()
            .find(|p| p.id == id)
            .with_context(|| format!("master {id} is not among the peers"))?;
        Ok(MasterConfig {
            id,
            listen: me.addr.clone(),
            advertise: None,
            http_listen,
            data_dir,
            bootstrap: true,
            insecure: false,
            peers: peers.to_vec(),
            raft: RaftTimings::default(),
            executors: ExecutorTimings::default(),
            tls: None,
            auth: AuthConfig::default(),
            retention: Default::default(),
        })
    }

    /// The config of a master that is not a member yet (no bootstrap, no peers): it joins a
    /// running cluster through `triad cluster add-master`.
    pub fn joiner(id: u64, listen: String, data_dir: PathBuf) -> MasterConfig {
        MasterConfig {
            id,
            listen,
            advertise: None,
            http_listen: None,
            data_dir,
            bootstrap: false,
            insecure: false,
            peers: Vec::new(),
            raft: RaftTimings::default(),
            executors: ExecutorTimings::default(),
            tls: None,
            auth: AuthConfig::default(),
            retention: Default::default(),
        }
    }

    /// This config with TLS from `files` and the tokens of `auth` (or insecure when `files` is
    /// None).
    pub fn secured(mut self, files: Option<TlsFiles>, auth: AuthConfig) -> MasterConfig {
        self.insecure = files.is_none();
        self.tls = files;
        self.auth = auth;
        self
    }

    /// The security settings as [`NodeSecurity`].
    pub fn security(&self) -> NodeSecurity<'_> {
        NodeSecurity { insecure: self.insecure, tls: self.tls.as_ref(), auth: &self.auth }
    }

    /// The config as a TOML file's text ([`MasterConfig::load`] reads it back).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("writing the master config as TOML")
    }

    /// Reads a config file, applies `TRIAD_MASTER_*` overrides and checks it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut cfg: MasterConfig =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Environment overrides: `TRIAD_MASTER_ID`, `_LISTEN`, `_ADVERTISE`, `_DATA_DIR`, `_BOOTSTRAP`,
    /// `_INSECURE`, and `_TLS_CA`, `_TLS_CERT`, `_TLS_KEY` (all three, or over a `[tls]` block).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = get("TRIAD_MASTER_ID") {
            self.id =
                v.parse().with_context(|| format!("TRIAD_MASTER_ID={v:?} is not a number"))?;
        }
        if let Some(v) = get("TRIAD_MASTER_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("TRIAD_MASTER_ADVERTISE") {
            self.advertise = Some(v);
        }
        if let Some(v) = get("TRIAD_MASTER_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("TRIAD_MASTER_HTTP_LISTEN") {
            self.http_listen = Some(v);
        }
        if let Some(v) = get("TRIAD_MASTER_BOOTSTRAP") {
            self.bootstrap = v
                .parse()
                .with_context(|| format!("TRIAD_MASTER_BOOTSTRAP={v:?} is not true/false"))?;
        }
        if let Some(v) = get("TRIAD_MASTER_INSECURE") {
            self.insecure = v
                .parse()
                .with_context(|| format!("TRIAD_MASTER_INSECURE={v:?} is not true/false"))?;
        }
        self.tls = crate::security::tls::from_env("TRIAD_MASTER", self.tls.take(), &get)?;
        self.retention.apply_env(&get)?;
        Ok(())
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if self.id == 0 {
            bail!("id must be > 0");
        }
        self.security().check()?;
        self.retention.check()?;
        if self.bootstrap && !self.peers.iter().any(|p| p.id == self.id) {
            bail!("bootstrap is on but peers does not list this master (id {})", self.id);
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0
            || r.election_min_ms <= 2 * r.heartbeat_ms + 1
            || r.election_max_ms <= r.election_min_ms
        {
            bail!("raft timings must satisfy 0 < 2 * heartbeat_ms + 1 < election_min_ms < election_max_ms");
        }
        // How the configured timings relate to each other and to the fixed ones.
        crate::timings::check_master(
            self.executors.ttl_ms,
            self.executors.heartbeat_ms,
            self.raft.leader_wait_ms,
        )
        .map_err(anyhow::Error::msg)?;
        Ok(())
    }

    pub fn advertise_addr(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    pub fn leader_wait(&self) -> Duration {
        Duration::from_millis(self.raft.leader_wait_ms)
    }
}

impl RaftTimings {
    /// How long a voter refuses other candidates after hearing from its leader: long enough to
    /// ride out a late heartbeat, short enough to have expired everywhere once a follower's
    /// election timeout (at least `election_min_ms` of silence) fires.
    pub fn lease_ms(&self) -> u64 {
        self.election_min_ms - self.heartbeat_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_config_with_defaults_and_env_overrides() {
        let mut cfg: MasterConfig = toml::from_str(
            r#"id = 1
               listen = "127.0.0.1:7101"
               data_dir = "d"
               insecure = true
               peers = [{ id = 1, addr = "127.0.0.1:7101" }]"#,
        )
        .unwrap();
        assert_eq!(
            cfg.raft.heartbeat_ms,
            RaftTimings::default().heartbeat_ms,
            "an omitted [raft] takes the defaults"
        );
        assert_eq!(
            (cfg.raft.heartbeat_ms, cfg.raft.election_min_ms, cfg.raft.election_max_ms),
            (50, 350, 500)
        );
        assert_eq!(cfg.raft.lease_ms(), 300);
        assert_eq!(cfg.advertise_addr(), "127.0.0.1:7101");
        cfg.apply_env(|k| (k == "TRIAD_MASTER_ADVERTISE").then(|| "10.0.0.1:7101".to_string()))
            .unwrap();
        assert_eq!(cfg.advertise_addr(), "10.0.0.1:7101");
        cfg.check().unwrap();
    }

    #[test]
    fn security_is_tls_unless_insecure_is_asked_for() {
        let peers = peers(["127.0.0.1:1".to_string()]);
        let cfg = MasterConfig::cluster_member(1, &peers, "d".into(), None).unwrap();
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains("no [tls] block"), "{e}");
        let mut env = cfg.clone();
        env.apply_env(|k| match k {
            "TRIAD_MASTER_TLS_CA" | "TRIAD_MASTER_TLS_CERT" | "TRIAD_MASTER_TLS_KEY" => {
                Some(k.to_lowercase())
            }
            _ => None,
        })
        .unwrap();
        assert_eq!(env.tls.as_ref().map(|t| t.ca.clone()), Some("triad_master_tls_ca".into()));
        env.check().unwrap();
        let mut both = env.clone();
        both.insecure = true;
        assert!(both.check().is_err(), "insecure and [tls] together are refused");
        let mut half = cfg.clone();
        assert!(half.apply_env(|k| (k == "TRIAD_MASTER_TLS_CA").then(|| "x".into())).is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_timings() {
        assert!(toml::from_str::<MasterConfig>(
            "id = 1\nlisten = \"a\"\ndata_dir = \"d\"\nbogus = 1"
        )
        .is_err());
        let mut cfg: MasterConfig = toml::from_str(
            "id = 1\nlisten = \"a\"\ndata_dir = \"d\"\ninsecure = true\npeers = [{ id = 1, addr = \"a\" }]",
        )
        .unwrap();
        cfg.raft.election_min_ms = 50;
        assert!(cfg.check().is_err());
        cfg.raft.election_min_ms = 2 * cfg.raft.heartbeat_ms + 1; // leaves no room for the lease
        assert!(cfg.check().is_err());
        cfg.raft.election_min_ms += 1;
        cfg.check().unwrap();
    }

    #[test]
    fn refuses_timings_that_break_a_relation_naming_both_values() {
        let peers = peers(["127.0.0.1:1".to_string()]);
        let ok = MasterConfig::cluster_member(1, &peers, "d".into(), None)
            .unwrap()
            .secured(None, AuthConfig::default());
        ok.check().unwrap();

        let mut cfg = ok.clone();
        cfg.executors.heartbeat_ms = 3000; // the fencing window of the default 5 s TTL
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains("heartbeat_ms (3000)") && e.contains("ttl_ms 5000"), "{e}");

        let mut cfg = ok.clone();
        cfg.executors.ttl_ms = 1000; // window 600 ms, below the default 1 s heartbeat
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains("heartbeat_ms (1000)") && e.contains("600 ms"), "{e}");

        let mut cfg = ok;
        cfg.raft.leader_wait_ms = 6000;
        let e = cfg.check().unwrap_err().to_string();
        assert!(
            e.contains("leader_wait_ms (6000)") && e.contains("forward deadline (5000 ms)"),
            "{e}"
        );
    }

    #[test]
    fn a_cluster_members_config_round_trips_through_toml() {
        let peers = peers(["127.0.0.1:7101".to_string(), "127.0.0.1:7102".to_string()]);
        let tls = TlsFiles { ca: "ca.pem".into(), cert: "m.pem".into(), key: "m.key".into() };
        let cfg = MasterConfig::cluster_member(2, &peers, "/d".into(), Some("127.0.0.1:8".into()))
            .unwrap()
            .secured(Some(tls.clone()), AuthConfig::default());
        assert_eq!((cfg.listen.as_str(), cfg.bootstrap), ("127.0.0.1:7102", true));
        let back: MasterConfig = toml::from_str(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(
            (back.id, back.peers.clone(), back.http_listen.clone()),
            (2, peers.clone(), cfg.http_listen)
        );
        assert_eq!(back.tls, Some(tls));
        back.check().unwrap();
        assert!(MasterConfig::cluster_member(3, &peers, "/d".into(), None).is_err());
        let j = MasterConfig::joiner(3, "127.0.0.1:7103".into(), "/d".into())
            .secured(None, AuthConfig::default());
        assert!(!j.bootstrap && j.peers.is_empty());
        j.check().unwrap();
    }
}
