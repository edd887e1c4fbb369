//! The duties' calls to executors: StartAttempt (its outcome goes back to the core through a
//! channel) and StopAttempt (best effort). Each runs in its own task, bounded by
//! [`DISPATCH_TIMEOUT`], so a slow executor never holds up a round.

use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Code;

use super::core::{Dispatched, Worker};
use crate::api::pb;
use crate::api::pb::worker_service_client::WorkerServiceClient;
use crate::master::node::Node;
use crate::state::Token;

/// Deadline of one StartAttempt/StopAttempt call.
use crate::timings::DISPATCH_TIMEOUT;

/// Sends a start in the background and reports how it ended on `tx`.
pub(super) fn start(
    node: &Node,
    tx: mpsc::UnboundedSender<Dispatched>,
    to: Worker,
    req: pb::StartAttemptRequest,
) {
    let channels = node.channels.clone();
    tokio::spawn(async move {
        let token = req.token;
        let started = Instant::now();
        let res = async {
            let chan = channels
                .executor(&to.addr, &to.id)
                .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
            let mut r = tonic::Request::new(req);
            r.set_timeout(DISPATCH_TIMEOUT);
            tokio::time::timeout(DISPATCH_TIMEOUT, WorkerServiceClient::new(chan).start_attempt(r))
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("start timed out"))?
        }
        .await;
        let label = if res.is_ok() { "ok" } else { "error" };
        crate::metrics::get()
            .dispatch_seconds
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        let _ = tx.send(match res {
            Ok(_) => Dispatched::Started(token),
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::InvalidArgument) => {
                Dispatched::Refused(token, s.message().to_string())
            }
            Err(s) => Dispatched::Failed(token, s.message().to_string()),
        });
    });
}

/// Stops an attempt in the background. Best effort: heartbeat reconciliation kills it later if
/// this is lost.
pub(super) fn stop(node: &Node, to: Worker, token: Token) {
    let channels = node.channels.clone();
    tokio::spawn(async move {
        let Ok(chan) = channels.executor(&to.addr, &to.id) else { return };
        let mut r = tonic::Request::new(pb::StopAttemptRequest { token });
        r.set_timeout(DISPATCH_TIMEOUT);
        let _ =
            tokio::time::timeout(DISPATCH_TIMEOUT, WorkerServiceClient::new(chan).stop_attempt(r))
                .await;
    });
}
