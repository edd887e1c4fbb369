//! Capturing an attempt's stdout and stderr: each stream is a pipe that the executor copies into
//! capped, rotated files in the attempt's directory (Nomad's `logs` block: `max_files` files of
//! at most `max_file_bytes` each, the newest kept).
//!
//! Invariants:
//! - **A file is named by the offset of its first byte:** `stdout.<offset>`. Offsets count
//!   every byte the stream ever carried, so a reader's offset keeps its meaning after rotation
//!   drops old files; the oldest kept byte is the smallest file name (`output.rs` reads them).
//! - **At most `max_files` files per stream,** each at most `max_file_bytes` long: when the
//!   newest is full the next one is created and the oldest beyond the cap removed.
//! - **The child never blocks on its output.** A write that fails (the disk is full) is noted
//!   in [`DiskHealth`] and the rest of the stream is read and dropped, so the attempt goes on
//!   and the executor says why it takes no new work.
//! - **Written before it counts as written.** Each chunk is flushed to the file before the next
//!   is read, and the runner records an attempt's end only after both copiers finished (or a
//!   bound passed), so a reader told `eof` has seen every byte that was captured.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::disk::DiskHealth;

/// How an attempt's output is capped: per stream, at most `max_files` files of at most
/// `max_file_bytes` bytes each (the newest kept). The executor's `[output]` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLimits {
    /// Largest size of one output file before the next is started.
    pub max_file_bytes: u64,
    /// How many files of one stream are kept; older ones are deleted.
    pub max_files: u32,
}

impl Default for OutputLimits {
    /// Nomad's defaults: 10 files of 10 MiB, so at most 100 MiB per stream of an attempt.
    fn default() -> Self {
        OutputLimits { max_file_bytes: 10 << 20, max_files: 10 }
    }
}

/// Size of one read from an attempt's pipe.
const CHUNK: usize = 64 << 10;

/// The name of the file of `stream` (`stdout`/`stderr`) whose first byte is at `start`.
pub(super) fn file_name(stream: &str, start: u64) -> String {
    format!("{stream}.{start}")
}

/// The files one stream of one attempt is written to.
pub(super) struct Sink {
    dir: PathBuf,
    stream: &'static str,
    limits: OutputLimits,
    file: tokio::fs::File,
    /// Offset of the current file's first byte.
    start: u64,
    /// Bytes in the current file.
    len: u64,
    /// First offsets of the files kept, oldest first; the last is the current file.
    kept: VecDeque<u64>,
}

impl Sink {
    /// The sink of `stream` in `dir`, writing to the file just created for offset 0.
    pub(super) fn new(
        dir: &Path,
        stream: &'static str,
        limits: OutputLimits,
        first: std::fs::File,
    ) -> Sink {
        Sink {
            dir: dir.to_path_buf(),
            stream,
            limits,
            file: tokio::fs::File::from_std(first),
            start: 0,
            len: 0,
            kept: VecDeque::from([0]),
        }
    }

    /// Appends `buf`, starting new files (and deleting the oldest) at the cap.
    async fn write(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        let max = self.limits.max_file_bytes.max(1);
        while !buf.is_empty() {
            if self.len >= max {
                self.rotate().await?;
            }
            let n = buf.len().min((max - self.len) as usize);
            self.file.write_all(&buf[..n]).await?;
            self.len += n as u64;
            buf = &buf[n..];
        }
        // tokio's file writes in the background: flushing waits for the bytes to reach the file.
        self.file.flush().await
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush().await?;
        self.start += self.len;
        self.len = 0;
        self.file =
            tokio::fs::File::create(self.dir.join(file_name(self.stream, self.start))).await?;
        self.kept.push_back(self.start);
        while self.kept.len() > self.limits.max_files.max(1) as usize {
            if let Some(old) = self.kept.pop_front() {
                match tokio::fs::remove_file(self.dir.join(file_name(self.stream, old))).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Copies `pipe` into `sink` until the pipe closes (every process holding it has exited). A
/// failed write is noted in `disk` and the rest is drained unwritten.
pub(super) async fn copy(
    mut pipe: impl AsyncRead + Unpin,
    mut sink: Sink,
    disk: DiskHealth,
    token: u64,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut failed = false;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(token, stream = sink.stream, error = %e, "reading attempt output");
                return;
            }
        };
        if failed {
            continue;
        }
        if let Err(e) = sink.write(&buf[..n]).await {
            failed = true;
            tracing::warn!(
                token,
                stream = sink.stream,
                dir = %sink.dir.display(),
                error = %e,
                "writing attempt output failed; dropping the rest of this stream"
            );
            disk.note_error(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{harness_with, shell};
    use super::*;
    use crate::executor::runner::ExitStatus;

    fn names(dir: &Path, stream: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&format!("{stream}.")))
            .collect();
        v.sort_by_key(|n| n.rsplit('.').next().and_then(|s| s.parse::<u64>().ok()));
        v
    }

    #[tokio::test]
    async fn rotation_keeps_at_most_the_cap_newest_first_and_offsets_stay_absolute() {
        let limits = OutputLimits { max_file_bytes: 100, max_files: 3 };
        let mut h = harness_with(limits);
        // 1,000 bytes of stdout: lines "0000\n" .. "0199\n"; and a little stderr.
        let s = shell(
            1,
            "i=0; while [ $i -lt 200 ]; do printf '%04d\\n' $i; i=$((i+1)); done; echo e >&2",
        );
        assert_eq!(h.run_to_end(s.clone()).await, ExitStatus::Exited(0));
        let dir = h.dir.path().join("attempts/job-a/2/1");
        assert_eq!(names(&dir, "stdout"), vec!["stdout.700", "stdout.800", "stdout.900"]);
        assert_eq!(names(&dir, "stderr"), vec!["stderr.0"]);
        for n in names(&dir, "stdout") {
            assert_eq!(std::fs::metadata(dir.join(n)).expect("stat").len(), 100);
        }
        // An offset inside what was kept reads from there, across files.
        let c = h.runner.read_output("job-a", 2, 1, false, 750, 120, 0).await.expect("read");
        assert_eq!((c.start, c.data.len(), c.eof), (750, 120, false));
        assert_eq!(&c.data[..5], b"0150\n");
        // An offset before the oldest kept byte reads from the oldest kept byte.
        let c = h.runner.read_output("job-a", 2, 1, false, 10, 1 << 20, 0).await.expect("read");
        assert_eq!((c.start, c.data.len(), c.eof), (700, 300, true));
        assert_eq!(&c.data[..5], b"0140\n");
        // The last 3 lines.
        let c = h.runner.read_output("job-a", 2, 1, false, 0, 1 << 20, 3).await.expect("read");
        assert_eq!((c.start, c.eof), (985, true));
        assert_eq!(c.data, b"0197\n0198\n0199\n");
        // More lines than kept: everything kept.
        let c = h.runner.read_output("job-a", 2, 1, false, 0, 1 << 20, 500).await.expect("read");
        assert_eq!(c.start, 700);
    }
}
