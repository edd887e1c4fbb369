//! The HTTP/JSON API and the dashboard's assets on real master processes of a secure cluster,
//! driven with `curl` (HTTPS with the cluster CA, bearer tokens), as an operator would: the same
//! answers as gRPC (forwarded by followers, the same validation and errors), errors as one-line
//! JSON with the mapped HTTP status, the public pages readable over plain HTTP, and gRPC
//! reflection `v1alpha` beside `v1`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use triad::security::Role;

/// One curl call's outcome: HTTP status, headers (lower-cased names) and body.
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} (status {})", self.body, self.status))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// Asserts an error reply: `status`, a JSON body with a one-line `error` and `code`.
    fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        let v = self.json();
        let error = v["error"].as_str().expect("error").to_string();
        assert!(!error.is_empty() && !error.contains('\n'), "one line: {error:?}");
        assert_eq!(v["code"], code, "{}", self.body);
        error
    }
}

/// Runs curl with `args` (plus `-s`, a deadline, and the status and headers captured).
fn curl(args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("running curl (install it: apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: body.to_string(),
    }
}

/// curl against master `http` over HTTPS with the cluster CA and `token` (if any).
struct Https {
    ca: String,
    base: String,
    token: Option<String>,
}

impl Https {
    fn new(c: &Cluster, id: u64, role: Option<Role>) -> Https {
        Https {
            ca: c.creds.tls.ca_cert().display().to_string(),
            base: format!("https://{}", c.master(id).http.as_ref().expect("http_listen")),
            token: role.map(|r| c.creds.token(r).expect("token")),
        }
    }

    fn call(&self, method: &str, path: &str, extra: &[&str]) -> Reply {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["--cacert", &self.ca, "-X", method];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        args.extend(extra);
        args.push(&url);
        curl(&args)
    }

    fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[])
    }

    fn post(&self, path: &str, body: &str, extra: &[&str]) -> Reply {
        let mut args = vec!["-H", "Content-Type: application/json", "--data-binary", body];
        args.extend(extra);
        self.call("POST", path, &args)
    }
}

fn start() -> (Cluster, u64) {
    let c = Cluster::start(3, |_| {});
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leader = rt.block_on(c.wait_leader(Duration::from_secs(20)));
    (c, leader)
}

#[test]
fn http_errors_are_one_line_json_with_the_mapped_status() {
    let (c, leader) = start();
    let follower = c.followers(leader)[0];
    let client = Https::new(&c, follower, Some(Role::Client));
    let anonymous = Https::new(&c, follower, None);

    // Missing and unknown tokens: 401, with a challenge.
    let r = anonymous.get("/v1/jobs");
    let e = r.assert_error(401, "UNAUTHENTICATED");
    assert!(e.contains("bearer token"), "{e}");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let bogus = Https { token: Some("triad_nope".into()), ..Https::new(&c, follower, None) };
    bogus.get("/v1/cluster").assert_error(401, "UNAUTHENTICATED");

    // Bad JSON, unknown fields, invalid specs: 400.
    let e = client.post("/v1/jobs", "{\"spec\": {", &[]).assert_error(400, "INVALID_ARGUMENT");
    assert!(e.contains("invalid JSON body"), "{e}");
    let e = client
        .post("/v1/jobs", r#"{"spec": {"command": "true", "colour": "red"}}"#, &[])
        .assert_error(400, "INVALID_ARGUMENT");
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = client
        .post("/v1/jobs", r#"{"spec": {"command": "true", "task_count": 0}}"#, &[])
        .assert_error(400, "INVALID_ARGUMENT");
    assert!(e.contains("task_count"), "the gRPC validation's message: {e}");
    client.get("/v1/jobs?state=sleepy").assert_error(400, "INVALID_ARGUMENT");
    client.get("/v1/jobs?colour=red").assert_error(400, "INVALID_ARGUMENT");
    client.get("/v1/jobs/not-a-uuid").assert_error(400, "INVALID_ARGUMENT");

    // An oversized body: 413, before anything is parsed.
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(triad::master::rest::MAX_BODY_BYTES));
    let path = c.dir.path().join("big.json");
    std::fs::write(&path, big).unwrap();
    let at = format!("@{}", path.display());
    let e = client.post("/v1/jobs", &at, &[]).assert_error(413, "PAYLOAD_TOO_LARGE");
    assert!(e.contains("larger than"), "{e}");

    // The role table: a client may not drain; an executor may not read jobs.
    client.post("/v1/executors/e1/drain", "", &[]).assert_error(403, "PERMISSION_DENIED");
    Https::new(&c, follower, Some(Role::Executor))
        .get("/v1/jobs")
        .assert_error(403, "PERMISSION_DENIED");

    // Not found: a job, an endpoint.
    let e =
        client.get("/v1/jobs/00000000-0000-4000-8000-000000000000").assert_error(404, "NOT_FOUND");
    assert!(e.contains("not found"), "{e}");
    client.get("/v1/nothing-here").assert_error(404, "NOT_FOUND");

    // Plain HTTP on a secure master: the public pages yes, the API no (the token would travel
    // in the clear).
    let plain = format!("http://{}", c.master(follower).http.as_ref().unwrap());
    assert_eq!(curl(&[&format!("{plain}/metrics")]).status, 200);
    assert_eq!(curl(&[&format!("{plain}/status")]).status, 200);
    curl(&[&format!("{plain}/v1/cluster")]).assert_error(403, "PERMISSION_DENIED");
    curl(&[&format!("{plain}/ui/")]).assert_error(403, "PERMISSION_DENIED");
}

#[test]
fn http_api_serves_jobs_executors_and_the_cluster_like_grpc() {
    let (c, leader) = start();
    let follower = c.followers(leader)[0];
    let exec = Executor::start(&c.masters_arg(), c.dir.path(), "exec-h", 2, &["zone=a"]);
    let admin = Https::new(&c, follower, Some(Role::Admin));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wait_for("the executor to register", Duration::from_secs(20), || async {
        let r = admin.get("/v1/executors");
        (r.status == 200 && r.json()["executors"][0]["state"] == "alive").then_some(())
    }));

    // Submit on a follower (forwarded to the leader, which it names), with an idempotency key.
    let client = Https::new(&c, follower, Some(Role::Client));
    let body = r#"{"name": "hello", "spec": {"command": "sh", "args": ["-c", "echo out-$TRIAD_TASK_INDEX; echo err >&2"], "task_count": 2}}"#;
    let r = client.post("/v1/jobs", body, &["-H", "Idempotency-Key: http-test-1"]);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(r.header("x-triad-leader").as_deref(), Some(c.master(leader).addr.as_str()));
    let again = client.post("/v1/jobs", body, &["-H", "Idempotency-Key: http-test-1"]);
    assert_eq!((again.status, again.json()["job_id"].as_str()), (200, Some(id.as_str())));
    client
        .post(
            "/v1/jobs",
            r#"{"idempotency_key": "a", "spec": {"command": "true"}}"#,
            &["-H", "Idempotency-Key: b"],
        )
        .assert_error(400, "INVALID_ARGUMENT");

    // Read it on the third master until it succeeds (linearizable by default).
    let third = Https::new(&c, 6 - leader - follower, Some(Role::Client));
    let job = rt.block_on(wait_for("the job to succeed", Duration::from_secs(30), || async {
        let j = third.get(&format!("/v1/jobs/{id}")).json()["job"].clone();
        (j["state"] == "succeeded").then_some(j)
    }));
    assert_eq!(job["tasks"].as_array().unwrap().len(), 2);
    let attempt = &job["tasks"][1]["attempts"][0];
    assert_eq!(
        (attempt["executor"].as_str(), attempt["exit_code"].as_i64()),
        (Some("exec-h"), Some(0))
    );
    assert!(attempt["token"].as_u64().unwrap() > 0);

    // Its output, through the master, from the executor that ran it.
    let logs = third.get(&format!("/v1/jobs/{id}/tasks/1/logs"));
    assert_eq!((logs.status, logs.body.as_str()), (200, "out-1\n"));
    assert_eq!(logs.header("x-triad-eof").as_deref(), Some("true"));
    assert_eq!(logs.header("x-triad-next-offset").as_deref(), Some("6"));
    let err = third.get(&format!("/v1/jobs/{id}/tasks/0/logs?stderr=true&follow=true"));
    assert_eq!((err.status, err.body.as_str()), (200, "err\n"));
    let tail = third.get(&format!("/v1/jobs/{id}/tasks/0/logs?offset=4"));
    assert_eq!(tail.body, "0\n");
    third.get(&format!("/v1/jobs/{id}/tasks/7/logs")).assert_error(404, "NOT_FOUND");

    // List with a state filter and paging, stale and linearizable.
    let r2 = client.post(
        "/v1/jobs",
        r#"{"spec": {"command": "sleep", "args": ["30"], "task_count": 1}}"#,
        &[],
    );
    assert_eq!(r2.status, 201, "{}", r2.body);
    let id2 = r2.json()["job_id"].as_str().unwrap().to_string();
    let page = client.get("/v1/jobs?page_size=1").json();
    assert_eq!(page["jobs"][0]["id"], id.as_str());
    let token = page["next_page_token"].as_str().unwrap().to_string();
    let next = client.get(&format!("/v1/jobs?page_size=1&page_token={token}")).json();
    assert_eq!(next["jobs"][0]["id"], id2.as_str());
    let done = client.get("/v1/jobs?state=succeeded&stale=true").json();
    assert!(done["jobs"].as_array().unwrap().iter().all(|j| j["state"] == "succeeded"));

    // Cancel; drain (admin); the cluster.
    let r = client.post(&format!("/v1/jobs/{id2}/cancel"), "", &[]);
    assert_eq!((r.status, r.json()["state"].as_str()), (200, Some("cancelled")), "{}", r.body);
    let e = client
        .post(&format!("/v1/jobs/{id}/cancel"), "", &[])
        .assert_error(409, "FAILED_PRECONDITION");
    assert!(e.contains(&id), "{e}");
    let r = admin.post("/v1/executors/exec-h/drain", "", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let e = admin.get("/v1/executors?stale=false").json();
    assert_eq!(e["executors"][0]["state"], "draining");
    let cluster = client.get("/v1/cluster").json();
    assert_eq!(cluster["leader_id"], leader);
    assert_eq!(cluster["masters"].as_array().unwrap().len(), 3);

    // The OpenAPI document and the dashboard, on every master.
    let doc = Https::new(&c, leader, None).get("/v1/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/jobs/{id}/tasks/{index}/logs"]["get"].is_object());
    let ui = Https::new(&c, follower, None).get("/ui/");
    assert_eq!(ui.status, 200);
    assert!(ui.body.contains("<script src=\"/ui/app.js\""), "{}", ui.body);
    assert!(Https::new(&c, follower, None).get("/ui/app.js").body.contains("sessionStorage"));
    drop(exec);
}

#[tokio::test]
async fn grpc_reflection_answers_v1alpha_and_v1_clients() {
    use tonic_reflection::pb::{v1, v1alpha};
    let c = Cluster::start(1, |_| {});
    c.wait_leader(Duration::from_secs(20)).await;
    let chan = c.dialer.channel(&c.master(1).addr, &triad::api::ServerName::Master).unwrap();

    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(chan.clone());
    let mut answers =
        client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"triad.v1.JobService".to_string()), "{names:?}");

    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(chan);
    let mut answers =
        client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    assert!(answers.message().await.unwrap().is_some(), "v1 still answers");
}

/// One Server-Sent Event as curl received it.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A `curl -N` reading an SSE stream, its events handed over by a reader thread.
struct SseStream {
    path: String,
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<Option<SseEvent>>,
}

impl SseStream {
    fn open(h: &Https, path: &str, extra: &[&str]) -> SseStream {
        use std::io::BufRead;
        let url = format!("{}{path}", h.base);
        let auth = format!("Authorization: Bearer {}", h.token.as_ref().expect("a token"));
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "120", "--cacert", &h.ca, "-H", &auth])
            .args(extra)
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.is_empty() {
                    if !data.is_empty() {
                        let v = serde_json::from_str(&data).expect("an event's data is JSON");
                        let e =
                            SseEvent { id: id.take(), event: std::mem::take(&mut event), data: v };
                        if tx.send(Some(e)).is_err() {
                            return;
                        }
                    }
                    data.clear();
                    continue;
                }
                let (k, v) = line.split_once(':').unwrap_or((&line, ""));
                let v = v.strip_prefix(' ').unwrap_or(v);
                match k {
                    "id" => id = Some(v.parse().expect("ids are indexes")),
                    "event" => event = v.to_string(),
                    "data" => data.push_str(v),
                    _ => {}
                }
            }
            let _ = tx.send(None);
        });
        SseStream { path: path.to_string(), child, rx }
    }

    /// The next event (None: the stream ended); panics after `timeout`.
    fn next(&self, timeout: Duration) -> Option<SseEvent> {
        self.rx.recv_timeout(timeout).expect("an SSE event within the deadline")
    }

    /// The `entry` events up to and including the first for which `last` holds.
    fn entries_until(&self, last: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut out = Vec::new();
        loop {
            let Some(e) = self.next(Duration::from_secs(20)) else {
                panic!("the stream {} ended early, after {out:?}", self.path);
            };
            assert!(e.id.is_some() || e.event == "error", "no id: {e:?}");
            assert_ne!(e.event, "error", "{e:?}");
            if let Some(id) = e.id {
                assert_eq!(e.data["index"].as_u64(), Some(id), "the id is the entry's index");
            }
            if e.event != "entry" {
                continue;
            }
            let done = last(&e);
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn job_ended(job: &str) -> impl Fn(&SseEvent) -> bool + '_ {
    move |e| {
        e.data["events"].as_array().unwrap().iter().any(|ev| {
            ev["kind"] == "job"
                && ev["job_id"] == job
                && ["succeeded", "failed", "cancelled"].contains(&ev["to"].as_str().unwrap_or(""))
        })
    }
}

#[test]
fn http_events_are_server_sent_with_their_index_as_id_and_resume_exactly() {
    let (mut c, leader) = {
        let c = Cluster::start(3, |cfg| cfg.raft.snapshot_every = 50);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let leader = rt.block_on(c.wait_leader(Duration::from_secs(20)));
        (c, leader)
    };
    let follower = c.followers(leader)[0];
    let client = Https::new(&c, follower, Some(Role::Client));

    // Errors before the stream starts: the token, the query.
    Https::new(&c, follower, None).get("/v1/events").assert_error(401, "UNAUTHENTICATED");
    client.get("/v1/events?from=abc").assert_error(400, "INVALID_ARGUMENT");
    client.get("/v1/events?job=nope").assert_error(400, "INVALID_ARGUMENT");
    client.get("/v1/events?colour=red").assert_error(400, "INVALID_ARGUMENT");

    // The leader's applied index `at`, then a job submitted and cancelled (two entries at
    // least), watched from `at` on a follower: the job's events, each with its Raft index as the
    // SSE id, in index order, all after `at`.
    let cluster = client.get("/v1/cluster").json();
    let at = cluster["masters"].as_array().unwrap().iter().find(|m| m["id"] == leader).unwrap()
        ["applied_index"]
        .as_u64()
        .unwrap();
    let r = client.post(
        "/v1/jobs",
        r#"{"spec": {"command": "sleep", "args": ["30"], "task_count": 1}}"#,
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["job_id"].as_str().unwrap().to_string();
    let s = SseStream::open(&client, &format!("/v1/events?from={at}&job={id}"), &[]);
    let r = client.post(&format!("/v1/jobs/{id}/cancel"), "", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let first = s.entries_until(job_ended(&id));
    drop(s);
    let ids: Vec<u64> = first.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in index order: {ids:?}");
    assert!(ids.len() >= 2 && ids[0] > at, "after {at}, the submission and the cancel: {ids:?}");
    let all: Vec<&Value> =
        first.iter().flat_map(|e| e.data["events"].as_array().unwrap().iter()).collect();
    assert!(all.iter().all(|e| e["job_id"] == id.as_str()), "{all:?}");
    assert!(all.iter().any(|e| e["kind"] == "job" && e["from"] == "" && e["to"] == "pending"));
    assert!(all.iter().any(|e| e["kind"] == "task" && e["to"] == "cancelled"), "{all:?}");

    // Resuming from the first id, on another master, gives exactly the rest; so does
    // `Last-Event-ID` (what EventSource sends when it reconnects).
    let other = Https::new(&c, leader, Some(Role::Client));
    let rest = SseStream::open(&other, &format!("/v1/events?from={}&job={id}", ids[0]), &[]);
    // (The same entries; `caught_up` depends on each stream's own read point.)
    let key = |es: &[SseEvent]| -> Vec<(Option<u64>, Value)> {
        es.iter().map(|e| (e.id, e.data["events"].clone())).collect()
    };
    assert_eq!(key(&rest.entries_until(job_ended(&id))), key(&first[1..]));
    let header = format!("Last-Event-ID: {}", ids[0]);
    let again = SseStream::open(&client, &format!("/v1/events?job={id}"), &["-H", &header]);
    assert_eq!(key(&again.entries_until(job_ended(&id))), key(&first[1..]));
    drop((rest, again));

    // The stream ends on shutdown, with one error event naming it.
    let s = SseStream::open(&client, "/v1/events", &[]);
    let mark = s.next(Duration::from_secs(20)).expect("a first progress mark");
    assert_eq!((mark.event.as_str(), mark.data["caught_up"].as_bool()), ("mark", Some(true)));
    let pid = c.master(follower).child.as_ref().unwrap().id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGTERM)
        .unwrap();
    let end = loop {
        let e = s.next(Duration::from_secs(20)).expect("an error event before the end");
        if e.event == "error" {
            break e;
        }
    };
    assert_eq!(end.data["code"], "UNAVAILABLE", "{end:?}");
    assert!(end.data["error"].as_str().unwrap().contains("shutting down"), "{end:?}");
    assert_eq!(s.next(Duration::from_secs(20)), None, "the stream ends after its error");
    drop(s);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wait_for("the follower to exit", Duration::from_secs(20), || {
        let done = c.try_wait(follower).is_some();
        async move { done.then_some(()) }
    }));

    // A master restarted past a snapshot holds no events before it: 410, one line, saying from
    // where to resume.
    c.restart(follower);
    for i in 0..80 {
        let body =
            format!(r#"{{"name": "filler-{i}", "spec": {{"command": "true", "task_count": 1}}}}"#);
        assert_eq!(other.post("/v1/jobs", &body, &[]).status, 201);
    }
    let last = rt.block_on(c.status(leader)).unwrap().applied_index;
    rt.block_on(c.wait_applied(follower, last, Duration::from_secs(30)));
    c.kill(follower);
    c.restart(follower);
    rt.block_on(c.wait_applied(follower, last, Duration::from_secs(30)));
    let e = client.get("/v1/events?from=0").assert_error(410, "OUT_OF_RANGE");
    assert!(e.contains("re-read the state"), "{e}");
}

#[test]
fn http_crons_and_executor_heartbeats() {
    let (c, leader) = start();
    let follower = c.followers(leader)[0];
    let admin = Https::new(&c, follower, Some(Role::Admin));
    let client = Https::new(&c, follower, Some(Role::Client));
    let exec = Executor::start(&c.masters_arg(), c.dir.path(), "exec-c", 2, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The leader's last heartbeat from each executor (linearizable reads only).
    let e = rt.block_on(wait_for("a heartbeat on the list", Duration::from_secs(20), || async {
        let r = client.get("/v1/executors").json();
        let e = r["executors"][0].clone();
        (e["state"] == "alive" && e["last_heartbeat_ms"].as_u64() > Some(0)).then_some(e)
    }));
    assert!(e["heartbeat_age_ms"].is_u64(), "{e}");
    let stale = client.get("/v1/executors?stale=true").json();
    assert_eq!(stale["executors"][0]["last_heartbeat_ms"], 0, "a follower holds no liveness");

    // Crons: the admin creates, suspends, resumes, triggers and deletes; a client reads.
    let body = r#"{"name": "nightly", "schedule": "0 3 * * *", "spec": {"command": "true", "task_count": 1}}"#;
    client.post("/v1/crons", body, &[]).assert_error(403, "PERMISSION_DENIED");
    let e = admin
        .post("/v1/crons", r#"{"name": "x", "schedule": "0 3 * * *", "colour": 1}"#, &[])
        .assert_error(400, "INVALID_ARGUMENT");
    assert!(e.contains("unknown field `colour`"), "{e}");
    admin.post("/v1/crons", "{", &[]).assert_error(400, "INVALID_ARGUMENT");
    admin
        .post(
            "/v1/crons",
            r#"{"name": "x", "schedule": "never", "spec": {"command": "true", "task_count": 1}}"#,
            &[],
        )
        .assert_error(400, "INVALID_ARGUMENT");
    let r = admin.post("/v1/crons", body, &[]);
    assert_eq!((r.status, r.json()["cron"]["name"].as_str()), (201, Some("nightly")), "{}", r.body);
    let list = client.get("/v1/crons").json();
    assert_eq!(list["crons"][0]["name"], "nightly");
    let got = client.get("/v1/crons/nightly?stale=true").json();
    assert_eq!(got["cron"]["next_ms"].as_array().map(|n| n.is_empty()), Some(false));
    let r = admin.post("/v1/crons/nightly/suspend", "", &[]);
    assert_eq!((r.status, r.json()["cron"]["suspended"].as_bool()), (200, Some(true)));
    let r = admin.post("/v1/crons/nightly/resume", "", &[]);
    assert_eq!((r.status, r.json()["cron"]["suspended"].as_bool()), (200, Some(false)));
    client.post("/v1/crons/nightly/trigger", "", &[]).assert_error(403, "PERMISSION_DENIED");
    let r = admin.post("/v1/crons/nightly/trigger", "", &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    let job = r.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(client.get(&format!("/v1/jobs/{job}")).status, 200);
    let r = admin.call("DELETE", "/v1/crons/nightly", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    client.get("/v1/crons/nightly").assert_error(404, "NOT_FOUND");
    admin.post("/v1/crons/nightly/suspend", "", &[]).assert_error(404, "NOT_FOUND");
    drop(exec);
}
