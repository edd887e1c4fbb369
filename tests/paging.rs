//! Reads that could walk the whole state, paged (issue 14, "bounded state"): `GetJob` pages a
//! job's tasks, `ListJobs` by a terminal state pages through exactly that state's jobs; with real
//! `triad master` processes.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;

const ELECTION: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_job_pages_tasks_and_list_jobs_pages_a_terminal_state() {
    let c = Cluster::start(3, |_| {});
    c.wait_leader(ELECTION).await;
    let client = c.client();

    let mut req = submit_req("big", "true", &[]);
    req.spec.as_mut().expect("spec").task_count = 250;
    let big = client.submit_job(req).await.expect("submit").job_id;

    let mut seen = Vec::new();
    let mut token = String::new();
    for expected in [100, 100, 50] {
        let page = client.get_job_page(&big, false, 100, &token).await.expect("a page");
        let job = page.job.expect("the job");
        assert_eq!(job.tasks.len(), expected, "page after {token:?}");
        assert_eq!(job.counts.expect("counts").pending, 250, "counts cover every task");
        seen.extend(job.tasks.iter().map(|t| t.index));
        token = page.next_task_page_token;
    }
    assert_eq!(token, "", "no page after the last");
    assert_eq!(seen, (0..250).collect::<Vec<u32>>());
    let all = client.get_job_page(&big, false, 0, "").await.expect("every task");
    assert_eq!((all.job.expect("job").tasks.len(), all.next_task_page_token.as_str()), (250, ""));
    let bad = client.get_job_page(&big, false, 10, "x").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");
    let too_big = client.get_job_page(&big, false, 100_001, "").await.unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument, "{too_big}");

    // Three small jobs, the first and last cancelled: a page of one at a time walks the two.
    let mut ids = Vec::new();
    for k in ["a", "b", "c"] {
        ids.push(client.submit_job(submit_req(k, "true", &[])).await.expect("submit").job_id);
    }
    for id in [&ids[0], &ids[2]] {
        client.cancel_job(id).await.expect("cancel");
    }
    let first = client.list_jobs("cancelled", 1, "", false).await.expect("page 1");
    assert_eq!(first.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), [ids[0].clone()]);
    assert!(!first.next_page_token.is_empty());
    let second =
        client.list_jobs("cancelled", 1, &first.next_page_token, false).await.expect("page 2");
    assert_eq!(second.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), [ids[2].clone()]);
    let pending = client.list_jobs("pending", 10, "", false).await.expect("pending");
    let pending: Vec<_> = pending.jobs.iter().map(|j| j.id.clone()).collect();
    assert_eq!(pending, [big, ids[1].clone()]);
}
