//! Reading an attempt's captured output back: by byte range, across its rotated files (see
//! `capture.rs`), for attempts live here, finished, or run before a restart.
//!
//! Invariants:
//! - **The files are the truth.** Output is read from disk, never from memory, so it survives
//!   the runner; attempt 0 means the latest attempt known in memory or present on disk.
//! - **Offsets are absolute.** Byte `n` is the `n`-th byte the stream ever carried, whatever
//!   rotation dropped since. A read from before the oldest kept byte starts at the oldest kept
//!   byte, and [`Chunk::start`] says so; a read past the end returns nothing.
//! - **`eof` never lies.** It is true only when the bytes returned reach the end of what was
//!   captured and the attempt is not live here (the runner records an attempt's end only after
//!   its output was copied). Liveness is read before the files, so a `false` liveness never
//!   hides output written after the read.
//! - Readers never leave the attempts tree: a job id that is not one path component is
//!   `OutputNotFound`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::capture::file_name;
use super::workdir::is_path_component;
use super::{Runner, RunnerError};

/// One read of an attempt's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The bytes read.
    pub data: Vec<u8>,
    /// The offset of `data`'s first byte.
    pub start: u64,
    /// No more output will come after `data`.
    pub eof: bool,
}

/// How often a read retries when rotation removed a file between listing and opening it.
const ROTATION_RETRIES: usize = 5;
/// The block a tail scans backwards with.
const TAIL_BLOCK: u64 = 64 << 10;

impl Runner {
    /// Reads up to `max_bytes` of an attempt's stdout (or stderr) from byte `offset`, or, when
    /// `tail_lines` > 0, from the start of its last `tail_lines` lines.
    ///
    /// `attempt` 0 means the latest attempt of the task, known to this runner or found on disk.
    /// Works for attempts from before a restart, as long as their files exist. `eof` is true
    /// when the returned bytes reach the end of the output and the attempt is not live here, so
    /// no more output will come; a reader following a live attempt polls with growing offsets.
    #[allow(clippy::too_many_arguments)]
    pub async fn read_output(
        &self,
        job_id: &str,
        task_index: u32,
        attempt: u32,
        stderr: bool,
        offset: u64,
        max_bytes: usize,
        tail_lines: u32,
    ) -> Result<Chunk, RunnerError> {
        let attempt = self.resolve_attempt(job_id, task_index, attempt).await?;
        // Liveness is read before the files, so a `false` here never hides output written later.
        let live = self.is_live_attempt(job_id, task_index, attempt);
        let dir = self.attempt_dir(job_id, task_index, attempt);
        let stream = if stderr { "stderr" } else { "stdout" };
        let read = tokio::task::spawn_blocking(move || {
            read_stream(&dir, stream, offset, max_bytes, tail_lines)
        })
        .await
        .map_err(|e| RunnerError::Read {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let Some((data, start, end)) = read else {
            return Err(RunnerError::OutputNotFound {
                job_id: job_id.to_owned(),
                task_index,
                attempt,
            });
        };
        let eof = !live && start.saturating_add(data.len() as u64) >= end;
        Ok(Chunk { data, start, eof })
    }

    /// The attempt number `attempt` stands for: itself, or for 0 the latest of the task known
    /// here or on disk. `OutputNotFound` when there is none or the job id is not a path
    /// component.
    pub async fn resolve_attempt(
        &self,
        job_id: &str,
        task_index: u32,
        attempt: u32,
    ) -> Result<u32, RunnerError> {
        let not_found =
            || RunnerError::OutputNotFound { job_id: job_id.to_owned(), task_index, attempt };
        if !is_path_component(job_id) {
            return Err(not_found());
        }
        match attempt {
            0 => self.latest_attempt(job_id, task_index).await.ok_or_else(not_found),
            n => Ok(n),
        }
    }

    /// True if a live attempt here writes to this attempt's directory.
    pub fn is_live_attempt(&self, job_id: &str, task_index: u32, attempt: u32) -> bool {
        self.lock().values().any(|e| {
            e.is_live()
                && e.info.job_id == job_id
                && e.info.task_index == task_index
                && e.info.attempt == attempt
        })
    }

    /// The highest attempt number of a task, known in memory or present on disk.
    async fn latest_attempt(&self, job_id: &str, task_index: u32) -> Option<u32> {
        let known = self
            .lock()
            .values()
            .filter(|e| e.info.job_id == job_id && e.info.task_index == task_index)
            .map(|e| e.info.attempt)
            .max();
        let mut on_disk = None;
        if let Ok(mut entries) = tokio::fs::read_dir(self.task_dir(job_id, task_index)).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    on_disk = on_disk.max(Some(n));
                }
            }
        }
        known.max(on_disk).filter(|&n| n > 0)
    }
}

/// One kept file of a stream: its first offset, length and path.
struct Piece {
    start: u64,
    len: u64,
    path: PathBuf,
}

/// The kept files of `stream` in `dir`, oldest first; `None` if there are none (a file named
/// just `stream`, as executors before rotation wrote, counts as the one starting at 0).
fn pieces(dir: &Path, stream: &str) -> std::io::Result<Option<Vec<Piece>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let prefix = format!("{stream}.");
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let start = if name == stream {
            0
        } else {
            match name.strip_prefix(&prefix).and_then(|n| n.parse::<u64>().ok()) {
                Some(s) if file_name(stream, s) == name => s,
                _ => continue,
            }
        };
        let len = match entry.metadata() {
            Ok(m) => m.len(),
            // Rotated away since the listing: not kept any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.push(Piece { start, len, path: entry.path() });
    }
    out.sort_by_key(|p| p.start);
    Ok((!out.is_empty()).then_some(out))
}

/// Reads `stream` of the attempt in `dir`: up to `max` bytes from `offset` (or from where its
/// last `tail_lines` lines begin), clamped to what is kept. Returns the bytes, their first
/// offset and the end of the output; `None` if the attempt has no such output.
fn read_stream(
    dir: &Path,
    stream: &str,
    offset: u64,
    max: usize,
    tail_lines: u32,
) -> Result<Option<(Vec<u8>, u64, u64)>, RunnerError> {
    let err = |source| RunnerError::Read { path: dir.join(stream), source };
    let mut last = None;
    for _ in 0..ROTATION_RETRIES {
        let Some(pieces) = pieces(dir, stream).map_err(err)? else { return Ok(None) };
        let oldest = pieces[0].start;
        let end = pieces.last().map_or(0, |p| p.start + p.len);
        let from = if tail_lines > 0 {
            match tail_start(&pieces, oldest, end, tail_lines) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(err(e)),
            }
        } else {
            offset.max(oldest)
        };
        match read_range(&pieces, from, end, max) {
            Ok(data) => return Ok(Some((data, from, end))),
            // A file rotated away between the listing and the read: list again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(last.unwrap_or_else(|| std::io::Error::other("output kept rotating"))))
}

/// Up to `max` bytes from `from` (before `end`), across pieces.
fn read_range(pieces: &[Piece], from: u64, end: u64, max: usize) -> std::io::Result<Vec<u8>> {
    let want = end.saturating_sub(from).min(max as u64);
    let mut buf = Vec::with_capacity(want as usize);
    let mut at = from;
    for p in pieces {
        if buf.len() as u64 >= want {
            break;
        }
        if at >= p.start + p.len || at < p.start {
            continue;
        }
        let mut f = std::fs::File::open(&p.path)?;
        f.seek(SeekFrom::Start(at - p.start))?;
        let take = (p.start + p.len - at).min(want - buf.len() as u64);
        let before = buf.len();
        f.take(take).read_to_end(&mut buf)?;
        at += (buf.len() - before) as u64;
        if ((buf.len() - before) as u64) < take {
            // The file is shorter than its listing said (it cannot shrink): stop here.
            break;
        }
    }
    Ok(buf)
}

/// The offset where the last `lines` lines of the kept output begin (a final newline ends the
/// last line, it does not start another); the oldest kept byte if fewer lines are kept.
fn tail_start(pieces: &[Piece], oldest: u64, end: u64, lines: u32) -> std::io::Result<u64> {
    let mut pos = end;
    let mut seen = 0u32;
    let mut first = true;
    while pos > oldest {
        let from = pos.saturating_sub(TAIL_BLOCK).max(oldest);
        let block = read_range(pieces, from, pos, (pos - from) as usize)?;
        let mut slice = &block[..];
        if first {
            first = false;
            if slice.last() == Some(&b'\n') {
                slice = &slice[..slice.len() - 1];
            }
        }
        for (i, b) in slice.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == lines {
                    return Ok(from + i as u64 + 1);
                }
            }
        }
        pos = from;
    }
    Ok(oldest)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{harness, shell, wait_until};
    use super::*;
    use crate::executor::runner::{AttemptSpec, ExitStatus};
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// (data, eof) of a read without tail.
    async fn read(
        runner: &Runner,
        task: u32,
        attempt: u32,
        offset: u64,
        max: usize,
    ) -> (Vec<u8>, bool) {
        let c =
            runner.read_output("job-a", task, attempt, false, offset, max, 0).await.expect("read");
        (c.data, c.eof)
    }

    #[tokio::test]
    async fn read_output_streams_by_offset_and_survives_a_runner_restart() {
        let mut h = harness();
        // A live attempt: output so far is readable but never eof.
        let live = AttemptSpec { task_index: 3, ..shell(2, "echo first; sleep 1000") };
        h.runner.start(live.clone()).await.expect("start");
        wait_until("first line", || async {
            h.runner
                .read_output("job-a", 3, 0, false, 0, 100, 0)
                .await
                .is_ok_and(|c| c.data == b"first\n" && !c.eof)
        })
        .await;
        let (rest, eof) = read(&h.runner, 3, 1, 6, 100).await;
        assert!(rest.is_empty() && !eof, "caught up with a live attempt is not eof");
        assert!(h.runner.stop(2, Duration::from_secs(5)).await);
        assert_eq!(read(&h.runner, 3, 1, 6, 100).await, (vec![], true));

        assert_eq!(h.run_to_end(shell(1, "printf 'hello world'")).await, ExitStatus::Exited(0));
        assert_eq!(read(&h.runner, 2, 1, 0, 5).await, (b"hello".to_vec(), false));
        assert_eq!(read(&h.runner, 2, 1, 5, 100).await, (b" world".to_vec(), true));
        assert_eq!(read(&h.runner, 2, 0, 6, 3).await, (b"wor".to_vec(), false));
        assert_eq!(read(&h.runner, 2, 1, 100, 10).await, (vec![], true));

        // A new runner over the same work dir knows nothing in memory, yet finds the files.
        let (tx, _rx) = mpsc::unbounded_channel();
        let restarted = Runner::new(h.dir.path().to_path_buf(), tx);
        assert_eq!(read(&restarted, 2, 0, 0, 100).await, (b"hello world".to_vec(), true));
        assert!(matches!(
            restarted.read_output("job-a", 2, 7, false, 0, 10, 0).await,
            Err(RunnerError::OutputNotFound { attempt: 7, .. })
        ));
        assert!(matches!(
            restarted.read_output("nope", 0, 0, false, 0, 10, 0).await,
            Err(RunnerError::OutputNotFound { .. })
        ));
        assert!(matches!(
            restarted.read_output("..", 0, 0, false, 0, 10, 0).await,
            Err(RunnerError::OutputNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_tail_counts_lines_from_the_end_and_a_final_newline_ends_the_last_line() {
        let mut h = harness();
        assert_eq!(h.run_to_end(shell(1, "printf 'a\\nbb\\nccc'")).await, ExitStatus::Exited(0));
        let tail = |n| {
            let r = h.runner.clone();
            async move { r.read_output("job-a", 2, 1, false, 0, 100, n).await.expect("tail").data }
        };
        assert_eq!(tail(1).await, b"ccc");
        assert_eq!(tail(2).await, b"bb\nccc");
        assert_eq!(tail(9).await, b"a\nbb\nccc");
        let s = AttemptSpec { task_index: 3, ..shell(2, "printf 'x\\ny\\n'") };
        assert_eq!(h.run_to_end(s).await, ExitStatus::Exited(0));
        let c = h.runner.read_output("job-a", 3, 1, false, 0, 100, 1).await.expect("tail");
        assert_eq!((c.data.as_slice(), c.start), (&b"y\n"[..], 2));
    }
}
