//! Pipelined submissions: one `SubmitJobs` stream to one master, many submissions in flight on
//! it, answered in the order they were sent.
//!
//! Invariants:
//! - A submission's place in the queue of waiting answers is taken under the same lock as its
//!   send on the stream, so the n-th answer always belongs to the n-th request.
//! - At most [`MAX_PIPELINED`] submissions wait at once (the master reads no more than that
//!   ahead), and each waits at most the call timeout.
//! - No failover: when the stream breaks, every waiting submission fails with that error and the
//!   caller opens a new pipeline. Re-sending under the same idempotency keys is safe.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Status};

use crate::api::pb;
use crate::api::MAX_PIPELINED;

type Answer = Result<pb::SubmitJobResponse, Status>;

struct Queue {
    requests: mpsc::UnboundedSender<pb::SubmitJobRequest>,
    waiting: VecDeque<oneshot::Sender<Answer>>,
    /// Set once the stream has ended: every later submission fails with it.
    broken: Option<Status>,
}

/// A `SubmitJobs` stream. Cheap to share behind an `Arc`; the stream closes when it is dropped.
pub struct SubmitPipeline {
    queue: Arc<Mutex<Queue>>,
    slots: Semaphore,
    call_timeout: Duration,
}

fn from_answer(a: pb::SubmitJobsResponse) -> Answer {
    match (a.code, a.result) {
        (0, Some(r)) => Ok(r),
        (0, None) => Err(Status::internal("SubmitJobs answer without a result")),
        (code, _) => Err(Status::new(Code::from_i32(code), a.message)),
    }
}

impl SubmitPipeline {
    /// Opens a stream on `channel`, waiting at most `call_timeout` for the master to accept it.
    pub async fn open(
        channel: crate::api::Channel,
        call_timeout: Duration,
    ) -> Result<SubmitPipeline, Status> {
        let (requests, rx) = mpsc::unbounded_channel();
        let mut client = super::Client::jobs(channel);
        let opened = tokio::time::timeout(
            call_timeout,
            client.submit_jobs(UnboundedReceiverStream::new(rx)),
        )
        .await;
        let mut answers = match opened {
            Ok(r) => r?.into_inner(),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "the master did not accept a SubmitJobs stream within {call_timeout:?}"
                )))
            }
        };
        let queue =
            Arc::new(Mutex::new(Queue { requests, waiting: VecDeque::new(), broken: None }));
        let reader = queue.clone();
        // Ends when the stream does: after the pipeline is dropped (its request side closes and
        // the master finishes what it holds) or when the stream breaks.
        tokio::spawn(async move {
            let end = loop {
                match answers.message().await {
                    Ok(Some(a)) => {
                        let waiter = reader.lock().expect("poisoned").waiting.pop_front();
                        match waiter {
                            Some(w) => {
                                let _ = w.send(from_answer(a));
                            }
                            None => {
                                break Status::internal(
                                    "SubmitJobs answered a request that was never sent",
                                )
                            }
                        }
                    }
                    Ok(None) => {
                        break Status::unavailable("the master closed the SubmitJobs stream")
                    }
                    // The master died or the connection broke: as retryable as a refused call.
                    Err(s) if crate::api::is_connection_failure(&s) => {
                        break Status::unavailable(format!(
                            "the SubmitJobs stream broke: {}",
                            s.message()
                        ))
                    }
                    Err(s) => break s,
                }
            };
            let mut q = reader.lock().expect("poisoned");
            for w in q.waiting.drain(..) {
                let _ = w.send(Err(end.clone()));
            }
            q.broken = Some(end);
        });
        Ok(SubmitPipeline { queue, slots: Semaphore::new(MAX_PIPELINED), call_timeout })
    }

    /// Submits one job on the stream; resolves with its answer (once the job is durable).
    pub async fn submit(&self, mut req: pb::SubmitJobRequest) -> Answer {
        if req.idempotency_key.is_empty() {
            req.idempotency_key = uuid::Uuid::new_v4().to_string();
        }
        let _slot = self.slots.acquire().await.map_err(|_| Status::cancelled("pipeline closed"))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.queue.lock().expect("poisoned");
            if let Some(s) = &q.broken {
                return Err(s.clone());
            }
            q.requests
                .send(req)
                .map_err(|_| Status::unavailable("the SubmitJobs stream is closed"))?;
            q.waiting.push_back(tx);
        }
        match tokio::time::timeout(self.call_timeout, rx).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => Err(Status::unavailable("the SubmitJobs stream ended")),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer on the SubmitJobs stream within {:?}",
                self.call_timeout
            ))),
        }
    }
}
