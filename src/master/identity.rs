//! The identity file of a master's data dir (`<data dir>/identity`): which cluster and which
//! master id the data belongs to. Written once, atomically and fsynced ([`crate::files`]), when
//! the master first starts on the dir; checked on every start after that.
//!
//! What it prevents:
//! - **A foreign data dir**: a volume of another master (or another cluster) mounted here. Its
//!   log and vote are not this master's: started on them it would speak for the wrong node.
//! - **An empty data dir under an id that has acknowledged entries** (a disk that was wiped, or a
//!   volume that is not mounted): with no log and no vote it could vote twice in a term and lose
//!   what it acknowledged. Before it writes a first identity, a master asks its configured peers;
//!   if the leader says this id has acknowledged entries to it, the master refuses to start and
//!   points to the replace-a-master procedure (a replacement joins under a new id).
//!
//! Invariants:
//! - The decision ([`judge`]) is pure: the file, whether the dir holds data, and what the peers
//!   answered go in; a verdict comes out.
//! - The check never blocks a first start for long: peers are asked once with a deadline
//!   ([`PEER_STATUS_TIMEOUT`]); unreachable peers (a cluster starting up) are no objection.
//! - The cluster id is agreed without a round of its own: masters that bootstrap together derive
//!   it from the same initial `peers`; any later master adopts the one its peers report.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::config::MasterConfig;
use crate::api::pb;
use crate::api::pb::cluster_service_client::ClusterServiceClient;
use crate::raft::network::Channels;
use crate::timings::PEER_STATUS_TIMEOUT;

/// The identity file's name inside the data dir.
pub const FILE: &str = "identity";

/// Where the procedure for a master whose disk is gone is described.
const REPLACE: &str = "cluster-config/README.md, 'Replacing a master'";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The cluster's id ("" when not known: a joiner that could reach no peer).
    pub cluster: String,
    /// The master id this data belongs to.
    pub node: u64,
}

/// What a peer said about the cluster, as far as the check needs it.
#[derive(Clone, Debug, Default)]
pub struct PeerView {
    pub id: u64,
    pub is_leader: bool,
    pub members: Vec<u64>,
    pub acknowledged_by: Vec<u64>,
    pub cluster: String,
}

impl From<pb::MasterStatus> for PeerView {
    fn from(s: pb::MasterStatus) -> Self {
        PeerView {
            id: s.id,
            is_leader: s.role == "leader",
            members: s.voters.iter().chain(&s.learners).copied().collect(),
            acknowledged_by: s.acknowledged_by,
            cluster: s.cluster_id,
        }
    }
}

/// The verdict of [`judge`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start; write this identity first when it is new.
    Start { identity: Identity, write: bool },
    /// Refuse to start, with this one line.
    Refuse(String),
}

/// The cluster id masters bootstrapping from `peers` agree on: a hash of the initial voters.
pub fn bootstrap_cluster_id(cfg: &MasterConfig) -> String {
    use sha2::Digest;
    let mut peers: Vec<String> = cfg.peers.iter().map(|p| format!("{}={}", p.id, p.addr)).collect();
    peers.sort();
    let hash = sha2::Sha256::digest(peers.join(",").as_bytes());
    hex::encode(&hash[..8])
}

/// Decides whether master `id` may start on `data_dir`, given its identity file (if any),
/// whether the dir holds a log or snapshot already, and what its peers answered.
pub fn judge(
    id: u64,
    data_dir: &Path,
    file: Option<Identity>,
    has_data: bool,
    bootstrap_cluster: Option<String>,
    peers: &[PeerView],
) -> Verdict {
    let dir = data_dir.display();
    let peer_cluster = peers
        .iter()
        .filter(|p| !p.cluster.is_empty())
        .max_by_key(|p| p.is_leader)
        .map(|p| p.cluster.clone());
    if let Some(f) = file {
        if f.node != id {
            return Verdict::Refuse(format!(
                "data dir {dir} belongs to master {} (its {FILE} file), not to master {id}: start \
                 master {} on it, or give master {id} its own data dir; a master whose disk is \
                 gone is replaced under a new id ({REPLACE})",
                f.node, f.node
            ));
        }
        if let Some(c) = peer_cluster.as_ref().filter(|c| !f.cluster.is_empty() && **c != f.cluster)
        {
            return Verdict::Refuse(format!(
                "data dir {dir} belongs to cluster {} (its {FILE} file) but the peers of master \
                 {id} form cluster {c}: this is another cluster's data; give master {id} the \
                 data dir of this cluster, or replace it ({REPLACE})",
                f.cluster
            ));
        }
        if f.cluster.is_empty() {
            if let Some(c) = peer_cluster {
                return Verdict::Start { identity: Identity { cluster: c, node: id }, write: true };
            }
        }
        return Verdict::Start { identity: f, write: false };
    }
    if !has_data {
        if let Some(leader) = peers
            .iter()
            .find(|p| p.is_leader && p.members.contains(&id) && p.acknowledged_by.contains(&id))
        {
            return Verdict::Refuse(format!(
                "data dir {dir} is empty, but master {id} is a member that has acknowledged log \
                 entries (so says leader master {}): its disk was wiped or is not mounted. If the \
                 volume is not mounted, mount it and start again; if the disk is gone, remove \
                 master {id} and add a replacement under a new id ({REPLACE})",
                leader.id
            ));
        }
    }
    // A first start, or a data dir of a triad that wrote no identity file yet.
    let cluster = peer_cluster.or(bootstrap_cluster).unwrap_or_default();
    Verdict::Start { identity: Identity { cluster, node: id }, write: true }
}

/// Reads the identity file of `data_dir`, if there is one.
pub fn read(data_dir: &Path) -> anyhow::Result<Option<Identity>> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => toml::from_str(&s).map(Some).with_context(|| {
            format!(
                "{} is damaged; it names the cluster and master id of this data",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the identity file atomically and durably.
pub fn write(data_dir: &Path, identity: &Identity) -> anyhow::Result<()> {
    let path = data_dir.join(FILE);
    let text = toml::to_string(identity).context("encoding the identity")?;
    crate::files::write_atomically(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// True when the data dir holds a Raft log or snapshot already.
fn has_data(data_dir: &Path) -> bool {
    let nonempty = |p: PathBuf| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some());
    nonempty(data_dir.join(crate::store::log::LOG_DIR))
        || nonempty(data_dir.join("snapshots"))
        || data_dir.join("raft.sled").exists()
}

/// What the configured peers (other than this master) say, each asked once with a deadline;
/// the unreachable are left out.
async fn ask_peers(cfg: &MasterConfig, channels: &Channels) -> Vec<PeerView> {
    let asks = cfg.peers.iter().filter(|p| p.id != cfg.id).map(|p| async move {
        let chan = channels.get(&p.addr).ok()?;
        let mut req = tonic::Request::new(pb::NodeStatusRequest { with_digest: false });
        req.set_timeout(PEER_STATUS_TIMEOUT);
        let r = tokio::time::timeout(
            PEER_STATUS_TIMEOUT,
            ClusterServiceClient::new(chan).node_status(req),
        )
        .await
        .ok()?
        .ok()?;
        Some(PeerView::from(r.into_inner()))
    });
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

/// Checks (and on first start writes) the identity of the data dir; the error is the one line
/// the master exits with.
pub async fn ensure(cfg: &MasterConfig, channels: &Channels) -> anyhow::Result<Identity> {
    let file = read(&cfg.data_dir)?;
    let peers = ask_peers(cfg, channels).await;
    let bootstrap = (cfg.bootstrap && !cfg.peers.is_empty()).then(|| bootstrap_cluster_id(cfg));
    match judge(cfg.id, &cfg.data_dir, file, has_data(&cfg.data_dir), bootstrap, &peers) {
        Verdict::Refuse(line) => anyhow::bail!("{line}"),
        Verdict::Start { identity, write: false } => Ok(identity),
        Verdict::Start { identity, write: true } => {
            write(&cfg.data_dir, &identity)?;
            tracing::info!(cluster = %identity.cluster, node = identity.node, "identity file written");
            Ok(identity)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(members: &[u64], acked: &[u64], cluster: &str) -> PeerView {
        PeerView {
            id: 1,
            is_leader: true,
            members: members.to_vec(),
            acknowledged_by: acked.to_vec(),
            cluster: cluster.into(),
        }
    }

    fn refused(v: Verdict) -> String {
        match v {
            Verdict::Refuse(line) => line,
            v => panic!("expected a refusal, got {v:?}"),
        }
    }

    #[test]
    fn an_empty_dir_under_an_id_that_acknowledged_entries_is_refused() {
        let dir = Path::new("/d");
        let line =
            refused(judge(3, dir, None, false, None, &[leader(&[1, 2, 3], &[1, 2, 3], "c")]));
        assert!(line.contains("is empty") && line.contains("Replacing a master"), "{line}");
        // A member that never acknowledged anything (a first start after the others) starts.
        let v = judge(3, dir, None, false, Some("b".into()), &[leader(&[1, 2, 3], &[1, 2], "c")]);
        assert_eq!(
            v,
            Verdict::Start { identity: Identity { cluster: "c".into(), node: 3 }, write: true }
        );
        // No peer reachable: the first start of a cluster.
        let v = judge(3, dir, None, false, Some("b".into()), &[]);
        assert_eq!(
            v,
            Verdict::Start { identity: Identity { cluster: "b".into(), node: 3 }, write: true }
        );
        // A follower's view is not enough (it may not have applied a removal yet).
        let mut follower = leader(&[1, 2, 3], &[1, 2, 3], "c");
        follower.is_leader = false;
        assert!(matches!(judge(3, dir, None, false, None, &[follower]), Verdict::Start { .. }));
    }

    #[test]
    fn a_dir_of_another_master_or_cluster_is_refused() {
        let dir = Path::new("/d");
        let other = Identity { cluster: "c".into(), node: 2 };
        let line = refused(judge(3, dir, Some(other), true, None, &[]));
        assert!(line.contains("belongs to master 2") && line.contains("not to master 3"), "{line}");
        let foreign = Identity { cluster: "x".into(), node: 3 };
        let line =
            refused(judge(3, dir, Some(foreign.clone()), true, None, &[leader(&[1], &[], "c")]));
        assert!(line.contains("belongs to cluster x") && line.contains("form cluster c"), "{line}");
        // Its own: starts without rewriting; unreachable peers are no objection.
        assert_eq!(
            judge(3, dir, Some(foreign.clone()), true, None, &[]),
            Verdict::Start { identity: foreign, write: false }
        );
    }

    #[test]
    fn the_file_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let id = Identity { cluster: "abc".into(), node: 7 };
        write(dir.path(), &id).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(id));
    }
}
