//! The HTTP/JSON API under `/v1/` on every master's `http_listen`: jobs, executors, the cluster,
//! task output, the event stream (Server-Sent Events), crons, and its OpenAPI document (`/v1/openapi.json`, generated from these handlers by
//! `utoipa`).
//!
//! **One layer under both APIs.** A handler does not judge anything itself: it names the gRPC
//! method it mirrors, has the caller authorised for that method by the one table and token check
//! of [`crate::security::authz`], and calls the very service implementation the gRPC server runs
//! (`Jobs`, `Cluster`, `Executors`, `Crons`), in process, with a `tonic::Request` carrying the caller's
//! identity. Validation, forwarding to the leader, linearizable reads and error messages are
//! therefore the gRPC ones; a `Status` becomes an HTTP status code and a one-line JSON body
//! `{"error": "...", "code": "NOT_FOUND"}` in [`ApiError`]. Request bodies are the gRPC request
//! messages in JSON (unknown fields refused), at most [`MAX_BODY_BYTES`].
//!
//! Only what HTTP itself adds is decided here: parsing (bad JSON 400, a body too large 413, a
//! bad query 400), the `Idempotency-Key` header, and the response codes (201 for a created job).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tonic::Status;
use utoipa::OpenApi;

use super::cluster::Cluster;
use super::cron::Crons;
use super::executors::Executors;
use super::jobs::Jobs;
use super::node::Node;
use crate::api::pb;
use crate::api::pb::cluster_service_server::ClusterService;
use crate::api::pb::cron_service_server::CronService;
use crate::api::pb::executor_service_server::ExecutorService;
use crate::api::pb::job_service_server::JobService;
use crate::api::pb::worker_service_client::WorkerServiceClient;
use crate::security::authz::Authority;
use crate::security::Identity;
use crate::shutdown::Shutdown;

/// Largest request body: a job spec may be 1 MiB encoded (`MAX_SPEC_BYTES`), and its JSON
/// somewhat more (escapes, field names); the spec's own bound is then judged by validation.
pub const MAX_BODY_BYTES: usize = 2 * crate::state::limits::MAX_SPEC_BYTES;
/// Output one logs request returns without `follow` (the rest: ask again from `next_offset`).
const MAX_LOG_BYTES: usize = 4 << 20;
/// How often a followed task's output is read again while it has nothing new.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Longest one followed logs response stays open.
const FOLLOW_MAX: Duration = Duration::from_secs(3600);
/// Deadline of one output read from an executor.
const READ_OUTPUT_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC methods the routes mirror: each route is authorised as its method.
pub mod method {
    pub const SUBMIT_JOB: &str = "/triad.v1.JobService/SubmitJob";
    pub const GET_JOB: &str = "/triad.v1.JobService/GetJob";
    pub const LIST_JOBS: &str = "/triad.v1.JobService/ListJobs";
    pub const CANCEL_JOB: &str = "/triad.v1.JobService/CancelJob";
    pub const SUSPEND_JOB: &str = "/triad.v1.JobService/SuspendJob";
    pub const RESUME_JOB: &str = "/triad.v1.JobService/ResumeJob";
    pub const CLUSTER_STATUS: &str = "/triad.v1.ClusterService/ClusterStatus";
    pub const LIST_EXECUTORS: &str = "/triad.v1.ExecutorService/ListExecutors";
    pub const DRAIN_EXECUTOR: &str = "/triad.v1.ExecutorService/DrainExecutor";
    pub const READ_OUTPUT: &str = "/triad.v1.WorkerService/ReadOutput";
    pub const WATCH_EVENTS: &str = "/triad.v1.JobService/WatchEvents";
    pub const LIST_CRONS: &str = "/triad.v1.CronService/ListCrons";
    pub const GET_CRON: &str = "/triad.v1.CronService/GetCron";
    pub const CREATE_CRON: &str = "/triad.v1.CronService/CreateCron";
    pub const DELETE_CRON: &str = "/triad.v1.CronService/DeleteCron";
    pub const SUSPEND_CRON: &str = "/triad.v1.CronService/SuspendCron";
    pub const RESUME_CRON: &str = "/triad.v1.CronService/ResumeCron";
    pub const TRIGGER_CRON: &str = "/triad.v1.CronService/TriggerCron";
}

/// What the handlers share: the master's gRPC services (the same instances the gRPC server
/// runs) and its authority.
pub struct Api {
    pub node: Arc<Node>,
    pub jobs: Jobs,
    pub cluster: Cluster,
    pub executors: Executors,
    pub crons: Crons,
    pub authority: Authority,
    pub shutdown: Shutdown,
}

/// An API error: an HTTP status and a one-line JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in one line.
    pub error: String,
    /// The gRPC status code's name (`INVALID_ARGUMENT`, `NOT_FOUND`, …), or `PAYLOAD_TOO_LARGE`.
    pub code: String,
}

/// The HTTP status and code name a gRPC status maps to.
pub fn http_status(code: tonic::Code) -> (StatusCode, &'static str) {
    use tonic::Code as C;
    match code {
        C::Ok => (StatusCode::OK, "OK"),
        C::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "CANCELLED"),
        C::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        C::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        C::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        C::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        C::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        C::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        C::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        C::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
        C::Aborted => (StatusCode::CONFLICT, "ABORTED"),
        C::OutOfRange => (StatusCode::BAD_REQUEST, "OUT_OF_RANGE"),
        C::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED"),
        C::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        C::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        C::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "DATA_LOSS"),
        C::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, error: &str) -> ApiError {
        ApiError { status, body: ErrorBody { error: one_line(error), code: code.to_string() } }
    }

    fn bad_request(error: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", error)
    }

    /// An axum extractor's refusal (its status, its text) in the API's form.
    fn rejected(status: StatusCode, text: String) -> ApiError {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            s if s.is_server_error() => "INTERNAL",
            _ => "INVALID_ARGUMENT",
        };
        let text = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body larger than {MAX_BODY_BYTES} bytes")
        } else {
            text
        };
        ApiError::new(status, code, &text)
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> ApiError {
        let (status, code) = http_status(s.code());
        ApiError::new(status, code, s.message())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        ApiError::rejected(r.status(), r.body_text())
    }
}
impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::rejected(r.status(), r.body_text())
    }
}
impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A request's JSON body as message `T` (unknown fields refused by `T`'s own serde rules).
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("invalid JSON body: {e}")))
}

impl Api {
    /// Authenticates and authorises the caller of an HTTP request exactly as the gRPC layer
    /// would a call of `method`: the same table, the same tokens (only the bearer token is
    /// carried over; HTTP callers cannot forward or act on behalf of anyone).
    pub fn authorize(&self, headers: &HeaderMap, method: &str) -> Result<Identity, Status> {
        let mut probe = http::Request::builder()
            .uri(method)
            .body(())
            .map_err(|e| Status::internal(format!("route {method}: {e}")))?;
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            probe.headers_mut().insert(header::AUTHORIZATION, v.clone());
        }
        self.authority.authorize(&mut probe)?;
        probe
            .extensions()
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
    }

    /// A gRPC request for `msg` from `who`, as the authorisation layer would have passed it on.
    fn request<M>(who: &Identity, msg: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(msg);
        r.extensions_mut().insert(who.clone());
        r
    }
}

/// A response's body as JSON, naming the leader (`x-triad-leader`) when a follower forwarded it.
fn reply<T: Serialize>(status: StatusCode, r: tonic::Response<T>) -> Response {
    let leader = r.metadata().get(crate::api::LEADER_HEADER).and_then(|v| v.to_str().ok());
    let leader = leader.and_then(|v| HeaderValue::from_str(v).ok());
    let mut out = (status, Json(r.into_inner())).into_response();
    if let Some(v) = leader {
        out.headers_mut().insert(crate::api::LEADER_HEADER, v);
    }
    out
}

fn consistency(stale: Option<bool>) -> i32 {
    if stale.unwrap_or(false) {
        pb::ReadConsistency::Stale as i32
    } else {
        pb::ReadConsistency::Linearizable as i32
    }
}

/// Idempotency key header for `POST /v1/jobs` (or `idempotency_key` in the body).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Submit a job. The body is a `SubmitJobRequest`; an `Idempotency-Key` header stands for its
/// `idempotency_key` (a retry with the same key returns the same job, also across leader
/// changes). 201 when the job was created, 200 when the key already named it.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = pb::SubmitJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "the submission's idempotency key")),
    responses(
        (status = 201, description = "created", body = pb::SubmitJobResponse),
        (status = 200, description = "the key already named this job", body = pb::SubmitJobResponse),
        (status = 400, description = "bad JSON, unknown field or invalid spec", body = ErrorBody),
        (status = 401, description = "no or unknown token", body = ErrorBody),
        (status = 403, description = "the token's role may not submit", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 503, description = "no leader within the wait bound", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn submit_job(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::SUBMIT_JOB)?;
    let mut msg: pb::SubmitJobRequest = parse_body(&body?)?;
    if let Some(key) = headers.get(IDEMPOTENCY_HEADER) {
        let key = key
            .to_str()
            .map_err(|_| ApiError::bad_request("the Idempotency-Key header is not ASCII"))?;
        if !msg.idempotency_key.is_empty() && msg.idempotency_key != key {
            return Err(ApiError::bad_request(
                "the Idempotency-Key header and the body's idempotency_key differ",
            ));
        }
        msg.idempotency_key = key.to_string();
    }
    let r = api.jobs.submit_job(Api::request(&who, msg)).await?;
    let status = if r.get_ref().created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(reply(status, r))
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// pending, running, succeeded, failed or cancelled (all when absent)
    pub state: Option<String>,
    /// jobs per page: 100 when absent, at most 1000
    pub page_size: Option<u32>,
    /// `next_page_token` of the previous page
    pub page_token: Option<String>,
    /// serve from this master's replica instead of a linearizable read through the leader
    pub stale: Option<bool>,
}

/// List jobs, oldest first, one page at a time.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, body = pb::ListJobsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_jobs(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::LIST_JOBS)?;
    let Query(q) = q?;
    let msg = pb::ListJobsRequest {
        state: q.state.unwrap_or_default(),
        page_size: q.page_size.unwrap_or(0),
        page_token: q.page_token.unwrap_or_default(),
        consistency: consistency(q.stale),
    };
    Ok(reply(StatusCode::OK, api.jobs.list_jobs(Api::request(&who, msg)).await?))
}

/// Query of the single-job reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// serve from this master's replica instead of a linearizable read through the leader
    pub stale: Option<bool>,
}

/// One job with its tasks and their attempts (executor, fencing token, exit code, times).
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "the job's id"), ReadQuery),
    responses(
        (status = 200, body = pb::GetJobResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_job(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    id: std::result::Result<Path<String>, PathRejection>,
    q: std::result::Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::GET_JOB)?;
    let (Path(id), Query(q)) = (id?, q?);
    let msg =
        pb::GetJobRequest { job_id: id, consistency: consistency(q.stale), ..Default::default() };
    Ok(reply(StatusCode::OK, api.jobs.get_job(Api::request(&who, msg)).await?))
}

/// Cancel a job: its running attempts are stopped. Answers the job's state after the cancel.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "the job's id")),
    responses(
        (status = 200, body = pb::CancelJobResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cancel_job(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::CANCEL_JOB)?;
    let Path(id) = id?;
    let msg = pb::CancelJobRequest { job_id: id };
    Ok(reply(StatusCode::OK, api.jobs.cancel_job(Api::request(&who, msg)).await?))
}

/// Suspend a job (batch semantics): no more placements; its running attempts are stopped and
/// their tasks wait again without using up attempts. Answers `suspended` (or a terminal state).
#[utoipa::path(
    post, path = "/v1/jobs/{id}/suspend", tag = "jobs",
    params(("id" = String, Path, description = "the job's id")),
    responses(
        (status = 200, body = pb::SuspendJobResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn suspend_job(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::SUSPEND_JOB)?;
    let Path(id) = id?;
    let msg = pb::SuspendJobRequest { job_id: id };
    Ok(reply(StatusCode::OK, api.jobs.suspend_job(Api::request(&who, msg)).await?))
}

/// Resume a suspended job: its tasks are placed again.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/resume", tag = "jobs",
    params(("id" = String, Path, description = "the job's id")),
    responses(
        (status = 200, body = pb::ResumeJobResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn resume_job(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::RESUME_JOB)?;
    let Path(id) = id?;
    let msg = pb::ResumeJobRequest { job_id: id };
    Ok(reply(StatusCode::OK, api.jobs.resume_job(Api::request(&who, msg)).await?))
}

/// Query of `GET /v1/jobs/{id}/tasks/{index}/logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// attempt number (1-based); the latest that started when absent
    pub attempt: Option<u32>,
    /// stderr instead of stdout
    pub stderr: Option<bool>,
    /// first byte to return
    pub offset: Option<u64>,
    /// keep the response open and send output as it is written, until the attempt has ended
    pub follow: Option<bool>,
}

/// A task's output (stdout, or stderr), read from the executor that ran the attempt, as
/// `text/plain`. Without `follow`, at most 4 MiB from `offset`: the `x-triad-next-offset`
/// header says where to continue, `x-triad-eof` whether the attempt has ended and all is read.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/tasks/{index}/logs", tag = "jobs",
    params(
        ("id" = String, Path, description = "the job's id"),
        ("index" = u32, Path, description = "the task's index"),
        LogsQuery,
    ),
    responses(
        (status = 200, description = "the output", content_type = "text/plain", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "no such job, task, attempt or output", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn task_logs(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    p: std::result::Result<Path<(String, u32)>, PathRejection>,
    q: std::result::Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response> {
    // The job and the executors are read as the caller (as `triad job logs` does); the output
    // itself by this master from the executor, which the caller's role must allow.
    let who = api.authorize(&headers, method::READ_OUTPUT)?;
    api.authorize(&headers, method::GET_JOB)?;
    api.authorize(&headers, method::LIST_EXECUTORS)?;
    let (Path((job_id, index)), Query(q)) = (p?, q?);
    let get = pb::GetJobRequest { job_id: job_id.clone(), ..Default::default() };
    let job = api.jobs.get_job(Api::request(&who, get)).await?.into_inner().job;
    let job = job.ok_or_else(|| Status::not_found(format!("job {job_id} not found")))?;
    let task = job
        .tasks
        .iter()
        .find(|t| t.index == index)
        .ok_or_else(|| Status::not_found(format!("job {job_id} has no task {index}")))?;
    let attempt = crate::api::convert::choose_attempt(task, &job_id, q.attempt)?;
    let list = pb::ListExecutorsRequest::default();
    let execs = api.executors.list_executors(Api::request(&who, list)).await?.into_inner();
    let exec =
        execs.executors.into_iter().find(|e| e.id == attempt.executor).ok_or_else(|| {
            Status::not_found(format!("executor {} is unknown", attempt.executor))
        })?;
    let chan = api
        .node
        .channels
        .executor(&exec.addr, &exec.id)
        .map_err(|e| Status::unavailable(format!("executor {}: {e}", exec.id)))?;
    let reader = OutputReader {
        worker: WorkerServiceClient::new(chan)
            .max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES),
        exec: exec.id,
        req: pb::ReadOutputRequest {
            job_id,
            task_index: index,
            attempt: attempt.number,
            stderr: q.stderr.unwrap_or(false),
            offset: q.offset.unwrap_or(0),
            max_bytes: 0,
            tail_lines: 0,
        },
    };
    let attempt_no = HeaderValue::from(attempt.number);
    let mut r = if q.follow.unwrap_or(false) {
        reader.follow(api.shutdown.clone()).await?
    } else {
        reader.read_all().await?
    };
    r.headers_mut().insert("x-triad-attempt", attempt_no);
    Ok(r)
}

/// Reads one attempt's output from its executor, chunk by chunk.
struct OutputReader {
    worker: WorkerServiceClient<crate::api::Channel>,
    exec: String,
    req: pb::ReadOutputRequest,
}

impl OutputReader {
    /// The next chunk from the current offset (the offset moves past it).
    async fn next(&mut self) -> Result<pb::ReadOutputResponse, Status> {
        let mut call = tonic::Request::new(self.req.clone());
        call.set_timeout(READ_OUTPUT_TIMEOUT);
        let r = tokio::time::timeout(READ_OUTPUT_TIMEOUT, self.worker.read_output(call))
            .await
            .map_err(|_| Status::unavailable(format!("executor {} did not answer", self.exec)))?
            .map_err(|s| {
                Status::new(
                    s.code(),
                    format!("reading output from executor {}: {}", self.exec, s.message()),
                )
            })?
            .into_inner();
        self.req.offset += r.data.len() as u64;
        Ok(r)
    }

    /// Up to [`MAX_LOG_BYTES`] from the offset.
    async fn read_all(mut self) -> Result<Response> {
        let mut out = Vec::new();
        let eof = loop {
            let r = self.next().await?;
            out.extend_from_slice(&r.data);
            if r.eof || r.data.is_empty() || out.len() >= MAX_LOG_BYTES {
                break r.eof;
            }
        };
        let mut resp = text(Body::from(out));
        resp.headers_mut().insert("x-triad-next-offset", HeaderValue::from(self.req.offset));
        resp.headers_mut()
            .insert("x-triad-eof", HeaderValue::from_static(if eof { "true" } else { "false" }));
        Ok(resp)
    }

    /// A response that sends the output as it is written, until the attempt has ended and all
    /// is sent, the reader disconnects, the master stops, or [`FOLLOW_MAX`] has passed. The first
    /// read happens before the response starts, so a missing output is a 404, not an empty body.
    async fn follow(mut self, shutdown: Shutdown) -> Result<Response> {
        let first = self.next().await?;
        let until = Instant::now() + FOLLOW_MAX;
        // State: the reader, a chunk read but not yet sent, the shutdown, and whether the last
        // chunk sent was the end.
        let state = (self, Some(first), shutdown, false);
        let stream = futures::stream::unfold(
            state,
            move |(mut reader, mut pending, mut stop, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(r) = pending.take() {
                        if !r.data.is_empty() {
                            let chunk = Ok::<_, std::io::Error>(Bytes::from(r.data));
                            return Some((chunk, (reader, None, stop, r.eof)));
                        }
                        if r.eof {
                            return None;
                        }
                    }
                    if Instant::now() >= until {
                        return None;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(FOLLOW_POLL) => {}
                        _ = stop.wait() => return None,
                    }
                    match reader.next().await {
                        Ok(r) => pending = Some(r),
                        Err(s) => {
                            tracing::debug!(error = %s.message(), "following output ended");
                            return None;
                        }
                    }
                }
            },
        );
        Ok(text(Body::from_stream(stream)))
    }
}

fn text(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Every executor: state, capacity, slots used, running attempts, labels, epoch.
#[utoipa::path(
    get, path = "/v1/executors", tag = "executors", params(ReadQuery),
    responses(
        (status = 200, body = pb::ListExecutorsResponse),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_executors(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    q: std::result::Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::LIST_EXECUTORS)?;
    let Query(q) = q?;
    let msg = pb::ListExecutorsRequest { consistency: consistency(q.stale), ..Default::default() };
    Ok(reply(StatusCode::OK, api.executors.list_executors(Api::request(&who, msg)).await?))
}

/// Drain an executor (admin): it gets no new tasks; its running ones finish.
#[utoipa::path(
    post, path = "/v1/executors/{id}/drain", tag = "executors",
    params(("id" = String, Path, description = "the executor's id")),
    responses(
        (status = 200, body = pb::DrainExecutorResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn drain_executor(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::DRAIN_EXECUTOR)?;
    let Path(id) = id?;
    let msg = pb::DrainExecutorRequest { executor_id: id };
    Ok(reply(StatusCode::OK, api.executors.drain_executor(Api::request(&who, msg)).await?))
}

/// Every master as seen from this one: role, term, last log and applied index, reachability;
/// and the leader.
#[utoipa::path(
    get, path = "/v1/cluster", tag = "cluster",
    responses(
        (status = 200, body = pb::ClusterStatusResponse),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cluster_status(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response> {
    let who = api.authorize(&headers, method::CLUSTER_STATUS)?;
    let msg = pb::ClusterStatusRequest {};
    Ok(reply(StatusCode::OK, api.cluster.cluster_status(Api::request(&who, msg)).await?))
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// the entries after this Raft index (the last `id:` received): nothing repeats, nothing is
    /// skipped. When absent, the `Last-Event-ID` header, else from now on
    pub from: Option<u64>,
    /// only this job's events (its job and task transitions, the cron firing that created it)
    pub job: Option<String>,
    /// catch up with the leader's read point first: the message with `caught_up` comes once
    /// every write acknowledged before the request has been delivered
    pub linearizable: Option<bool>,
}

/// `Last-Event-ID`, which `EventSource` sends when it reconnects.
const LAST_EVENT_ID: &str = "last-event-id";

/// The event stream as Server-Sent Events: `WatchEvents` over HTTP, with its semantics. One SSE
/// event per Raft entry, `event: entry`, its index as `id:` and the `WatchEventsResponse` as JSON
/// `data:`; progress marks (no events, sent on catching up and at least every 2 s when idle) are
/// `event: mark` with an `id:` too. Resume with `from=` the last `id:` seen (or `Last-Event-ID`),
/// on any master. Events already gone: 410 (`OUT_OF_RANGE`, the message says from where to
/// resume). The stream ends with one `event: error` (an `ErrorBody`) when the master stops
/// (`UNAVAILABLE`: resume on another), when the reader fell behind the events kept, or when it
/// left events unread for 30 s (a slow reader is cut off, not buffered for).
#[utoipa::path(
    get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "the stream (`text/event-stream`): `id: INDEX`, `event: entry|mark|error`, `data:` a WatchEventsResponse (or an ErrorBody for `error`) as JSON", content_type = "text/event-stream", body = pb::WatchEventsResponse),
        (status = 400, description = "a bad query or job id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 410, description = "the entries after `from` are gone here (OUT_OF_RANGE)", body = ErrorBody),
        (status = 429, description = "too many streams open on this master", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn events(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    q: std::result::Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::WATCH_EVENTS)?;
    let Query(q) = q?;
    let from = match (q.from, headers.get(LAST_EVENT_ID)) {
        (Some(i), _) => Some(i),
        (None, Some(v)) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| ApiError::bad_request("the Last-Event-ID header is not an index"))?,
        ),
        (None, None) => None,
    };
    let msg = pb::WatchEventsRequest {
        from_index: from,
        job_id: q.job.unwrap_or_default(),
        linearizable: q.linearizable.unwrap_or(false),
    };
    let stream = api.jobs.watch_events(Api::request(&who, msg)).await.map_err(gone)?.into_inner();
    // The feed behind `stream` holds at most `events::QUEUE` messages and cuts off a reader that
    // leaves them unread for `events::SEND_GRACE`; it ends on shutdown with UNAVAILABLE.
    let sse = stream.map(|m| Ok::<_, std::convert::Infallible>(sse_event(m)));
    let mut r = Sse::new(sse).into_response();
    r.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// `OUT_OF_RANGE` when a stream opens means its start is gone: 410, not a bad request.
fn gone(s: Status) -> ApiError {
    if s.code() == tonic::Code::OutOfRange {
        ApiError::new(StatusCode::GONE, "OUT_OF_RANGE", s.message())
    } else {
        s.into()
    }
}

/// One stream message as an SSE event.
fn sse_event(m: Result<pb::WatchEventsResponse, Status>) -> SseEvent {
    match m {
        Ok(m) => {
            let kind = if m.events.is_empty() { "mark" } else { "entry" };
            json_event(SseEvent::default().id(m.index.to_string()).event(kind), &m)
        }
        Err(s) => json_event(SseEvent::default().event("error"), &ApiError::from(s).body),
    }
}

fn json_event<T: Serialize>(e: SseEvent, data: &T) -> SseEvent {
    e.json_data(data).unwrap_or_else(|err| {
        let body =
            ErrorBody { error: format!("encoding an event: {err}"), code: "INTERNAL".into() };
        SseEvent::default().event("error").data(serde_json::to_string(&body).unwrap_or_default())
    })
}

/// Every cron: schedule, next times, runs with their jobs' states.
#[utoipa::path(
    get, path = "/v1/crons", tag = "crons", params(ReadQuery),
    responses(
        (status = 200, body = pb::ListCronsResponse),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_crons(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    q: std::result::Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::LIST_CRONS)?;
    let Query(q) = q?;
    let msg = pb::ListCronsRequest { consistency: consistency(q.stale) };
    Ok(reply(StatusCode::OK, api.crons.list_crons(Api::request(&who, msg)).await?))
}

/// Create a cron (admin). The body is a `CreateCronRequest`. 201 with the cron.
#[utoipa::path(
    post, path = "/v1/crons", tag = "crons",
    request_body = pb::CreateCronRequest,
    responses(
        (status = 201, description = "created", body = pb::CronResponse),
        (status = 400, description = "bad JSON, unknown field, bad schedule or spec", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "a cron of that name exists", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_cron(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::CREATE_CRON)?;
    let msg: pb::CreateCronRequest = parse_body(&body?)?;
    Ok(reply(StatusCode::CREATED, api.crons.create_cron(Api::request(&who, msg)).await?))
}

/// One cron: schedule, next firing times, its last runs (skipped and missed ones too).
#[utoipa::path(
    get, path = "/v1/crons/{name}", tag = "crons",
    params(("name" = String, Path, description = "the cron's name"), ReadQuery),
    responses(
        (status = 200, body = pb::CronResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_cron(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: std::result::Result<Path<String>, PathRejection>,
    q: std::result::Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::GET_CRON)?;
    let (Path(name), Query(q)) = (name?, q?);
    let msg = pb::GetCronRequest { name, consistency: consistency(q.stale) };
    Ok(reply(StatusCode::OK, api.crons.get_cron(Api::request(&who, msg)).await?))
}

/// The cron changes named by a path: which gRPC method, and its call.
#[derive(Clone, Copy)]
enum CronChange {
    Delete,
    Suspend,
    Resume,
}

async fn cron_change(
    api: &Api,
    headers: &HeaderMap,
    name: std::result::Result<Path<String>, PathRejection>,
    what: CronChange,
) -> Result<Response> {
    let m = match what {
        CronChange::Delete => method::DELETE_CRON,
        CronChange::Suspend => method::SUSPEND_CRON,
        CronChange::Resume => method::RESUME_CRON,
    };
    let who = api.authorize(headers, m)?;
    let Path(name) = name?;
    let req = Api::request(&who, pb::CronNameRequest { name, ..Default::default() });
    let r = match what {
        CronChange::Delete => api.crons.delete_cron(req).await?,
        CronChange::Suspend => api.crons.suspend_cron(req).await?,
        CronChange::Resume => api.crons.resume_cron(req).await?,
    };
    Ok(reply(StatusCode::OK, r))
}

/// Delete a cron (admin); its jobs stay. Answers the cron as it was.
#[utoipa::path(
    delete, path = "/v1/crons/{name}", tag = "crons",
    params(("name" = String, Path, description = "the cron's name")),
    responses(
        (status = 200, body = pb::CronResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete_cron(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    cron_change(&api, &headers, name, CronChange::Delete).await
}

/// Suspend a cron (admin): it fires no more until resumed.
#[utoipa::path(
    post, path = "/v1/crons/{name}/suspend", tag = "crons",
    params(("name" = String, Path, description = "the cron's name")),
    responses(
        (status = 200, body = pb::CronResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn suspend_cron(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    cron_change(&api, &headers, name, CronChange::Suspend).await
}

/// Resume a suspended cron (admin).
#[utoipa::path(
    post, path = "/v1/crons/{name}/resume", tag = "crons",
    params(("name" = String, Path, description = "the cron's name")),
    responses(
        (status = 200, body = pb::CronResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn resume_cron(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    cron_change(&api, &headers, name, CronChange::Resume).await
}

/// Fire a cron now, outside its schedule (admin): 201 with the job it created.
#[utoipa::path(
    post, path = "/v1/crons/{name}/trigger", tag = "crons",
    params(("name" = String, Path, description = "the cron's name")),
    responses(
        (status = 201, body = pb::TriggerCronResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn trigger_cron(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let who = api.authorize(&headers, method::TRIGGER_CRON)?;
    let Path(name) = name?;
    let req = Api::request(&who, pb::CronNameRequest { name, ..Default::default() });
    Ok(reply(StatusCode::CREATED, api.crons.trigger_cron(req).await?))
}

/// Adds the bearer-token scheme the operations name.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("a triad token (`triad token create`)"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(title = "triad", description = "The HTTP/JSON API of a triad master: the gRPC API's jobs, events (Server-Sent Events), crons, executors and cluster calls, with the same authorisation, validation and forwarding."),
    paths(
        submit_job, list_jobs, get_job, cancel_job, suspend_job, resume_job, task_logs,
        list_executors, drain_executor, cluster_status, events, list_crons, create_cron, get_cron,
        delete_cron, suspend_cron, resume_cron, trigger_cron,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

/// The document as served at `/v1/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint (see /v1/openapi.json)")
}

/// The `/v1/` routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/suspend", post(suspend_job))
        .route("/v1/jobs/{id}/resume", post(resume_job))
        .route("/v1/jobs/{id}/tasks/{index}/logs", get(task_logs))
        .route("/v1/executors", get(list_executors))
        .route("/v1/executors/{id}/drain", post(drain_executor))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/events", get(events))
        .route("/v1/crons", get(list_crons).post(create_cron))
        .route("/v1/crons/{name}", get(get_cron).delete(delete_cron))
        .route("/v1/crons/{name}/suspend", post(suspend_cron))
        .route("/v1/crons/{name}/resume", post(resume_cron))
        .route("/v1/crons/{name}/trigger", post(trigger_cron))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/{*rest}", get(not_found).post(not_found).delete(not_found))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_code_has_an_http_status() {
        assert_eq!(http_status(tonic::Code::InvalidArgument).0, StatusCode::BAD_REQUEST);
        assert_eq!(http_status(tonic::Code::Unauthenticated).0, StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(tonic::Code::PermissionDenied).0, StatusCode::FORBIDDEN);
        assert_eq!(http_status(tonic::Code::NotFound).0, StatusCode::NOT_FOUND);
        assert_eq!(http_status(tonic::Code::FailedPrecondition).0, StatusCode::CONFLICT);
        assert_eq!(http_status(tonic::Code::ResourceExhausted).0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(http_status(tonic::Code::Unavailable).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn errors_are_one_line() {
        let e = ApiError::from(Status::invalid_argument("a\nb  c"));
        assert_eq!(e.body.error, "a b c");
        assert_eq!(e.body.code, "INVALID_ARGUMENT");
    }

    #[test]
    fn unknown_fields_and_bad_json_are_refused() {
        let e = parse_body::<pb::SubmitJobRequest>(br#"{"spec": {"command": "x", "colour": 1}}"#)
            .unwrap_err();
        assert!(e.body.error.contains("unknown field `colour`"), "{:?}", e.body);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_body::<pb::SubmitJobRequest>(b"{").is_err());
        let ok: pb::SubmitJobRequest =
            parse_body(br#"{"spec": {"command": "echo", "args": ["hi"]}}"#).unwrap();
        assert_eq!(ok.spec.unwrap().args, vec!["hi".to_string()]);
        // The batch fields (issue 16), dependencies included, read from JSON too.
        let id = "6f1c5c2e-8a43-4b57-9d7e-0c5d6f7a8b9c";
        let body = format!(
            r#"{{"spec": {{"command": "x", "parallelism": 2, "fail_on_exit": [2],
                "after": [{{"job_id": "{id}", "any": true}}]}}}}"#
        );
        let batch: pb::SubmitJobRequest = parse_body(body.as_bytes()).unwrap();
        let spec = batch.spec.unwrap();
        assert_eq!((spec.parallelism, spec.fail_on_exit), (2, vec![2]));
        assert_eq!(spec.after, vec![pb::Dependency { job_id: id.into(), any: true }]);
    }

    #[test]
    fn the_openapi_document_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        for p in [
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/cancel",
            "/v1/jobs/{id}/suspend",
            "/v1/jobs/{id}/resume",
            "/v1/jobs/{id}/tasks/{index}/logs",
            "/v1/executors",
            "/v1/executors/{id}/drain",
            "/v1/cluster",
            "/v1/events",
            "/v1/crons",
            "/v1/crons/{name}",
            "/v1/crons/{name}/suspend",
            "/v1/crons/{name}/resume",
            "/v1/crons/{name}/trigger",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} missing from the OpenAPI document");
        }
        assert!(doc["components"]["schemas"].get("SubmitJobRequest").is_some());
    }

    #[test]
    fn routes_are_authorised_by_the_grpc_table() {
        use crate::security::authz::{rule, Rule};
        use crate::security::Role;
        // Each mirrored method is in the table with the roles its gRPC call has.
        for m in [
            method::SUBMIT_JOB,
            method::GET_JOB,
            method::LIST_JOBS,
            method::CANCEL_JOB,
            method::SUSPEND_JOB,
            method::RESUME_JOB,
            method::READ_OUTPUT,
            method::WATCH_EVENTS,
            method::LIST_CRONS,
            method::GET_CRON,
        ] {
            assert!(matches!(rule(m), Rule::Roles(r) if r.contains(&Role::Client)), "{m}");
        }
        assert_eq!(rule(method::DRAIN_EXECUTOR), Rule::Roles(&[Role::Admin]));
        for m in [
            method::CREATE_CRON,
            method::DELETE_CRON,
            method::SUSPEND_CRON,
            method::RESUME_CRON,
            method::TRIGGER_CRON,
        ] {
            assert_eq!(rule(m), Rule::Roles(&[Role::Admin]), "{m}");
        }
        assert!(matches!(rule(method::CLUSTER_STATUS), Rule::Roles(_)));
        assert!(matches!(rule(method::LIST_EXECUTORS), Rule::Roles(_)));
    }
}
