//! Following the event stream (`JobService/WatchEvents`) across masters: an [`EventFollower`]
//! remembers the index of the last message it received and, when its master fails or goes
//! silent, opens the stream again on the next master from that index. Every master derives the
//! same events for an index, so the caller sees each entry's events once, in index order, with no
//! gap, through any number of failovers; unless the master it resumes on no longer holds them
//! (`OUT_OF_RANGE`): then the caller must re-read the state and start again from its index.

use std::time::{Duration, Instant};

use tonic::{Code, Status, Streaming};

use super::{retryable, Client};
use crate::api::pb;

/// A stream silent this long is given up and resumed elsewhere (masters send a progress mark at
/// least every `timings::EVENTS_IDLE_MARK`).
pub const EVENTS_IDLE_TIMEOUT: Duration = crate::timings::EVENTS_IDLE_TIMEOUT;

/// Follows `WatchEvents` through failover: see the module doc.
pub struct EventFollower<'a> {
    client: &'a Client,
    /// The index of the last message received (`None`: nothing yet, start "from now").
    after: Option<u64>,
    job_id: String,
    linearizable: bool,
    /// The open stream and the index of its master among the client's.
    stream: Option<(usize, Streaming<pb::WatchEventsResponse>)>,
}

impl Client {
    /// Follows the events after index `from` (`None`: from now on), only `job_id`'s when it is
    /// not empty; `linearizable` makes the first stream catch up with the leader first.
    pub fn follow_events(
        &self,
        from: Option<u64>,
        job_id: &str,
        linearizable: bool,
    ) -> EventFollower<'_> {
        EventFollower {
            client: self,
            after: from,
            job_id: job_id.to_string(),
            linearizable,
            stream: None,
        }
    }
}

/// Is this the stream's "your events are gone" answer?
pub fn is_too_old(s: &Status) -> bool {
    s.code() == Code::OutOfRange
}

impl EventFollower<'_> {
    /// The index of the last message received: resume from here.
    pub fn position(&self) -> Option<u64> {
        self.after
    }

    /// The next message (an entry's events, or a progress mark). Fails over to another master on
    /// a retryable failure or a silent stream, for at most the client's `retry_for` without a
    /// message; any other failure (`OUT_OF_RANGE` among them) is returned.
    pub async fn next(&mut self) -> Result<pb::WatchEventsResponse, Status> {
        let deadline = Instant::now() + self.client.retry_for;
        loop {
            let (idx, stream) = match &mut self.stream {
                Some(s) => (s.0, &mut s.1),
                None => {
                    self.stream = Some(self.open().await?);
                    continue;
                }
            };
            let failure = match tokio::time::timeout(EVENTS_IDLE_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(m))) => {
                    self.after = Some(self.after.map_or(m.index, |a| a.max(m.index)));
                    return Ok(m);
                }
                Ok(Ok(None)) => Status::unavailable("the master ended the event stream"),
                Ok(Err(s)) => s,
                Err(_) => Status::unavailable(format!(
                    "the event stream was silent for {EVENTS_IDLE_TIMEOUT:?}"
                )),
            };
            self.stream = None;
            self.client.failed(idx, &failure);
            if !(retryable(&failure) || failure.message().contains("silent"))
                || Instant::now() >= deadline
            {
                return Err(failure);
            }
            tracing::debug!(error = %failure, after = ?self.after, "resuming the event stream");
        }
    }

    /// Opens the stream from the last index received, on the first master that takes it.
    async fn open(&mut self) -> Result<(usize, Streaming<pb::WatchEventsResponse>), Status> {
        let req = pb::WatchEventsRequest {
            from_index: self.after,
            job_id: self.job_id.clone(),
            linearizable: self.linearizable,
        };
        let picked = std::sync::Mutex::new(0);
        let stream = self
            .client
            .call(|c| {
                let req = req.clone();
                *picked.lock().expect("poisoned") = self.client.preferred_channel().0;
                async move { Client::jobs(c).watch_events(req).await }
            })
            .await?;
        let idx = *picked.lock().expect("poisoned");
        Ok((idx, stream))
    }
}
