//! The client library: knows the list of masters, sticks to one that answers, moves to the next on
//! failure, follows a forwarding master's hint to the leader, and retries retryable failures
//! within a bound. Writes are safe to retry because
//! every submission carries an idempotency key (generated here when the caller gives none) and
//! cancels are idempotent in the state machine.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tonic::{Code, Status};

use crate::api::pb::cluster_service_client::ClusterServiceClient;
use crate::api::pb::job_service_client::JobServiceClient;
use crate::api::{pb, MAX_MESSAGE_BYTES};
use crate::api::{Channel, Dialer};

pub mod cron;
pub mod events;
pub mod pipeline;
pub use events::EventFollower;
pub use pipeline::SubmitPipeline;

/// Per-attempt deadline of a client call (above the masters' forward deadline: see
/// `crate::timings`).
pub const CALL_TIMEOUT: Duration = crate::timings::CLIENT_CALL_TIMEOUT;
/// Total time a call keeps retrying retryable failures (leader elections take ~1 s).
pub const RETRY_FOR: Duration = crate::timings::CLIENT_RETRY_FOR;

/// Longest pause between rounds over every master. Short: an election takes well under a second,
/// and a client that sleeps past its end adds the rest of the sleep to the failover time.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

pub struct Client {
    masters: Vec<String>,
    dialer: Dialer,
    channels: Vec<Channel>,
    /// Index of the master that answered last.
    preferred: AtomicUsize,
    pub call_timeout: Duration,
    pub retry_for: Duration,
    /// Go where a master's `x-triad-leader` hint points (default). Off, the client stays on the
    /// master that answers, as a generic gRPC client does (the chaos suite's follower clients).
    pub follow_leader: bool,
}

/// Failures worth retrying against another (or the same) master.
pub fn retryable(s: &Status) -> bool {
    if tls_refused(s) {
        return false;
    }
    matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted)
        || (s.code() == Code::Unknown && s.message().contains("transport"))
        || crate::api::is_connection_failure(s)
}

/// Did a TLS handshake refuse a certificate (the server's, by our CA; or ours, by the server)?
/// Another try, or another master of the same cluster, would be refused the same way.
fn tls_refused(s: &Status) -> bool {
    let mut text = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(&e.to_string());
        source = e.source();
    }
    text.contains("invalid peer certificate") || text.contains("received fatal alert")
}

/// Parses `a:p,b:p,c:p`.
pub fn parse_masters(list: &str) -> anyhow::Result<Vec<String>> {
    let masters: Vec<String> =
        list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if masters.is_empty() {
        bail!("no masters given: pass --masters host:port,... or set TRIAD_MASTERS");
    }
    Ok(masters)
}

impl Client {
    /// A client of `masters`, connecting with `dialer`'s credentials.
    pub fn new(masters: Vec<String>, dialer: &Dialer) -> anyhow::Result<Self> {
        if masters.is_empty() {
            bail!("no masters given: pass --masters host:port,... or set TRIAD_MASTERS");
        }
        let channels = masters
            .iter()
            .map(|m| dialer.master(m).with_context(|| format!("bad master address {m:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Client {
            masters,
            dialer: dialer.clone(),
            channels,
            preferred: AtomicUsize::new(0),
            call_timeout: CALL_TIMEOUT,
            retry_for: RETRY_FOR,
            follow_leader: true,
        })
    }

    pub fn masters(&self) -> &[String] {
        &self.masters
    }

    /// The credentials this client connects with (for calls to other nodes, e.g. executors).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The master the next call goes to first.
    pub fn current_master(&self) -> &str {
        &self.masters[self.preferred.load(Ordering::Relaxed) % self.masters.len()]
    }

    /// Calls `f` against masters in turn until it succeeds, fails for good, or `retry_for` passes.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(20);
        let mut tried_since_backoff = 0;
        loop {
            let (idx, chan) = self.preferred_channel();
            let result = match tokio::time::timeout(self.call_timeout, f(chan)).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "master {} did not answer within {:?}",
                    self.masters[idx], self.call_timeout
                ))),
            };
            if let Err(s) = &result {
                if retryable(s) {
                    self.failed(idx, s);
                }
            }
            match result {
                Ok(r) => {
                    self.follow_leader_hint(idx, r.metadata());
                    return Ok(r.into_inner());
                }
                Err(s) if retryable(&s) && Instant::now() < deadline => {
                    tracing::debug!(master = %self.masters[idx], error = %s, "retrying");
                    tried_since_backoff += 1;
                    // Back off once every master has been tried: the cluster is electing.
                    if tried_since_backoff >= self.channels.len() {
                        tried_since_backoff = 0;
                        let left = deadline.saturating_duration_since(Instant::now());
                        tokio::time::sleep(backoff.min(left)).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// The master the next call goes to first (its index among the masters) and its channel.
    pub fn preferred_channel(&self) -> (usize, Channel) {
        let idx = self.preferred.load(Ordering::Relaxed) % self.channels.len();
        (idx, self.channels[idx].clone())
    }

    /// A call to master `idx` failed with `s` (in [`Client::call`], or a long-lived call such as
    /// the executor's heartbeat stream, which fails after it opened): prefer the leader it named
    /// in [`crate::api::LEADER_HEADER`], if any and if it was given; otherwise the next master
    /// (unless a concurrent call already moved on), also when the caller gives up now, so the next
    /// call does not start at the master that just failed. Returns whether it followed a hint.
    pub fn failed(&self, idx: usize, s: &Status) -> bool {
        if self.follow_leader_hint(idx, s.metadata()) {
            return true;
        }
        let _ = self.preferred.compare_exchange(
            idx,
            (idx + 1) % self.channels.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        false
    }

    /// A master that forwarded a call, or refused it, names the leader: prefer it from now on, if
    /// it is one of the masters this client was given (an address it was not given may not be
    /// reachable from here). Returns whether the preference moved to it.
    fn follow_leader_hint(&self, idx: usize, metadata: &tonic::metadata::MetadataMap) -> bool {
        if !self.follow_leader {
            return false;
        }
        let Some(leader) = metadata.get(crate::api::LEADER_HEADER).and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        match self.masters.iter().position(|m| m == leader) {
            Some(i) if i != idx => {
                tracing::debug!(from = %self.masters[idx], to = %leader, "following the leader hint");
                self.preferred.store(i, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn jobs(c: Channel) -> JobServiceClient<Channel> {
        JobServiceClient::new(c).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Submits a job; retries reuse the idempotency key, so at most one job is created.
    pub async fn submit_job(
        &self,
        mut req: pb::SubmitJobRequest,
    ) -> Result<pb::SubmitJobResponse, Status> {
        if req.idempotency_key.is_empty() {
            req.idempotency_key = uuid::Uuid::new_v4().to_string();
        }
        self.call(|c| {
            let req = req.clone();
            async move { Self::jobs(c).submit_job(req).await }
        })
        .await
    }

    /// Opens a [`SubmitPipeline`] to the master the next call would go to (the leader, once a
    /// call has followed its hint).
    pub async fn pipeline(&self) -> Result<SubmitPipeline, Status> {
        SubmitPipeline::open(self.preferred_channel().1, self.call_timeout).await
    }

    /// One page of a job's tasks (`page_size` 0: every task) from task index `token` (empty:
    /// the first); the answer's `next_task_page_token` names the next page.
    pub async fn get_job_page(
        &self,
        id: &str,
        stale: bool,
        page_size: u32,
        token: &str,
    ) -> Result<pb::GetJobResponse, Status> {
        let req = pb::GetJobRequest {
            job_id: id.to_string(),
            consistency: consistency(stale),
            task_page_size: page_size,
            task_page_token: token.to_string(),
        };
        let r = self.call(|c| {
            let req = req.clone();
            async move { Self::jobs(c).get_job(req).await }
        });
        r.await
    }

    pub async fn get_job(&self, id: &str, stale: bool) -> Result<pb::Job, Status> {
        Ok(self.get_job_at(id, stale).await?.0)
    }

    /// The job and the index of the last entry applied where it was read (to watch from).
    pub async fn get_job_at(&self, id: &str, stale: bool) -> Result<(pb::Job, u64), Status> {
        let req = pb::GetJobRequest {
            job_id: id.to_string(),
            consistency: consistency(stale),
            ..Default::default()
        };
        let r = self.call(|c| {
            let req = req.clone();
            async move { Self::jobs(c).get_job(req).await }
        });
        let r = r.await?;
        let job = r.job.ok_or_else(|| Status::internal("empty GetJob response"))?;
        Ok((job, r.applied_index))
    }

    pub async fn list_jobs(
        &self,
        state: &str,
        page_size: u32,
        page_token: &str,
        stale: bool,
    ) -> Result<pb::ListJobsResponse, Status> {
        let req = pb::ListJobsRequest {
            state: state.to_string(),
            page_size,
            page_token: page_token.to_string(),
            consistency: consistency(stale),
        };
        self.call(|c| {
            let req = req.clone();
            async move { Self::jobs(c).list_jobs(req).await }
        })
        .await
    }

    /// Every job (all pages), optionally filtered by state.
    pub async fn list_all_jobs(&self, state: &str, stale: bool) -> Result<Vec<pb::Job>, Status> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_jobs(state, 1000, &token, stale).await?;
            out.extend(page.jobs);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    pub async fn cancel_job(&self, id: &str) -> Result<pb::CancelJobResponse, Status> {
        let req = pb::CancelJobRequest { job_id: id.to_string() };
        self.call(|c| {
            let req = req.clone();
            async move { Self::jobs(c).cancel_job(req).await }
        })
        .await
    }

    /// Batch semantics: suspend a job (idempotent).
    pub async fn suspend_job(&self, id: &str) -> Result<pb::SuspendJobResponse, Status> {
        let req = pb::SuspendJobRequest { job_id: id.to_string() };
        self.call(|c| {
            let req = req.clone();
            async move { Self::jobs(c).suspend_job(req).await }
        })
        .await
    }

    /// Batch semantics: resume a suspended job (idempotent).
    pub async fn resume_job(&self, id: &str) -> Result<pb::ResumeJobResponse, Status> {
        let req = pb::ResumeJobRequest { job_id: id.to_string() };
        self.call(|c| {
            let req = req.clone();
            async move { Self::jobs(c).resume_job(req).await }
        })
        .await
    }

    /// Retention (issue 14): deletes a terminal job (idempotent: a deleted job stays deleted).
    pub async fn delete_job(&self, id: &str) -> Result<pb::DeleteJobResponse, Status> {
        let req = pb::DeleteJobRequest { job_id: id.to_string() };
        self.call(|c| {
            let req = req.clone();
            async move { Self::jobs(c).delete_job(req).await }
        })
        .await
    }

    /// Retention (issue 14), admin: a collection pass now.
    pub async fn collect_garbage(&self) -> Result<pb::CollectGarbageResponse, Status> {
        self.call(
            |c| async move { Self::jobs(c).collect_garbage(pb::CollectGarbageRequest {}).await },
        )
        .await
    }

    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, Status> {
        self.call(|c| async move {
            ClusterServiceClient::new(c).cluster_status(pb::ClusterStatusRequest {}).await
        })
        .await
    }

    pub async fn add_master(&self, id: u64, addr: &str) -> Result<pb::MembershipResponse, Status> {
        let req = pb::AddMasterRequest { id, addr: addr.to_string() };
        self.call(|c| {
            let req = req.clone();
            async move { ClusterServiceClient::new(c).add_master(req).await }
        })
        .await
    }

    pub async fn remove_master(&self, id: u64) -> Result<pb::MembershipResponse, Status> {
        self.call(|c| async move {
            ClusterServiceClient::new(c).remove_master(pb::RemoveMasterRequest { id }).await
        })
        .await
    }
}

/// One master's own status, asked directly (no retry, no failover).
pub async fn node_status(
    dialer: &Dialer,
    addr: &str,
    timeout: Duration,
    with_digest: bool,
) -> Result<pb::MasterStatus, Status> {
    let chan = dialer
        .master(addr)
        .map_err(|e| Status::invalid_argument(format!("bad address {addr:?}: {e:#}")))?;
    let mut req = tonic::Request::new(pb::NodeStatusRequest { with_digest });
    req.set_timeout(timeout);
    match tokio::time::timeout(timeout, ClusterServiceClient::new(chan).node_status(req)).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => {
            Err(Status::deadline_exceeded(format!("{addr} did not answer within {timeout:?}")))
        }
    }
}

fn consistency(stale: bool) -> i32 {
    if stale {
        pb::ReadConsistency::Stale as i32
    } else {
        pb::ReadConsistency::Linearizable as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failover_rotates_through_every_master_again_and_again() {
        // Nothing listens on these ports: every call fails, and must keep rotating.
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
            })
            .collect();
        let mut c = Client::new(
            ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            &Dialer::insecure(),
        )
        .unwrap();
        c.retry_for = Duration::from_millis(1500);
        let seen = std::sync::Mutex::new(Vec::new());
        let r: Result<(), Status> = c
            .call(|_chan| {
                seen.lock().unwrap().push(c.preferred.load(Ordering::Relaxed) % 3);
                async { Err(Status::unavailable("down")) }
            })
            .await;
        assert!(r.is_err());
        let seen = seen.into_inner().unwrap();
        assert!(seen.len() >= 7, "{seen:?}");
        for (i, idx) in seen.iter().enumerate() {
            assert_eq!(*idx, i % 3, "call {i} went to master {idx}: {seen:?}");
        }
    }

    #[tokio::test]
    async fn a_leader_hint_moves_the_client_to_that_master_only_if_it_was_given() {
        let c = Client::new(
            vec!["127.0.0.1:1".into(), "127.0.0.1:2".into(), "127.0.0.1:3".into()],
            &Dialer::insecure(),
        )
        .unwrap();
        let answer = |hint: &'static str| {
            let mut r = tonic::Response::new(());
            r.metadata_mut().insert(crate::api::LEADER_HEADER, hint.parse().unwrap());
            async move { Ok::<_, Status>(r) }
        };
        assert_eq!(c.current_master(), "127.0.0.1:1");
        c.call(|_| answer("127.0.0.1:3")).await.unwrap();
        assert_eq!(c.current_master(), "127.0.0.1:3");
        // An address it was not given (maybe unreachable from here) is ignored.
        c.call(|_| answer("10.9.9.9:7701")).await.unwrap();
        assert_eq!(c.current_master(), "127.0.0.1:3");
        // No hint: stays.
        c.call(|_| async { Ok::<_, Status>(tonic::Response::new(())) }).await.unwrap();
        assert_eq!(c.current_master(), "127.0.0.1:3");
    }

    #[tokio::test]
    async fn a_refusal_naming_the_leader_moves_the_client_there_and_any_other_failure_to_the_next_master(
    ) {
        let c = Client::new(
            vec!["127.0.0.1:1".into(), "127.0.0.1:2".into(), "127.0.0.1:3".into()],
            &Dialer::insecure(),
        )
        .unwrap();
        let refusal = |hint: &'static str| {
            let mut s = Status::unavailable("not the leader");
            s.metadata_mut().insert(crate::api::LEADER_HEADER, hint.parse().unwrap());
            s
        };
        assert!(c.failed(0, &refusal("127.0.0.1:3")));
        assert_eq!(c.preferred_channel().0, 2);
        // A leader it was not given, or no hint at all: the next master.
        assert!(!c.failed(2, &refusal("10.9.9.9:7701")));
        assert_eq!(c.current_master(), "127.0.0.1:1");
        assert!(!c.failed(0, &Status::unavailable("connection refused")));
        assert_eq!(c.current_master(), "127.0.0.1:2");
        // A failure reported for a master the client already left does not move it again.
        assert!(!c.failed(0, &Status::unavailable("late")));
        assert_eq!(c.current_master(), "127.0.0.1:2");
    }
}
