//! The Raft log and vote of a master, in [`raft_log`] under `<data dir>/raft-log/`: a
//! write-ahead log of CRC-checked records in chunk files, written and `fdatasync`ed by its flush
//! worker thread.
//!
//! Why not sled, which held the log before: sled 0.34's flush is `pwrite` plus
//! `sync_file_range`, which neither flushes the drive's write cache nor persists a grown file's
//! size; its blobs (every value over ~128 KiB, which is most batches under load) are never synced
//! at all; and its recovery treats a bad checksum anywhere as the end of the log, silently
//! dropping what follows (amnesia, then a second vote in one term). raft-log is written for this
//! job by openraft's author and used under databend's meta service.
//!
//! Invariants:
//! - **Nothing is reported durable before `fdatasync` returned for it.** `append` writes its
//!   entries into raft-log's buffer and hands openraft's callback to the flush worker with
//!   `sync = true`; the worker batches whatever is queued into one sync (group commit) and only
//!   then calls back, so Raft's core never waits on the disk. `save_vote`, `truncate` and `purge`
//!   wait for a synced flush of their own before they return.
//! - **A damaged record is an error at start-up**, never a shorter log: raft-log refuses to
//!   open a chunk with a record that fails its checksum. Only an incomplete *trailing* record (a
//!   write the crash cut short, which was never synced and so never acknowledged) is truncated.
//! - Purged chunk files are unlinked only after the purge record is synced (raft-log orders
//!   this), so a crash never leaves a log whose start is gone but not recorded as purged.

// openraft's `StorageError` is large, and it is the error type the storage traits require.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError, Vote};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::codec;
use crate::raft::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// The log directory inside a master's data dir.
pub const LOG_DIR: &str = "raft-log";

/// Payloads kept in memory after they are synced (recent entries are what replication and
/// apply read; older ones are read back from their chunk with `pread`).
const CACHE_BYTES: usize = 64 * 1024 * 1024;
const CACHE_ITEMS: usize = 16 * 1024;
/// A chunk file is closed (and becomes purgeable as a whole) at this size. It bounds the disk a
/// purged log still holds (the open chunk's purged part): at 64 MiB a quiet cluster's data dir
/// grew for hours before its first chunk could go (the 30-minute soak never saw one); at 16 MiB a
/// new chunk (a file create and a directory fsync) is still only every few seconds at the highest
/// submission rates.
const CHUNK_BYTES: usize = 16 * 1024 * 1024;
/// A log write or sync slower than this is logged: the disk is holding up commits.
const SLOW_LOG_IO: std::time::Duration = std::time::Duration::from_millis(100);

/// A value stored in the log's records: triad's own encoding ([`codec`]) behind a length, so
/// that a record decodes from a stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stored<T>(pub T);

fn encode_len_prefixed<W: io::Write>(bytes: &[u8], mut w: W) -> io::Result<usize> {
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("log value over 4 GiB"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)?;
    Ok(4 + bytes.len())
}

fn decode_len_prefixed<R: io::Read>(mut r: R, limit: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log value of {len} bytes, at most {limit}"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Log ids and votes are small; anything longer is damage.
const SMALL_VALUE_LIMIT: usize = 4096;

impl<T: Serialize> Encode for Stored<T> {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        let bytes = codec::encode(&self.0).map_err(io::Error::other)?;
        encode_len_prefixed(&bytes, w)
    }
}

impl<T: DeserializeOwned> Decode for Stored<T> {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        let bytes = decode_len_prefixed(r, SMALL_VALUE_LIMIT)?;
        codec::decode_stored(&bytes)
            .map(Stored)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }
}

/// An entry as stored: its encoded bytes, shared with the payload cache (decoded on read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryBytes(pub Arc<[u8]>);

impl Encode for EntryBytes {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        encode_len_prefixed(&self.0, w)
    }
}

impl Decode for EntryBytes {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        // An entry is at most one AppendEntries payload: the codec's own limit bounds it again
        // when it is decoded, this only bounds the allocation.
        decode_len_prefixed(r, codec::RPC_LIMIT as usize).map(|b| EntryBytes(b.into()))
    }
}

/// What a synced flush reports to.
pub enum Flushed {
    /// openraft's append callback, and when the append was written (for the sync latency
    /// metric).
    Append(LogFlushed<TypeConfig>, std::time::Instant),
    /// A caller waiting for its own flush (vote, truncate, purge).
    Wait(std::sync::mpsc::SyncSender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: io::Result<()>) {
        match self {
            Flushed::Append(cb, written) => {
                let m = crate::metrics::get();
                m.log_flush_seconds.observe(written.elapsed().as_secs_f64());
                cb.log_io_completed(res)
            }
            // The waiter may have given up (its caller was dropped): nothing to tell then.
            Flushed::Wait(tx) => raft_log::Callback::send(tx, res),
        }
    }
}

/// raft-log's type parameters for triad.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WalTypes;

impl raft_log::Types for WalTypes {
    type LogId = Stored<LogId>;
    type LogPayload = EntryBytes;
    type Vote = Stored<Vote<NodeId>>;
    type Callback = Flushed;
    type UserData = Stored<()>;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        payload.0.len() as u64
    }
}

fn log_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Logs, verb, openraft::AnyError::new(&e)).into()
}
fn vote_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Vote, verb, openraft::AnyError::new(&e)).into()
}

/// Opens (or creates) the log under `data_dir`. Fails with the damaged chunk and offset when a
/// record in the middle of the log does not check.
pub fn open(data_dir: &Path) -> io::Result<LogStore> {
    let dir = data_dir.join(LOG_DIR);
    std::fs::create_dir_all(&dir)?;
    let mut config = raft_log::Config::new(dir.display());
    config.log_cache_capacity = Some(CACHE_BYTES);
    config.log_cache_max_items = Some(CACHE_ITEMS);
    config.wal.chunk_max_size = Some(CHUNK_BYTES);
    // Group commit comes from the queue itself: whatever arrived while one sync ran goes into the
    // next. Waiting for more on an idle log would only add latency.
    config.wal.flush_batch_wait = Some(std::time::Duration::ZERO);
    check_tail(&dir)?;
    let log = raft_log::RaftLog::<WalTypes>::open(Arc::new(config)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "the Raft log in {} cannot be read ({e}); if a record is damaged, this master's \
                 log cannot be trusted: replace the master (see README, 'Replacing a master')",
                dir.display()
            ),
        )
    })?;
    Ok(LogStore { log: Arc::new(Mutex::new(log)) })
}

/// Refuses a log whose last chunk has a bad record with good records after it.
///
/// raft-log truncates the last chunk at its first record that ends early (`UnexpectedEof`) or
/// is followed only by zeros: what a crash leaves of a write that was never synced. But a record
/// in the middle whose *length* was damaged also "ends early" (it claims to run past the end of
/// the file), and truncating there would silently drop every acknowledged record after it; a
/// chunk whose first record is damaged so would even be removed whole. So before raft-log opens
/// the log, the last chunk is read through: at the first record that does not decode, the rest
/// of the file is searched for any record that does. A torn tail has none (nothing was written
/// after the write the crash cut short); damage in the middle has the records that follow it.
fn check_tail(dir: &Path) -> io::Result<()> {
    type Record = raft_log::RaftLogRecord<WalTypes>;
    let mut chunks: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("r-") && n.ends_with(".wal"))
        })
        .collect();
    // Chunk names are zero-padded offsets: the last by name is the last chunk.
    chunks.sort();
    let Some(last) = chunks.last() else { return Ok(()) };
    let bytes = std::fs::read(last)?;
    let decodes = |from: usize| {
        let mut r = &bytes[from..];
        Record::decode(&mut r).map(|_| bytes.len() - r.len())
    };
    let mut at = 0;
    while at < bytes.len() {
        match decodes(at) {
            Ok(next) => at = next,
            Err(e) => {
                if let Some(good) = (at + 1..bytes.len()).find(|&o| decodes(o).is_ok()) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the Raft log in {} is damaged: the record at offset {at} of {} does                              not check ({e}) but a valid record follows at offset {good}, so                              dropping it would lose acknowledged entries; this master's log                              cannot be trusted: replace the master (see README, 'Replacing a                              master')",
                            dir.display(),
                            last.display()
                        ),
                    ));
                }
                // A torn tail: raft-log drops it (a crash cut the write short before any sync).
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The Raft log and vote. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<raft_log::RaftLog<WalTypes>>>,
}

impl LogStore {
    /// The log, locked. Every operation under the lock is in memory (appends go to a buffer,
    /// syncs to the flush worker), except reading an entry that left the payload cache.
    fn lock(&self) -> MutexGuard<'_, raft_log::RaftLog<WalTypes>> {
        // A panic while holding the lock leaves raft-log's in-memory state unknown: stop here
        // rather than serve a log that may not match the disk.
        self.log.lock().expect("raft log lock poisoned")
    }

    /// Queues a synced flush and waits for it, off the async workers.
    async fn sync(
        &self,
        verb: ErrorVerb,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let err = |e: io::Error| -> StorageError {
            StorageIOError::new(subject.clone(), verb, openraft::AnyError::new(&e)).into()
        };
        self.lock().flush(true, Some(Flushed::Wait(tx))).map_err(err)?;
        let started = std::time::Instant::now();
        let synced = tokio::task::spawn_blocking(move || rx.recv())
            .await
            .map_err(|e| err(io::Error::other(e.to_string())))?
            .map_err(|_| err(io::Error::other("the log's flush worker stopped")))?;
        if started.elapsed() > SLOW_LOG_IO {
            tracing::warn!(ms = started.elapsed().as_millis() as u64, "slow log sync");
        }
        synced.map_err(err)
    }
}

/// Planted bug `no-fsync` only: is the 500 ms lazy sync due (and then counted as done)?
fn lazy_sync_due() -> bool {
    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(500));
    if due {
        *last = Some(std::time::Instant::now());
    }
    due
}

impl LogStore {
    /// Syncs whatever is written so far (the committed hint among it): on a clean stop.
    pub async fn sync_now(&self) -> Result<(), StorageError> {
        self.sync(ErrorVerb::Write, ErrorSubject::Logs).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        if from >= to {
            return Ok(Vec::new());
        }
        let payloads: Vec<EntryBytes> = {
            let log = self.lock();
            log.read(from, to)
                .map(|r| r.map(|(_, p)| p))
                .collect::<io::Result<_>>()
                .map_err(|e| log_err(ErrorVerb::Read, e))?
        };
        payloads
            .iter()
            .map(|p| codec::decode_stored(&p.0).map_err(|e| log_err(ErrorVerb::Read, e)))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.lock();
        let state = log.log_state();
        let last_purged = state.purged().map(|l| l.0);
        let last_log_id = state.last().map(|l| l.0).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.lock().save_vote(Stored(*vote)).map_err(|e| vote_err(ErrorVerb::Write, e))?;
        if crate::chaos::on(crate::chaos::Bug::NoFsync) {
            // Planted bug: the vote counts before it is synced (see `crate::chaos`).
            let sync = lazy_sync_due();
            return self.lock().flush(sync, None).map_err(|e| vote_err(ErrorVerb::Write, e));
        }
        self.sync(ErrorVerb::Write, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().log_state().vote().map(|v| v.0))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for a faster restart only: written with the next synced flush, never waited for
        // (openraft re-derives it).
        if let Some(c) = committed {
            self.lock().commit(Stored(c)).map_err(|e| log_err(ErrorVerb::Write, e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().log_state().committed().map(|c| c.0))
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
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| log_err(ErrorVerb::Write, e))?;
            encoded.push((Stored(entry.log_id), EntryBytes(bytes.into())));
        }
        let started = std::time::Instant::now();
        let mut log = self.lock();
        log.append(encoded).map_err(|e| log_err(ErrorVerb::Write, e))?;
        if crate::chaos::on(crate::chaos::Bug::NoFsync) {
            // Planted bug: done before anything is synced (see `crate::chaos`).
            let sync = lazy_sync_due();
            log.flush(sync, None).map_err(|e| log_err(ErrorVerb::Write, e))?;
            drop(log);
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // Durable before openraft may count this node towards a quorum: the callback runs after
        // the worker's `fdatasync` covering these records.
        log.flush(true, Some(Flushed::Append(callback, started)))
            .map_err(|e| log_err(ErrorVerb::Write, e))?;
        drop(log);
        if started.elapsed() > SLOW_LOG_IO {
            tracing::warn!(ms = started.elapsed().as_millis() as u64, "slow log write");
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock().truncate(log_id.index).map_err(|e| log_err(ErrorVerb::Delete, e))?;
        self.sync(ErrorVerb::Delete, ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock().purge(Stored(log_id)).map_err(|e| log_err(ErrorVerb::Delete, e))?;
        self.sync(ErrorVerb::Delete, ErrorSubject::Logs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::blank_ent;

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..to).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect()
    }

    async fn write(store: &LogStore, entries: Vec<Entry>) {
        let encoded: Vec<_> = entries
            .into_iter()
            .map(|e| (Stored(e.log_id), EntryBytes(codec::encode(&e).unwrap().into())))
            .collect();
        store.lock().append(encoded).unwrap();
        store.sync_now().await.unwrap();
    }

    /// The one chunk file the log has written to (the largest).
    fn chunk_file(dir: &Path) -> std::path::PathBuf {
        std::fs::read_dir(dir.join(LOG_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .expect("a chunk file")
    }

    #[tokio::test]
    async fn entries_and_the_vote_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path()).unwrap();
            write(&store, entries(1, 50)).await;
            store.save_vote(&Vote::new(3, 2)).await.unwrap();
        }
        let mut store = open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        let back = store.try_get_log_entries(1..50).await.unwrap();
        assert_eq!(back.len(), 49);
        assert_eq!(back.last().unwrap().log_id.index, 49);
        assert_eq!(store.get_log_state().await.unwrap().last_log_id.unwrap().index, 49);
    }

    #[tokio::test]
    async fn a_damaged_record_inside_the_log_is_an_error_at_start_up_not_a_shorter_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path()).unwrap();
            write(&store, entries(1, 200)).await;
        }
        let file = chunk_file(dir.path());
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let err = open(dir.path()).err().expect("a damaged log must not open");
        let msg = err.to_string();
        assert!(
            (msg.contains("cannot be read") || msg.contains("is damaged"))
                && msg.contains("replace the master"),
            "{msg}"
        );
    }

    /// The offsets at which the records of `file` start.
    fn record_starts(file: &Path) -> Vec<usize> {
        let bytes = std::fs::read(file).unwrap();
        let (mut at, mut starts) = (0, Vec::new());
        while at < bytes.len() {
            starts.push(at);
            let mut r = &bytes[at..];
            raft_log::RaftLogRecord::<WalTypes>::decode(&mut r).unwrap();
            at = bytes.len() - r.len();
        }
        starts
    }

    #[tokio::test]
    async fn a_record_in_the_middle_claiming_to_run_past_the_end_is_an_error_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path()).unwrap();
            write(&store, entries(1, 200)).await;
        }
        // An append record is: type (4 bytes), the log id behind its length (4 + n), the payload
        // behind its length. A payload length grown past the end of the file reads as a record
        // that a crash cut short: raft-log alone would truncate the log there.
        let file = chunk_file(dir.path());
        let starts = record_starts(&file);
        let mut bytes = std::fs::read(&file).unwrap();
        let rec = starts[starts.len() / 2];
        let id_len = u32::from_be_bytes(bytes[rec + 4..rec + 8].try_into().unwrap()) as usize;
        let len_at = rec + 8 + id_len;
        bytes[len_at..len_at + 4].copy_from_slice(&(1u32 << 20).to_be_bytes());
        std::fs::write(&file, &bytes).unwrap();
        let err = open(dir.path()).err().expect("a damaged length must not open");
        let msg = err.to_string();
        assert!(
            msg.contains("valid record follows") && msg.contains("replace the master"),
            "{msg}"
        );
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "nothing was truncated");
    }

    #[tokio::test]
    async fn a_torn_last_record_is_dropped_and_everything_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path()).unwrap();
            write(&store, entries(1, 100)).await;
        }
        // A crash in the middle of the last write: that record was never synced, so never
        // acknowledged.
        let file = chunk_file(dir.path());
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 3).unwrap();
        let mut store = open(dir.path()).unwrap();
        let last = store.get_log_state().await.unwrap().last_log_id.unwrap().index;
        assert_eq!(last, 98, "only the torn record is gone");
        assert_eq!(store.try_get_log_entries(1..=last).await.unwrap().len(), 98);
    }
}
