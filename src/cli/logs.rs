//! `triad job logs`: a task's output, read from the executor that ran the chosen attempt
//! (`ReadOutput`), or followed as it is written (`--follow`, `FollowOutput`) across the task's
//! attempts until the task ends; `--tail N` starts at the last N lines.
//!
//! Invariants:
//! - **Every wait is bounded.** Each call has a deadline; a follow stream that sends nothing for
//!   [`FOLLOW_SILENCE`] (the executor sends a keep-alive every 10 s) is taken as broken. Between
//!   tries the CLI re-reads `GetJob`, so it follows the task wherever it runs next, and it stops
//!   once the task is over and its last attempt's output was printed.
//! - **No byte twice.** A follow resumes an attempt at the offset it reached, so a broken stream
//!   or an executor restart neither repeats nor skips output that is still kept.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use super::executors::list_executors;
use super::{st, status_line};
use crate::api::pb;
use crate::api::pb::worker_service_client::WorkerServiceClient;
use crate::client::Client;

/// Deadline of one ReadOutput call, and of opening a FollowOutput stream.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A follow stream silent for this long is broken (the executor sends keep-alives every 10 s).
const FOLLOW_SILENCE: Duration = Duration::from_secs(30);
/// Pause before looking again at a task that has not started, or between an attempt's end and
/// the task's next state.
const REPOLL: Duration = Duration::from_millis(500);

/// Which output to print.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    pub task: u32,
    /// A fixed attempt; `None`: the latest that started (and, when following, the next ones).
    pub attempt: Option<u32>,
    pub stderr: bool,
    /// Start at the last this many lines (0: from the beginning).
    pub tail: u32,
}

/// Prints the output kept so far of the chosen attempt (`job logs` without `--follow`).
pub async fn print(client: &Client, job_id: &str, want: Want) -> anyhow::Result<()> {
    let job = client.get_job(job_id, false).await.map_err(st)?;
    let t = task_of(&job, job_id, want.task)?;
    let a = choose_attempt(t, job_id, want.attempt)?
        .with_context(|| format!("task {} of job {job_id} has not run yet", want.task))?;
    let exec = executor(client, &a.executor).await?;
    let req = pb::ReadOutputRequest {
        job_id: job_id.to_string(),
        task_index: want.task,
        attempt: a.number,
        stderr: want.stderr,
        offset: 0,
        max_bytes: 0,
        tail_lines: want.tail,
    };
    read_all(client.dialer(), &exec, req).await
}

/// Follows the task's output until the task is over (`job logs --follow`).
pub async fn follow(client: &Client, job_id: &str, want: Want) -> anyhow::Result<()> {
    let mut tail = want.tail;
    // The attempt being followed and the offset reached in it.
    let mut at: Option<(u32, u64)> = None;
    // The attempt whose output was followed to its end.
    let mut done: Option<u32> = None;
    loop {
        let job = client.get_job(job_id, false).await.map_err(st)?;
        let t = task_of(&job, job_id, want.task)?;
        let over = matches!(t.state.as_str(), "succeeded" | "failed" | "cancelled");
        let Some(a) = choose_attempt(t, job_id, want.attempt)?.filter(|a| a.started_at_ms != 0)
        else {
            if over {
                return Ok(()); // it never ran
            }
            tokio::time::sleep(REPOLL).await;
            continue;
        };
        if done == Some(a.number) {
            if over || want.attempt.is_some() {
                return Ok(());
            }
            tokio::time::sleep(REPOLL).await; // its next attempt, or its end, is coming
            continue;
        }
        let offset = match at {
            Some((n, offset)) if n == a.number => offset,
            Some(_) => {
                eprintln!(
                    "--- task {} attempt {} on executor {} ---",
                    want.task, a.number, a.executor
                );
                0
            }
            None => 0,
        };
        let req = pb::FollowOutputRequest {
            job_id: job_id.to_string(),
            task_index: want.task,
            attempt: a.number,
            stderr: want.stderr,
            offset,
            tail_lines: tail,
        };
        let followed = match executor(client, &a.executor).await {
            Ok(exec) => follow_attempt(client.dialer(), &exec, req, offset).await,
            Err(e) => Err((offset, e)),
        };
        tail = 0;
        match followed {
            Ok(reached) => {
                at = Some((a.number, reached));
                done = Some(a.number);
            }
            Err((reached, e)) => {
                at = Some((a.number, reached));
                if over {
                    return Err(e);
                }
                // The executor may be restarting or gone: the task's next state says which.
                tracing::debug!(error = %e, "following output; trying again");
                tokio::time::sleep(REPOLL).await;
            }
        }
    }
}

/// Prints one attempt's output from `offset` as it arrives; returns the offset reached, with
/// the error if the stream broke before the attempt's end.
async fn follow_attempt(
    dialer: &crate::api::Dialer,
    exec: &pb::ExecutorInfo,
    req: pb::FollowOutputRequest,
    offset: u64,
) -> Result<u64, (u64, anyhow::Error)> {
    let mut reached = offset;
    let fail = |what: String| {
        anyhow::anyhow!("following output on executor {} at {}: {what}", exec.id, exec.addr)
    };
    // A tail starts where it starts; otherwise a later start means rotation dropped bytes.
    let mut annotate = req.tail_lines == 0;
    let mut worker = worker(dialer, exec).map_err(|e| (reached, e))?;
    // No deadline on the stream as a whole (it lasts as long as the attempt): each message is
    // awaited for at most FOLLOW_SILENCE instead.
    let opened = tokio::time::timeout(CALL_TIMEOUT, worker.follow_output(req)).await;
    let mut stream = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return Err((reached, fail(status_line(&s)))),
        Err(_) => return Err((reached, fail("no answer".into()))),
    };
    loop {
        let msg = match tokio::time::timeout(FOLLOW_SILENCE, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Err((reached, fail("the stream ended early".into()))),
            Ok(Err(s)) => return Err((reached, fail(status_line(&s)))),
            Err(_) => return Err((reached, fail(format!("silent for {FOLLOW_SILENCE:?}")))),
        };
        if annotate {
            note_dropped(reached, msg.start);
        }
        annotate = true;
        write_out(&msg.data).map_err(|e| (reached, e))?;
        reached = msg.start + msg.data.len() as u64;
        if msg.eof {
            return Ok(reached);
        }
    }
}

/// Copies the output `req` names from `exec` to stdout, chunk by chunk, until the executor says
/// it has reached the end (or returns nothing more: a live attempt that has caught up).
async fn read_all(
    dialer: &crate::api::Dialer,
    exec: &pb::ExecutorInfo,
    mut req: pb::ReadOutputRequest,
) -> anyhow::Result<()> {
    let mut worker = worker(dialer, exec)?;
    loop {
        let mut call = tonic::Request::new(req.clone());
        call.set_timeout(CALL_TIMEOUT);
        let r = worker
            .read_output(call)
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "reading output from executor {} at {}: {}",
                    exec.id,
                    exec.addr,
                    status_line(&s)
                )
            })?
            .into_inner();
        if req.tail_lines == 0 {
            note_dropped(req.offset, r.start);
        }
        write_out(&r.data)?;
        req.offset = r.start + r.data.len() as u64;
        req.tail_lines = 0;
        if r.eof || r.data.is_empty() {
            return Ok(());
        }
    }
}

/// Says on stderr that bytes between `asked` and `got` were dropped by rotation.
fn note_dropped(asked: u64, got: u64) {
    if got > asked {
        eprintln!("[{} bytes of older output were rotated away]", got - asked);
    }
}

fn write_out(data: &[u8]) -> anyhow::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(data).context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

fn worker(
    dialer: &crate::api::Dialer,
    exec: &pb::ExecutorInfo,
) -> anyhow::Result<WorkerServiceClient<crate::api::Channel>> {
    let chan = dialer.channel(&exec.addr, &crate::api::ServerName::Executor(exec.id.clone()))?;
    Ok(WorkerServiceClient::new(chan).max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES))
}

/// The executor `id`, as the cluster knows it (its address).
async fn executor(client: &Client, id: &str) -> anyhow::Result<pb::ExecutorInfo> {
    list_executors(client)
        .await
        .map_err(st)?
        .into_iter()
        .find(|e| e.id == id)
        .with_context(|| format!("executor {id} is unknown"))
}

fn task_of<'j>(job: &'j pb::Job, job_id: &str, task: u32) -> anyhow::Result<&'j pb::Task> {
    job.tasks
        .iter()
        .find(|t| t.index == task)
        .with_context(|| format!("job {job_id} has no task {task}"))
}

/// Attempt `n` of task `t` (an error if it has none such), or without `n` the latest that
/// started (the last one if none did; `None` if it has no attempt yet).
fn choose_attempt<'t>(
    t: &'t pb::Task,
    job_id: &str,
    attempt: Option<u32>,
) -> anyhow::Result<Option<&'t pb::Attempt>> {
    crate::api::convert::find_attempt(t, attempt)
        .map_err(|n| anyhow::anyhow!("task {} of job {job_id} has no attempt {n}", t.index))
}
