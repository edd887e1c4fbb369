//! Group commit: the leader coalesces the commands that arrive while earlier batches are being
//! made durable into one Raft entry (one append, one flush, one replication round), then answers
//! each caller from its slot in the batch.
//!
//! At most [`MAX_IN_FLIGHT`] batches are in flight; while they are, new commands queue and form
//! the next batch, so batches grow with load and stay at one command when idle (no added latency).
//! Callers' commands keep their order within a batch; concurrent callers are unordered anyway.
//!
//! Bytes are bounded too: a command encoding to more than [`MAX_COMMAND_BYTES`] is refused
//! before it is proposed, and a batch closes before the next command would take it past
//! [`MAX_BATCH_BYTES`], so no entry outgrows what one Raft RPC can carry.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::errors::{commit_timeout, map_write_error, LocalError};
use crate::raft::{Raft, Request, MAX_BATCH_BYTES, MAX_COMMAND_BYTES};
use crate::state::{Command, Outcome, Rejection};

/// Most commands in one Raft entry.
pub const MAX_BATCH: usize = 4096;
/// Batches proposed but not yet applied.
pub const MAX_IN_FLIGHT: usize = 2;
/// Commands waiting for a batch (back-pressure beyond this).
const QUEUE: usize = 65_536;

type Reply = oneshot::Sender<Result<Result<Outcome, Rejection>, LocalError>>;

/// A command waiting for a batch: the command, its encoded size, where its answer goes.
type Proposal = (Command, usize, Reply);

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Proposal>,
}

/// The encoded size of `command`, or `INVALID_ARGUMENT` when it exceeds [`MAX_COMMAND_BYTES`].
fn command_bytes(command: &Command) -> Result<usize, LocalError> {
    let n = crate::raft::codec::encoded_len(command)
        .map_err(|e| tonic::Status::internal(format!("encode command: {e}")))?;
    match usize::try_from(n) {
        Ok(n) if n <= MAX_COMMAND_BYTES => Ok(n),
        _ => Err(tonic::Status::invalid_argument(format!(
            "command is {n} bytes encoded, at most {MAX_COMMAND_BYTES}"
        ))
        .into()),
    }
}

impl Batcher {
    /// Starts the batching task; it ends when every `Batcher` handle is dropped.
    pub fn start(raft: Raft, node_id: u64, timeout: Duration) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, node_id, timeout, rx));
        Batcher { tx }
    }

    /// Proposes one command as part of the next batch; resolves once it is committed and applied.
    pub async fn propose(
        &self,
        command: Command,
    ) -> Result<Result<Outcome, Rejection>, LocalError> {
        let bytes = command_bytes(&command)?;
        let (reply, rx) = oneshot::channel();
        let stopped = || LocalError::Status(tonic::Status::unavailable("master is stopping"));
        self.tx.send((command, bytes, reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// A batch starting with `first`, filled with the commands already queued while it has fewer
/// than [`MAX_BATCH`] commands and the next one fits in [`MAX_BATCH_BYTES`]; a command that does
/// not fit is left in `carried` to start the next batch.
fn fill_batch(
    first: Proposal,
    rx: &mut mpsc::Receiver<Proposal>,
    carried: &mut Option<Proposal>,
) -> Vec<Proposal> {
    let mut bytes = first.1;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Ok(p) = rx.try_recv() else { break };
        if bytes + p.1 > MAX_BATCH_BYTES {
            *carried = Some(p);
            break;
        }
        bytes += p.1;
        batch.push(p);
    }
    batch
}

async fn run(raft: Raft, node_id: u64, timeout: Duration, mut rx: mpsc::Receiver<Proposal>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // The command that closed the last batch (it would have taken it past the byte budget).
    let mut carried: Option<Proposal> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let batch = fill_batch(first, &mut rx, &mut carried);
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (commands, replies): (Vec<Command>, Vec<Reply>) =
                batch.into_iter().map(|(c, _, r)| (c, r)).unzip();
            let n = commands.len();
            let (m, started) = (crate::metrics::get(), std::time::Instant::now());
            m.batch_commands.observe(n as f64);
            let result =
                tokio::time::timeout(timeout, raft.client_write(Request { commands })).await;
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            match result {
                Ok(Ok(resp)) if resp.data.results.len() == n => {
                    for (reply, r) in replies.into_iter().zip(resp.data.results) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Ok(Ok(resp)) => {
                    let msg = format!(
                        "batch of {n} commands produced {} results",
                        resp.data.results.len()
                    );
                    for reply in replies {
                        let _ = reply
                            .send(Err(LocalError::Status(tonic::Status::internal(msg.clone()))));
                    }
                }
                Ok(Err(e)) => {
                    for reply in replies {
                        let _ = reply.send(Err(map_write_error(&e)));
                    }
                }
                Err(_) => {
                    for reply in replies {
                        let _ = reply.send(Err(commit_timeout(node_id, timeout)));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(bytes: usize) -> Proposal {
        let cmd = Command::DrainExecutor { id: "e".into(), now: bytes as u64 };
        (cmd, bytes, oneshot::channel().0)
    }

    /// A batch takes queued commands until the next would pass the byte budget; that one
    /// starts the next batch.
    #[test]
    fn a_batch_closes_at_the_byte_budget() {
        let (tx, mut rx) = mpsc::channel(8);
        let mib = 1 << 20;
        for n in [6 * mib, 6 * mib, 1] {
            tx.try_send(proposal(n)).unwrap();
        }
        let mut carried = None;
        let batch = fill_batch(proposal(5 * mib), &mut rx, &mut carried);
        let sizes: Vec<usize> = batch.iter().map(|p| p.1).collect();
        assert_eq!(sizes, [5 * mib, 6 * mib]);
        assert_eq!(carried.as_ref().map(|p| p.1), Some(6 * mib));
        let next = fill_batch(carried.take().unwrap(), &mut rx, &mut carried);
        assert_eq!(next.iter().map(|p| p.1).collect::<Vec<_>>(), [6 * mib, 1]);
        assert!(carried.is_none());
        assert!(sizes.iter().sum::<usize>() <= MAX_BATCH_BYTES);
    }

    #[test]
    fn a_command_past_the_command_budget_is_refused() {
        let mut spec = crate::state::JobSpec::new("/bin/true");
        spec.args = vec!["a".repeat(MAX_COMMAND_BYTES)];
        let cmd = Command::SubmitJob {
            id: uuid::Uuid::nil(),
            name: String::new(),
            idempotency_key: String::new(),
            spec,
            now: 0,
        };
        match command_bytes(&cmd) {
            Err(LocalError::Status(s)) => assert_eq!(s.code(), tonic::Code::InvalidArgument),
            other => panic!("{:?}", other.map_err(|_| "another error")),
        }
        let small = command_bytes(&Command::CancelJob { id: uuid::Uuid::nil(), now: 0 });
        assert!(small.is_ok_and(|n| n < 64));
    }
}
