//! JobService on every master: submissions and cancels go through Raft on the leader; reads are
//! linearizable through the leader by default, or stale from the local replica on request.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::node::{forwarded, is_forwarded, now_ms, LocalError, Node};
use crate::api::convert::{job_spec_from_pb, job_state_name, job_to_pb, parse_job_id, parse_job_state, rejection_to_status};
use crate::api::pb::job_service_client::JobServiceClient;
use crate::api::pb::job_service_server::JobService;
use crate::api::pb::{self, ReadConsistency};
use crate::api::MAX_MESSAGE_BYTES;
use crate::state::{Command, JobState, Outcome};

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

pub struct Jobs {
    pub node: Arc<Node>,
}

fn client(chan: tonic::transport::Channel) -> JobServiceClient<tonic::transport::Channel> {
    JobServiceClient::new(chan).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

impl Jobs {
    async fn submit_local(&self, req: &pb::SubmitJobRequest, spec: &crate::state::JobSpec) -> Result<pb::SubmitJobResponse, LocalError> {
        // A retry of an already-applied submission needs no new entry (applied implies committed).
        if !req.idempotency_key.is_empty() {
            let applied = self.node.applied.read().expect("poisoned");
            if let Some(job) = applied.state.job_by_key(&req.idempotency_key) {
                return Ok(pb::SubmitJobResponse { job_id: job.id.to_string(), created: false });
            }
        }
        let cmd = Command::SubmitJob {
            id: Uuid::new_v4(),
            name: req.name.clone(),
            idempotency_key: req.idempotency_key.clone(),
            spec: spec.clone(),
            now: now_ms(),
        };
        if crate::chaos::on(crate::chaos::Bug::AckBeforeCommit) {
            // Planted bug: answer before the entry is committed (it may never be).
            let Command::SubmitJob { id, .. } = &cmd else { unreachable!() };
            let id = *id;
            let _ = self.node.raft.client_write_ff(crate::raft::Request { commands: vec![cmd] }).await;
            return Ok(pb::SubmitJobResponse { job_id: id.to_string(), created: true });
        }
        let started = std::time::Instant::now();
        let m = crate::metrics::get();
        let r = self.node.write_one(cmd).await?;
        let result = match &r {
            Ok(Outcome::Submitted { created: true, .. }) => "created",
            Ok(_) => "existing",
            Err(_) => "rejected",
        };
        m.submissions.with_label_values(&[result]).inc();
        m.submit_seconds.with_label_values(&[result]).observe(started.elapsed().as_secs_f64());
        match r {
            Ok(Outcome::Submitted { id, created }) => Ok(pb::SubmitJobResponse { job_id: id.to_string(), created }),
            Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}")).into()),
            Err(r) => Err(rejection_to_status(&r).into()),
        }
    }

    fn read_job(&self, id: Uuid) -> Result<pb::GetJobResponse, Status> {
        let applied = self.node.applied.read().expect("poisoned");
        match applied.state.job(&id) {
            Some(j) => Ok(pb::GetJobResponse { job: Some(job_to_pb(j, true)) }),
            None => Err(Status::not_found(format!("job {id} not found"))),
        }
    }

    fn read_page(&self, filter: Option<JobState>, after: Option<u64>, size: usize) -> pb::ListJobsResponse {
        let applied = self.node.applied.read().expect("poisoned");
        let (jobs, next) = applied.state.jobs_page(filter, after, size);
        pb::ListJobsResponse {
            jobs: jobs.into_iter().map(|j| job_to_pb(j, false)).collect(),
            next_page_token: next.map(|s| s.to_string()).unwrap_or_default(),
        }
    }
}

fn is_stale(c: i32) -> bool {
    c == ReadConsistency::Stale as i32
}

#[tonic::async_trait]
impl JobService for Jobs {
    async fn submit_job(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let fwd = is_forwarded(&req);
        let mut msg = req.into_inner();
        if msg.idempotency_key.is_empty() {
            // Keyed from here on, so that re-sending it (forwarding retries after a leader
            // change) can never create a second job.
            msg.idempotency_key = Uuid::new_v4().to_string();
        }
        // Validate wherever the request lands: bad input never needs a leader.
        let spec = job_spec_from_pb(msg.spec.clone())?;
        self
            .node
            .on_leader(fwd, || self.submit_local(&msg, &spec), |c| { let m = msg.clone(); async move { client(c).submit_job(forwarded(m)).await } })
            .await
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        let fwd = is_forwarded(&req);
        let msg = req.into_inner();
        let id = parse_job_id(&msg.job_id)?;
        if is_stale(msg.consistency) {
            return self.read_job(id).map(Response::new);
        }
        let local = || async {
            self.node.linearize().await?;
            Ok(self.read_job(id)?)
        };
        self.node.on_leader(fwd, local, |c| { let m = msg.clone(); async move { client(c).get_job(forwarded(m)).await } }).await
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let fwd = is_forwarded(&req);
        let msg = req.into_inner();
        let filter = if msg.state.is_empty() { None } else { Some(parse_job_state(&msg.state)?) };
        let after = if msg.page_token.is_empty() {
            None
        } else {
            Some(msg.page_token.parse::<u64>().map_err(|_| Status::invalid_argument(format!("invalid page_token {:?}", msg.page_token)))?)
        };
        if msg.page_size > MAX_PAGE_SIZE {
            return Err(Status::invalid_argument(format!("page_size {} exceeds the maximum {MAX_PAGE_SIZE}", msg.page_size)));
        }
        let size = if msg.page_size == 0 { DEFAULT_PAGE_SIZE } else { msg.page_size } as usize;
        if is_stale(msg.consistency) {
            return Ok(Response::new(self.read_page(filter, after, size)));
        }
        let local = || async {
            self.node.linearize().await?;
            Ok(self.read_page(filter, after, size))
        };
        self.node.on_leader(fwd, local, |c| { let m = msg.clone(); async move { client(c).list_jobs(forwarded(m)).await } }).await
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> Result<Response<pb::CancelJobResponse>, Status> {
        let fwd = is_forwarded(&req);
        let msg = req.into_inner();
        let id = parse_job_id(&msg.job_id)?;
        let local = || async {
            match self.node.write_one(Command::CancelJob { id, now: now_ms() }).await? {
                Ok(_) => {
                    let applied = self.node.applied.read().expect("poisoned");
                    let state = applied.state.job(&id).map(|j| job_state_name(j.state)).unwrap_or("unknown");
                    Ok(pb::CancelJobResponse { state: state.to_string() })
                }
                Err(r) => Err(rejection_to_status(&r).into()),
            }
        };
        self.node.on_leader(fwd, local, |c| { let m = msg.clone(); async move { client(c).cancel_job(forwarded(m)).await } }).await
    }
}
