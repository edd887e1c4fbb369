//! Durable storage of a master, in sled under its data dir: the Raft log and vote
//! ([`LogStore`]) and the state machine with its snapshots ([`StateMachineStore`]).
//!
//! Invariants:
//! - Nothing is reported durable before it is: `save_vote`, `truncate`, `purge` and snapshot
//!   installation flush sled first; `append` writes its entries and hands openraft's callback to
//!   the log's flusher thread, which calls it only after a flush that began after the write.
//!   Raft's core thus never waits on the disk (it keeps sending heartbeats and replicating, and
//!   the leader's flush overlaps the followers'), and appends that arrive during one flush share
//!   the next.
//! - The state machine is the pure [`State`] in memory plus the latest snapshot in sled. On start
//!   the snapshot is loaded and openraft re-applies the committed log after it, so the in-memory
//!   state never runs ahead of what the log and snapshot can rebuild.
//! - A snapshot is written and flushed as one sled value, so installation is atomic; the log is
//!   purged only after the snapshot covering it is durable (openraft orders this).

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftLogReader, RaftSnapshotBuilder, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use crate::raft::codec;
use crate::raft::{Entry, LogId, NodeId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state::State;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Read, e)
}
fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Write, e)
}

/// sled's page cache. The log is written once and read back only by replication (recent entries)
/// and restarts; the state machine lives in memory. sled's default (1 GiB) would double a large
/// master's memory for nothing.
const SLED_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// Opens (or creates) the sled database of a master.
pub fn open(dir: &Path) -> Result<sled::Db, sled::Error> {
    sled::Config::new().path(dir.join("raft.sled")).mode(sled::Mode::HighThroughput).cache_capacity(SLED_CACHE_BYTES).open()
}

/// Runs `f` on a thread of its own at the lowest CPU priority and awaits its result. For
/// encoding a snapshot of a large state (seconds of CPU): on a saturated machine it must yield
/// to the Raft heartbeats and client requests of every master on it, or followers see a silent
/// leader and depose it. (Apply still waits for the state's read lock meanwhile.)
async fn in_background_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("triad-snapshot".into()).spawn(move || {
        // On Linux, PRIO_PROCESS with who = 0 sets the calling thread's nice value only.
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19) };
        let _ = tx.send(f());
    })?;
    rx.await.map_err(|_| std::io::Error::other("snapshot thread panicked"))
}

/// Runs synchronous work that is CPU-heavy or waits for the state's lock (encoding or decoding a
/// whole state: seconds for millions of jobs; apply waiting for the write lock while the leader's
/// duties read a large state) without pinning the runtime thread it is on: the runtime moves its
/// other tasks, Raft's core and heartbeats among them, to another thread. On two cores a pinned
/// pair of workers silenced the leader and followers deposed it, over and over. Outside a
/// multi-threaded runtime (tests) it just runs.
pub(crate) fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Commands an apply may run on the async worker it was called on, when the state's lock is free
/// at once: a few hundred microseconds at most. Larger batches go [`off_runtime`].
const INLINE_APPLY_COMMANDS: usize = 256;

/// Runs `f` on the applied state under its write lock. Light work finds the lock free at once
/// in the common case and runs right here: no thread hand-off, which costs more than applying a
/// small batch. Heavy work, or a lock held by a reader (a snapshot being encoded, a full planning
/// pass), goes [`off_runtime`].
pub(crate) fn with_write<T>(applied: &SharedApplied, light: bool, f: impl FnOnce(&mut Applied) -> T) -> T {
    if light {
        if let Ok(mut guard) = applied.try_write() {
            return f(&mut guard);
        }
    }
    off_runtime(|| f(&mut applied.write().expect("state lock poisoned")))
}

/// Like [`with_write`], under the read lock.
pub(crate) fn with_read<T>(applied: &SharedApplied, light: bool, f: impl FnOnce(&Applied) -> T) -> T {
    if light {
        if let Ok(guard) = applied.try_read() {
            return f(&guard);
        }
    }
    off_runtime(|| f(&applied.read().expect("state lock poisoned")))
}

/// Opens both stores over one sled database.
pub fn open_stores(db: &sled::Db) -> Result<(LogStore, StateMachineStore), StorageError> {
    Ok((LogStore::new(db)?, StateMachineStore::new(db)?))
}

// ------------------------------------------------------------------------------------------------
// Log store

/// The Raft log (key: big-endian index) and the vote, in sled. Cheap to clone (sled handles).
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// Appends waiting for a flush; the flusher thread ends when every clone is dropped.
    flushes: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// A log write or flush slower than this is logged: the disk is holding up commits.
const SLOW_LOG_IO: std::time::Duration = std::time::Duration::from_millis(100);

/// Flushes sled for the appends queued so far, then reports each of them done, in order. Every
/// callback is queued after its entries were written, so the flush that follows covers them.
fn flusher(db: sled::Db, queue: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = queue.recv() {
        let mut waiting = vec![first];
        waiting.extend(queue.try_iter());
        let started = std::time::Instant::now();
        let flushed = db.flush();
        crate::metrics::get().log_flush_seconds.observe(started.elapsed().as_secs_f64());
        if started.elapsed() > SLOW_LOG_IO {
            tracing::warn!(ms = started.elapsed().as_millis() as u64, appends = waiting.len(), "slow log flush");
        }
        for callback in waiting {
            callback.log_io_completed(flushed.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        }
    }
}

impl LogStore {
    pub fn new(db: &sled::Db) -> Result<Self, StorageError> {
        let (flushes, queue) = std::sync::mpsc::channel();
        let flushing = db.clone();
        std::thread::Builder::new()
            .name("triad-log-flush".into())
            .spawn(move || flusher(flushing, queue))
            .map_err(write_err)?;
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree("log").map_err(read_err)?,
            meta: db.open_tree("meta").map_err(read_err)?,
            flushes,
        })
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode(&v).map_err(read_err)?)),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(write_err)?;
        self.meta.insert(key, bytes).map_err(write_err)?;
        Ok(())
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.log.range((Bound::Included(index_key(start)), end)) {
            let (_, v) = kv.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            out.push(codec::decode(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = match self.log.last().map_err(read_err)? {
            Some((_, v)) => Some(codec::decode::<Entry>(&v).map_err(read_err)?.log_id),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote)?;
        self.flush().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for faster restart only; it need not be flushed (openraft re-derives it).
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        let started = std::time::Instant::now();
        self.log.apply_batch(batch).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        if started.elapsed() > SLOW_LOG_IO {
            tracing::warn!(ms = started.elapsed().as_millis() as u64, "slow log write");
        }
        // Durable before openraft may count this node towards a quorum: the callback waits for
        // the flusher. (If the flusher is gone, so is the store: report the failure.)
        if let Err(std::sync::mpsc::SendError(callback)) = self.flushes.send(callback) {
            let stopped = || std::io::Error::other("log flusher stopped");
            callback.log_io_completed(Err(stopped()));
            return Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, stopped()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range(index_key(log_id.index)..) {
            let (k, _) = kv.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.put_meta(KEY_PURGED, &log_id)?;
        self.flush().await?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=index_key(log_id.index)) {
            let (k, _) = kv.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// State machine store

/// The applied state of a master: the pure cluster state plus Raft's bookkeeping.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

/// A snapshot as stored in sled: its metadata and the encoded [`Applied`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Shared, read-mostly handle on the applied state; the master's read paths use it directly.
pub type SharedApplied = Arc<RwLock<Applied>>;

/// The state machine side of openraft. Cheap to clone.
#[derive(Clone)]
pub struct StateMachineStore {
    db: sled::Db,
    tree: sled::Tree,
    applied: SharedApplied,
}

impl StateMachineStore {
    pub fn new(db: &sled::Db) -> Result<Self, StorageError> {
        let tree = db.open_tree("sm").map_err(read_err)?;
        let store = StateMachineStore { db: db.clone(), tree, applied: Arc::default() };
        if let Some(snap) = store.read_snapshot()? {
            let applied: Applied = codec::decode(&snap.data).map_err(read_err)?;
            *store.applied.write().expect("state lock poisoned") = applied;
        }
        Ok(store)
    }

    /// The applied state, for readers (hold the lock briefly).
    pub fn applied(&self) -> SharedApplied {
        self.applied.clone()
    }

    fn read_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        match self.tree.get(KEY_SNAPSHOT).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode(&v).map_err(read_err)?)),
        }
    }

    async fn write_snapshot(&self, snap: &StoredSnapshot) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(snap.meta.signature()));
        off_runtime(|| {
            let bytes = codec::encode(snap).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
            self.tree.insert(KEY_SNAPSHOT, bytes).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))
        })?;
        self.db.flush_async().await.map_err(|e| io_err(subject, ErrorVerb::Write, e))?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applied = self.applied.clone();
        let (data, last_applied, membership) = in_background_thread(move || {
            let applied = applied.read().expect("state lock poisoned");
            codec::encode(&*applied).map(|data| (data, applied.last_applied, applied.membership.clone()))
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.write_snapshot(&stored).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.read().expect("state lock poisoned");
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let commands: usize = entries.iter().map(|e| if let EntryPayload::Normal(r) = &e.payload { r.commands.len() } else { 1 }).sum();
        with_write(&self.applied, commands <= INLINE_APPLY_COMMANDS, move |applied| {
            let mut out = Vec::with_capacity(entries.len());
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(req) => Response {
                        results: req.commands.iter().map(|c| applied.state.apply(c)).collect(),
                    },
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        Response::default()
                    }
                };
                out.push(response);
            }
            Ok(out)
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let new: Applied = off_runtime(|| codec::decode(&data)).map_err(|e| io_err(subject, ErrorVerb::Read, e))?;
        // Durable first, then visible: a crash after the flush restarts from this snapshot.
        self.write_snapshot(&StoredSnapshot { meta: meta.clone(), data }).await?;
        *self.applied.write().expect("state lock poisoned") = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: new.state,
        };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.read_snapshot()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

#[cfg(test)]
mod tests {
    //! openraft's own storage conformance suite, run against the real sled stores.
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct SledBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = open(dir.path()).map_err(read_err)?;
            let (log, sm) = open_stores(&db)?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(SledBuilder)
    }
}
