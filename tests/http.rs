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
