//! The executor's heartbeat loop: beats to the leader over [`link::Link`] (one stream) and acts
//! on each answer, self-fencing when answers stop. The decisions are the pure [`core::Pulse`]'s
//! (unit tests beside it); this shell reads the clock, sends the beats, and kills, registers and
//! leaves as told.

pub mod core;
mod link;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use self::core::{Act, Wake};
use super::Agent;
use crate::api::pb;
use crate::shutdown::{self, Shutdown};

pub use self::core::Pulse;

/// Beats every interval and acts on each answer: acknowledgement, kills, re-registration,
/// draining. Self-fences before every beat. Returns when `stop` fires, when a drain is complete
/// (firing `stop_trigger`), or when registering again is refused.
pub(super) async fn heartbeat_loop(
    agent: Arc<Agent>,
    mut stop: Shutdown,
    stop_trigger: shutdown::Trigger,
) {
    let mut link = link::Link::default();
    agent.pulse().start_beating(Instant::now());
    loop {
        let wake = tokio::time::Instant::now() + agent.pulse().wait(Instant::now());
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let skip = crate::chaos::on(crate::chaos::Bug::SkipFencing);
        let live = agent.runner.live_tokens();
        let sent = Instant::now();
        let Wake { fence, beat } = agent.pulse().wake(sent, &live, skip);
        if let Some((tokens, grace)) = fence {
            self_fence(&agent, &tokens, grace, sent);
        }
        let Some(seq) = beat else { continue };
        let Some(answer) = beat_once(&agent, &mut link, seq, sent).await else { continue };
        let acts = agent.pulse().answered(&answer, sent, &agent.runner.live_tokens(), skip);
        for act in acts {
            match act {
                Act::Unregistered => agent.epoch.store(0, Ordering::SeqCst),
                Act::Kill { token, cause, grace } => agent.stop_in_background(token, cause, grace),
                Act::Register => {
                    tracing::warn!(
                        "the leader does not know this executor (declared dead?): registering again"
                    );
                    tokio::select! {
                        r = agent.register() => if let Err(e) = r {
                            tracing::error!(error = %e, "re-registration failed");
                            stop_trigger.fire();
                            return;
                        },
                        _ = stop.wait() => return,
                    }
                }
            }
        }
        if answer.draining && !agent.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: finishing running attempts, then leaving");
        }
        if agent.draining.load(Ordering::SeqCst) && agent.runner.live_tokens().is_empty() {
            stop_trigger.fire();
            return;
        }
    }
}

/// No beat acknowledged within the fencing window: kill every attempt.
fn self_fence(agent: &Arc<Agent>, tokens: &[u64], grace: std::time::Duration, now: Instant) {
    tracing::warn!(
        since_ack_ms = agent.pulse().since_ack(now).as_millis() as u64,
        "no heartbeat acknowledged: self-fencing, killing all attempts"
    );
    crate::metrics::executor().self_fences.inc();
    for &t in tokens {
        agent.stop_in_background(t, "self_fence", grace);
    }
}

/// Sends beat `seq` (numbered at `sent`) and returns the leader's answer, if any. The whole beat
/// is bounded like a unary heartbeat (a deadline per attempt, a bound on the retries); a beat
/// cut short drops the stream it was on.
async fn beat_once(
    agent: &Agent,
    link: &mut link::Link,
    seq: u64,
    sent: Instant,
) -> Option<pb::HeartbeatResponse> {
    let req = pb::HeartbeatRequest {
        executor_id: agent.id.clone(),
        epoch: agent.epoch.load(Ordering::SeqCst),
        attempts: agent.running(),
        seq,
        // A work dir without room: the leader places nothing here meanwhile.
        unhealthy: agent.runner.disk().problem().unwrap_or_default(),
    };
    let bound = agent.hb_client.call_timeout + agent.hb_client.retry_for;
    let r = match tokio::time::timeout(bound, link.beat(&agent.hb_client, req)).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "heartbeat not answered within {bound:?}"
        ))),
    };
    let result = if r.is_ok() { "ok" } else { "error" };
    let m = crate::metrics::executor();
    m.heartbeats.with_label_values(&[result]).inc();
    m.heartbeat_seconds.with_label_values(&[result]).observe(sent.elapsed().as_secs_f64());
    r.inspect_err(|e| tracing::debug!(error = %e, "heartbeat failed")).ok()
}
