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
//! - A snapshot's data is a file of its own (`snapshots/<generation>.snap`, LZ4-compressed),
//!   written in 4 MB pieces, each synced before the next, renamed into place and its directory
//!   synced; only then is the pointer naming it (its metadata, generation and size) written to
//!   sled and flushed. So installation is atomic (the pointer is one value), and the log is
//!   purged only after the snapshot covering it is durable (openraft orders this). Not a sled
//!   value: writing hundreds of MB through sled at 10^6 jobs held up the log's writes in the same
//!   process for 0.2–0.7 s at a time (sled's IO threads and the disk are shared), appends missed
//!   their deadline and the leader was deposed. In pieces, at most half the time, for the disk's
//!   sake likewise.

// openraft's `StorageError` is large, and it is the error type the storage traits require: boxing it
// here would only add a conversion at every call.
#![allow(clippy::result_large_err)]

pub mod events;

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
use crate::raft::{
    Entry, LogId, NodeId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::state::State;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
/// The snapshot as one value in the log's database: how earlier versions kept it. Still read
/// when there is no pointer, and removed once a newer snapshot is durable.
const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// In the state machine's tree: the [`SnapshotPointer`] of the current snapshot.
const KEY_SNAPSHOT_POINTER: &[u8] = b"snapshot_pointer";
/// A snapshot file is written and synced in pieces of this size (see the module doc).
const SNAPSHOT_PIECE: usize = 4 * 1024 * 1024;

/// Which file holds the current snapshot's data. Written (and flushed) only after the file is
/// durable, so switching to a new snapshot is one atomic write.
#[derive(Serialize, Deserialize)]
struct SnapshotPointer {
    meta: SnapshotMeta,
    generation: u64,
    bytes: u64,
}

fn snapshot_file(dir: &Path, generation: u64) -> std::path::PathBuf {
    dir.join(format!("{generation:016x}.snap"))
}

/// Writes `data` to `path` durably: a temporary file written and synced piece by piece (pausing
/// as long as each piece took, so the disk is this file's at most half the time), renamed into
/// place, the directory synced.
fn write_file_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir =
        path.parent().ok_or_else(|| std::io::Error::other("snapshot path has no directory"))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    for piece in data.chunks(SNAPSHOT_PIECE) {
        let started = std::time::Instant::now();
        f.write_all(piece)?;
        f.sync_data()?;
        std::thread::sleep(started.elapsed());
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
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
/// master's memory for nothing; 128 MiB was ~130 bytes per job at 10^6 jobs (the cache fills with
/// the log between snapshots). A follower that lags reads its entries back from the OS's page
/// cache or the disk instead.
const SLED_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The storage of a master: the sled database (Raft log, vote, metadata, snapshot pointer) and
/// the directory of snapshot files.
pub struct Storage {
    pub raft: sled::Db,
    pub snapshot_dir: std::path::PathBuf,
}

/// Opens (or creates) the storage of a master under `dir`.
pub fn open(dir: &Path) -> std::io::Result<Storage> {
    let snapshot_dir = dir.join("snapshots");
    std::fs::create_dir_all(&snapshot_dir)?;
    let raft = sled::Config::new()
        .path(dir.join("raft.sled"))
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(SLED_CACHE_BYTES)
        .open()?;
    Ok(Storage { raft, snapshot_dir })
}

/// Runs `f` on a thread of its own and awaits its result: encoding a snapshot of a large state
/// (seconds of CPU) without taking an async worker. At normal priority (it once ran at nice 19,
/// when it held the state's lock, and only made the write stall longer; it encodes a clone now,
/// but a slow snapshot still delays the log's purge).
async fn in_background_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("triad-snapshot".into()).spawn(move || {
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
pub(crate) fn with_write<T>(
    applied: &SharedApplied,
    light: bool,
    f: impl FnOnce(&mut Applied) -> T,
) -> T {
    if light {
        if let Ok(mut guard) = applied.try_write() {
            return f(&mut guard);
        }
    }
    off_runtime(|| f(&mut write_politely(applied)))
}

/// How long a writer that found the state locked yields before it sleeps, and how long it
/// sleeps between tries after that.
const WRITE_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// The state's write lock, taken by polling rather than by queueing for it. std's RwLock
/// prefers writers: once one waits, every new reader waits too. While a snapshot encode held the
/// read lock for a second or more, a queued apply thus made the readers on the async workers
/// (a submission checking its key, a heartbeat, a status page) block their threads behind it:
/// the runtime froze, followers heard nothing and deposed the leader. Polling, readers keep
/// going; only the writer waits. Call it off the async workers ([`off_runtime`]).
fn write_politely(applied: &SharedApplied) -> std::sync::RwLockWriteGuard<'_, Applied> {
    let started = std::time::Instant::now();
    loop {
        match applied.try_write() {
            Ok(guard) => return guard,
            // Readers usually hold it for microseconds: yield for a while before sleeping.
            Err(std::sync::TryLockError::WouldBlock) if started.elapsed() < WRITE_RETRY => {
                std::thread::yield_now()
            }
            Err(std::sync::TryLockError::WouldBlock) => std::thread::sleep(WRITE_RETRY),
            Err(std::sync::TryLockError::Poisoned(_)) => panic!("state lock poisoned"),
        }
    }
}

/// Like [`with_write`], under the read lock.
pub(crate) fn with_read<T>(
    applied: &SharedApplied,
    light: bool,
    f: impl FnOnce(&Applied) -> T,
) -> T {
    if light {
        if let Ok(guard) = applied.try_read() {
            return f(&guard);
        }
    }
    off_runtime(|| f(&applied.read().expect("state lock poisoned")))
}

/// Opens both stores over a master's databases.
pub fn open_stores(dbs: &Storage) -> Result<(LogStore, StateMachineStore), StorageError> {
    Ok((LogStore::new(&dbs.raft)?, StateMachineStore::new(dbs)?))
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
            tracing::warn!(
                ms = started.elapsed().as_millis() as u64,
                appends = waiting.len(),
                "slow log flush"
            );
        }
        for callback in waiting {
            callback.log_io_completed(
                flushed.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())),
            );
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

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode_stored(&v).map_err(read_err)?)),
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
            out.push(
                codec::decode_stored(&v)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?,
            );
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = match self.log.last().map_err(read_err)? {
            Some((_, v)) => Some(codec::decode_stored::<Entry>(&v).map_err(read_err)?.log_id),
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

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
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
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.put_meta(KEY_PURGED, &log_id)?;
        self.flush().await?;
        // Removed by key, from the first entry on: iterating the range would read every entry's
        // value back (10^4 batches, 100+ MB after a snapshot of a busy log) on Raft's core task,
        // which then sent no heartbeats for long enough to be deposed.
        let first =
            match self.log.first().map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))? {
                Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                    io_err(
                        ErrorSubject::Logs,
                        ErrorVerb::Read,
                        std::io::Error::other("log key is not 8 bytes"),
                    )
                })?),
                None => return Ok(()),
            };
        off_runtime(|| {
            let mut batch = sled::Batch::default();
            (first..=log_id.index).for_each(|i| batch.remove(&index_key(i)));
            self.log.apply_batch(batch)
        })
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
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
    /// The snapshot pointer ([`KEY_SNAPSHOT_POINTER`]), and the old format's snapshot.
    tree: sled::Tree,
    snapshot_dir: Arc<std::path::PathBuf>,
    applied: SharedApplied,
    /// The changes of every entry applied here, by index (see [`events`]).
    events: Arc<events::EventLog>,
}

impl StateMachineStore {
    pub fn new(dbs: &Storage) -> Result<Self, StorageError> {
        let tree = dbs.raft.open_tree("sm").map_err(read_err)?;
        let store = StateMachineStore {
            db: dbs.raft.clone(),
            tree,
            snapshot_dir: Arc::new(dbs.snapshot_dir.clone()),
            applied: Arc::default(),
            events: Arc::default(),
        };
        if let Some(snap) = store.read_snapshot()? {
            let applied: Applied =
                codec::decode_limited(&snap.data, codec::SNAPSHOT_LIMIT).map_err(read_err)?;
            store.events.reset(applied.last_applied.map_or(0, |l| l.index));
            *store.applied.write().expect("state lock poisoned") = applied;
        }
        Ok(store)
    }

    /// The applied state, for readers (hold the lock briefly).
    pub fn applied(&self) -> SharedApplied {
        self.applied.clone()
    }

    /// The event buffer the apply loop publishes to.
    pub fn events(&self) -> Arc<events::EventLog> {
        self.events.clone()
    }

    fn pointer(&self) -> Result<Option<SnapshotPointer>, StorageError> {
        match self.tree.get(KEY_SNAPSHOT_POINTER).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode_stored(&v).map_err(read_err)?)),
        }
    }

    fn read_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        if let Some(p) = self.pointer()? {
            let path = snapshot_file(&self.snapshot_dir, p.generation);
            let data = std::fs::read(&path).map_err(|e| {
                read_err(std::io::Error::other(format!("reading snapshot {}: {e}", path.display())))
            })?;
            if data.len() as u64 != p.bytes {
                return Err(read_err(std::io::Error::other(format!(
                    "snapshot {} has {} bytes, its pointer says {}",
                    path.display(),
                    data.len(),
                    p.bytes
                ))));
            }
            return Ok(Some(StoredSnapshot { meta: p.meta, data }));
        }
        match self.tree.get(KEY_SNAPSHOT).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode_stored(&v).map_err(read_err)?)),
        }
    }

    /// Makes `snap` the durable snapshot: its file, then the pointer to it (flushed); then older
    /// files (and the old format's copy) are removed.
    async fn write_snapshot(&self, snap: &StoredSnapshot) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(snap.meta.signature()));
        let old = self.pointer()?;
        let generation = old.as_ref().map_or(1, |p| p.generation + 1);
        let path = snapshot_file(&self.snapshot_dir, generation);
        off_runtime(|| write_file_durably(&path, &snap.data)).map_err(|e| {
            io_err(
                subject.clone(),
                ErrorVerb::Write,
                std::io::Error::other(format!("writing snapshot {}: {e}", path.display())),
            )
        })?;
        let pointer =
            SnapshotPointer { meta: snap.meta.clone(), generation, bytes: snap.data.len() as u64 };
        let bytes =
            codec::encode(&pointer).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        self.tree
            .insert(KEY_SNAPSHOT_POINTER, bytes)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        let _ = self.tree.remove(KEY_SNAPSHOT);
        self.db.flush_async().await.map_err(|e| io_err(subject, ErrorVerb::Write, e))?;
        // Every other file is garbage now: older generations, and what a crash left behind.
        if let Ok(entries) = std::fs::read_dir(&*self.snapshot_dir) {
            for entry in entries.flatten() {
                if entry.path() != path {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // An O(1) clone (the state is persistent maps, see `state::Map`), taken under the read
        // lock for as long as a clone takes; the encode then runs on it with no lock held, so
        // apply goes on beside it. (The encode held the lock once: commits stalled 0.7-2.5 s per
        // snapshot at 10^6 jobs.)
        let applied: Applied = with_read(&self.applied, true, Applied::clone);
        let started = std::time::Instant::now();
        let (data, last_applied, membership) = in_background_thread(move || {
            codec::encode_compressed(&applied)
                .map(|data| (data, applied.last_applied, applied.membership.clone()))
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta =
            SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let encoded = started.elapsed();
        self.write_snapshot(&stored).await?;
        tracing::info!(
            index = last_applied.map_or(0, |l| l.index),
            bytes = stored.data.len(),
            encode_ms = encoded.as_millis() as u64,
            write_ms = (started.elapsed() - encoded).as_millis() as u64,
            "snapshot built"
        );
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
        let commands: usize = entries
            .iter()
            .map(|e| if let EntryPayload::Normal(r) = &e.payload { r.commands.len() } else { 1 })
            .sum();
        let events = self.events.clone();
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
                // Under the write lock: the buffer is never ahead of or behind the state.
                events.publish(entry.log_id.index, applied.state.take_changes());
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

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let new: Applied = off_runtime(|| codec::decode_limited(&data, codec::SNAPSHOT_LIMIT))
            .map_err(|e| io_err(subject, ErrorVerb::Read, e))?;
        // Durable first, then visible: a crash after the flush restarts from this snapshot.
        self.write_snapshot(&StoredSnapshot { meta: meta.clone(), data }).await?;
        let new = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: new.state,
        };
        let index = meta.last_log_id.map_or(0, |l| l.index);
        off_runtime(|| {
            let mut guard = write_politely(&self.applied);
            let old = std::mem::replace(&mut *guard, new);
            // The changes up to the snapshot were never seen here: subscribers below it re-read.
            self.events.reset(index);
            drop(guard);
            drop(old); // a large state takes a while to free: outside the lock
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .read_snapshot()?
            .map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

#[cfg(test)]
mod bench;

#[cfg(test)]
mod tests {
    //! openraft's own storage conformance suite, run against the real sled stores.
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct SledBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
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

    #[tokio::test]
    async fn a_snapshot_in_the_old_format_is_read_and_replaced_by_a_snapshot_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Applied::default();
        {
            let dbs = open(dir.path()).unwrap();
            let meta = SnapshotMeta {
                last_log_id: None,
                last_membership: StoredMembership::default(),
                snapshot_id: "old".into(),
            };
            let stored = StoredSnapshot { meta, data: codec::encode(&old).unwrap() };
            dbs.raft
                .open_tree("sm")
                .unwrap()
                .insert(KEY_SNAPSHOT, codec::encode(&stored).unwrap())
                .unwrap();
            dbs.raft.flush().unwrap();
        }
        let dbs = open(dir.path()).unwrap();
        let (_, mut sm) = open_stores(&dbs).unwrap();
        assert_eq!(
            sm.get_current_snapshot().await.unwrap().expect("the old snapshot").meta.snapshot_id,
            "old"
        );
        let built = sm.build_snapshot().await.unwrap();
        assert!(
            dbs.raft.open_tree("sm").unwrap().get(KEY_SNAPSHOT).unwrap().is_none(),
            "the old copy is removed"
        );
        drop((sm, dbs));
        let dbs = open(dir.path()).unwrap();
        let (_, mut sm) = open_stores(&dbs).unwrap();
        let current =
            sm.get_current_snapshot().await.unwrap().expect("the new snapshot survives a reopen");
        assert_eq!(current.meta, built.meta);
        assert_eq!(
            current.snapshot.get_ref(),
            built.snapshot.get_ref(),
            "the same bytes come back"
        );
        let back: Applied =
            codec::decode_limited(current.snapshot.get_ref(), codec::SNAPSHOT_LIMIT).unwrap();
        assert_eq!(back.state, sm.applied().read().unwrap().state);
    }
}
