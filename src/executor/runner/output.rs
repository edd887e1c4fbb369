//! Reading an attempt's captured output back: by byte range, from the files in its attempt
//! directory, for attempts live here, finished, or run before a restart.
//!
//! Invariants:
//! - **The files are the truth.** Output is read from disk, never from memory, so it survives
//!   the runner; attempt 0 means the latest attempt known in memory or present on disk.
//! - **`eof` never lies.** It is true only when the bytes returned reach the end of the file and
//!   the attempt is not live here. Liveness is read before the file, so a `false` liveness never
//!   hides output written after the read.
//! - Readers never leave the attempts tree: a job id that is not one path component is
//!   `OutputNotFound`.

use std::io::SeekFrom;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::workdir::is_path_component;
use super::{Runner, RunnerError};

impl Runner {
    /// Reads up to `max_bytes` of an attempt's stdout (or stderr) from byte `offset`.
    ///
    /// `attempt` 0 means the latest attempt of the task, known to this runner or found on disk.
    /// Works for attempts from before a restart, as long as their files exist. `eof` is true
    /// when the returned bytes reach the end of the file and the attempt is not live here, so
    /// no more output will come; a reader streaming a live attempt polls with growing offsets.
    pub async fn read_output(
        &self,
        job_id: &str,
        task_index: u32,
        attempt: u32,
        stderr: bool,
        offset: u64,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, bool), RunnerError> {
        let not_found =
            || RunnerError::OutputNotFound { job_id: job_id.to_owned(), task_index, attempt };
        if !is_path_component(job_id) {
            return Err(not_found());
        }
        let attempt = match attempt {
            0 => self.latest_attempt(job_id, task_index).await.ok_or_else(not_found)?,
            n => n,
        };
        // Liveness is read before the file, so a `false` here never hides output written later.
        let live = self.is_live_attempt(job_id, task_index, attempt);
        let path = self.attempt_dir(job_id, task_index, attempt).join(if stderr {
            "stderr"
        } else {
            "stdout"
        });
        let Some((buf, len)) = read_range(&path, offset, max_bytes).await? else {
            return Err(RunnerError::OutputNotFound {
                job_id: job_id.to_owned(),
                task_index,
                attempt,
            });
        };
        let eof = !live && offset.saturating_add(buf.len() as u64) >= len;
        Ok((buf, eof))
    }

    /// True if a live attempt here writes to this attempt's directory.
    fn is_live_attempt(&self, job_id: &str, task_index: u32, attempt: u32) -> bool {
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

/// Up to `max_bytes` of the file at `path` from `offset`, and the file's length; `None` if the
/// file does not exist.
async fn read_range(
    path: &Path,
    offset: u64,
    max_bytes: usize,
) -> Result<Option<(Vec<u8>, u64)>, RunnerError> {
    let read_err = |source| RunnerError::Read { path: path.to_path_buf(), source };
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let len = file.metadata().await.map_err(read_err)?.len();
    let mut buf = Vec::new();
    if offset < len {
        file.seek(SeekFrom::Start(offset)).await.map_err(read_err)?;
        let want = (len - offset).min(max_bytes as u64);
        file.take(want).read_to_end(&mut buf).await.map_err(read_err)?;
    }
    Ok(Some((buf, len)))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{harness, shell, wait_until};
    use super::*;
    use crate::executor::runner::{AttemptSpec, ExitStatus};
    use std::time::Duration;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn read_output_streams_by_offset_and_survives_a_runner_restart() {
        let mut h = harness();
        // A live attempt: output so far is readable but never eof.
        let live = AttemptSpec { task_index: 3, ..shell(2, "echo first; sleep 1000") };
        h.runner.start(live.clone()).await.expect("start");
        wait_until("first line", || async {
            h.runner
                .read_output("job-a", 3, 0, false, 0, 100)
                .await
                .is_ok_and(|(b, eof)| b == b"first\n" && !eof)
        })
        .await;
        let (rest, eof) = h.runner.read_output("job-a", 3, 1, false, 6, 100).await.expect("read");
        assert!(rest.is_empty() && !eof, "caught up with a live attempt is not eof");
        assert!(h.runner.stop(2, Duration::from_secs(5)).await);
        assert_eq!(
            h.runner.read_output("job-a", 3, 1, false, 6, 100).await.expect("read"),
            (vec![], true)
        );

        assert_eq!(h.run_to_end(shell(1, "printf 'hello world'")).await, ExitStatus::Exited(0));
        let read = |runner: Runner, attempt, offset, max| async move {
            runner.read_output("job-a", 2, attempt, false, offset, max).await.expect("read")
        };
        assert_eq!(read(h.runner.clone(), 1, 0, 5).await, (b"hello".to_vec(), false));
        assert_eq!(read(h.runner.clone(), 1, 5, 100).await, (b" world".to_vec(), true));
        assert_eq!(read(h.runner.clone(), 0, 6, 3).await, (b"wor".to_vec(), false));
        assert_eq!(read(h.runner.clone(), 1, 100, 10).await, (vec![], true));

        // A new runner over the same work dir knows nothing in memory, yet finds the files.
        let (tx, _rx) = mpsc::unbounded_channel();
        let restarted = Runner::new(h.dir.path().to_path_buf(), tx);
        assert_eq!(read(restarted.clone(), 0, 0, 100).await, (b"hello world".to_vec(), true));
        assert!(matches!(
            restarted.read_output("job-a", 2, 7, false, 0, 10).await,
            Err(RunnerError::OutputNotFound { attempt: 7, .. })
        ));
        assert!(matches!(
            restarted.read_output("nope", 0, 0, false, 0, 10).await,
            Err(RunnerError::OutputNotFound { .. })
        ));
        assert!(matches!(
            restarted.read_output("..", 0, 0, false, 0, 10).await,
            Err(RunnerError::OutputNotFound { .. })
        ));
    }
}
