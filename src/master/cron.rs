//! Cron on the masters: `CronService` (changes through Raft on the leader, reads linearizable or
//! stale like jobs) and the leader's firing loop.
//!
//! **Firing.** While this master is a ready leader (it has applied everything committed before
//! its term), every [`TICK`] it computes each cron's due times from the replicated schedule, the
//! cron's watermark and its own clock (`state::schedule`, up to [`MAX_DUE`] per cron) and proposes
//! `FireCron` for each, oldest first. Proposals are idempotent: apply refuses a time at or below
//! the watermark, so the loop re-proposes a time whose firing has not applied within
//! [`REPROPOSE`] (a slow commit, a dropped proposal) without ever creating a second job; a new
//! leader simply fires what is due and not yet handled. Whether a late time is `missed` is
//! decided by apply, from the `now` in the command and the cron's starting deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::node::{now_ms, Caller, LocalError, Node};
use crate::api::convert::{job_spec_from_pb, job_spec_to_pb, job_state_name, rejection_to_status};
use crate::api::pb::cron_service_client::CronServiceClient;
use crate::api::pb::cron_service_server::CronService;
use crate::api::pb::{self, ReadConsistency};
use crate::api::validate::Validate;
use crate::shutdown::Shutdown;
use crate::state::cron::{Cron, CronSpec, Overlap, RunOutcome};
use crate::state::schedule::Schedule;
use crate::state::{Command, Outcome, State};
use crate::store::with_read;

/// How often the leader looks for due times (bounds the firing lag when idle).
pub const TICK: Duration = Duration::from_millis(50);
/// Due times one cron may have in flight (a long outage catches up over several ticks).
pub const MAX_DUE: usize = 16;
/// A proposed firing not applied within this is proposed again (idempotent: the dedup key).
pub const REPROPOSE: Duration = Duration::from_millis(500);
/// Firings in flight at once.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Next firing times `GetCron` shows.
pub const NEXT_SHOWN: usize = 5;
/// Default history limits (Kubernetes' CronJob defaults).
pub const DEFAULT_KEEP_SUCCEEDED: u32 = 3;
pub const DEFAULT_KEEP_FAILED: u32 = 1;

#[derive(Clone)]
pub struct Crons {
    pub node: Arc<Node>,
}

fn client(chan: crate::api::Channel) -> CronServiceClient<crate::api::Channel> {
    CronServiceClient::new(chan).max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES)
}

/// The parsed schedule of `c` (its expression was validated before it reached the log).
fn schedule(c: &Cron) -> Option<Schedule> {
    Schedule::parse(&c.spec.schedule, &c.spec.tz, c.created_at).ok()
}

/// A cron as the API shows it, with its next times after `now` and its runs' job states.
pub fn cron_to_pb(c: &Cron, state: &State, now: u64) -> pb::Cron {
    let next = match (c.suspended, schedule(c)) {
        (false, Some(s)) => s.times_after(c.handled_upto.max(now), NEXT_SHOWN),
        _ => Vec::new(),
    };
    let runs = c
        .runs
        .iter()
        .map(|r| {
            let (outcome, reason, replaced) = match &r.outcome {
                RunOutcome::Fired { replaced, .. } => {
                    ("fired", String::new(), replaced.iter().map(Uuid::to_string).collect())
                }
                RunOutcome::Triggered { .. } => ("triggered", String::new(), Vec::new()),
                RunOutcome::Skipped { reason } => ("skipped", reason.clone(), Vec::new()),
                RunOutcome::Missed { late_ms } => {
                    ("missed", format!("{late_ms} ms late, past the starting deadline"), Vec::new())
                }
            };
            let job = r.job();
            pb::CronRun {
                scheduled_at_ms: r.scheduled_at,
                fired_at_ms: r.fired_at,
                outcome: outcome.into(),
                job_id: job.map(|j| j.to_string()).unwrap_or_default(),
                job_state: job
                    .and_then(|j| state.job(&j))
                    .map(|j| job_state_name(j.state).to_string())
                    .unwrap_or_default(),
                reason,
                replaced_job_ids: replaced,
            }
        })
        .collect();
    let ids = |v: Vec<Uuid>| v.into_iter().map(|j| j.to_string()).collect();
    pb::Cron {
        name: c.spec.name.clone(),
        schedule: c.spec.schedule.clone(),
        tz: c.spec.tz.clone(),
        overlap: c.spec.overlap.name().into(),
        starting_deadline_ms: c.spec.starting_deadline_ms,
        keep_succeeded: c.spec.keep_succeeded,
        keep_failed: c.spec.keep_failed,
        job_name: c.spec.job_name.clone(),
        spec: Some(job_spec_to_pb(&c.spec.job)),
        suspended: c.suspended,
        created_at_ms: c.created_at,
        handled_upto_ms: c.handled_upto,
        next_ms: next,
        runs,
        fired: c.fired,
        missed: c.missed,
        skipped: c.skipped,
        active_job_ids: ids(c.active(state)),
        beyond_limit_job_ids: ids(c.beyond_limits(state)),
    }
}

/// The spec a create request asks for (validated).
fn spec_from_pb(r: &pb::CreateCronRequest) -> Result<CronSpec, Status> {
    Ok(CronSpec {
        name: r.name.clone(),
        schedule: r.schedule.trim().to_string(),
        tz: r.tz.clone(),
        overlap: Overlap::parse(&r.overlap)
            .ok_or_else(|| Status::invalid_argument("bad overlap".to_string()))?,
        starting_deadline_ms: r.starting_deadline_ms,
        keep_succeeded: if r.keep_succeeded == 0 {
            DEFAULT_KEEP_SUCCEEDED
        } else {
            r.keep_succeeded
        },
        keep_failed: if r.keep_failed == 0 { DEFAULT_KEEP_FAILED } else { r.keep_failed },
        job_name: if r.job_name.is_empty() { r.name.clone() } else { r.job_name.clone() },
        job: job_spec_from_pb(r.spec.clone())?,
    })
}

impl Crons {
    /// The cron named `name` as the API shows it, read here.
    fn read(&self, name: &str) -> Result<pb::CronResponse, Status> {
        with_read(&self.node.applied, true, |a| match a.state.cron(name) {
            Some(c) => Ok(pb::CronResponse { cron: Some(cron_to_pb(c, &a.state, now_ms())) }),
            None => Err(Status::not_found(format!("cron {name} not found"))),
        })
    }

    /// Proposes `cmd` on the leader; answers with the cron as it is afterwards.
    async fn change(&self, name: &str, cmd: Command) -> Result<pb::CronResponse, LocalError> {
        match self.node.write_one(cmd).await? {
            Ok(_) => match self.read(name) {
                Err(s) if s.code() == tonic::Code::NotFound => Ok(pb::CronResponse { cron: None }),
                r => Ok(r?),
            },
            Err(r) => Err(rejection_to_status(&r).into()),
        }
    }

    async fn name_change(
        &self,
        req: Request<pb::CronNameRequest>,
        cmd: impl Fn(String) -> Command,
        call: impl Fn(
            CronServiceClient<crate::api::Channel>,
            Request<pb::CronNameRequest>,
        )
            -> futures::future::BoxFuture<'static, Result<Response<pb::CronResponse>, Status>>,
    ) -> Result<Response<pb::CronResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let local = || self.change(&msg.name, cmd(msg.name.clone()));
        self.node.serve_on_leader(&fwd, &msg, local, |c, m| call(client(c), m)).await
    }
}

#[tonic::async_trait]
impl CronService for Crons {
    async fn create_cron(
        &self,
        req: Request<pb::CreateCronRequest>,
    ) -> Result<Response<pb::CronResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let spec = spec_from_pb(&msg)?;
        let local =
            || self.change(&spec.name, Command::CreateCron { spec: spec.clone(), now: now_ms() });
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                local,
                |c, m| async move { client(c).create_cron(m).await },
            )
            .await
    }

    async fn list_crons(
        &self,
        req: Request<pb::ListCronsRequest>,
    ) -> Result<Response<pb::ListCronsResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        let list = || {
            with_read(&self.node.applied, false, |a| pb::ListCronsResponse {
                crons: a.state.crons().map(|c| cron_to_pb(c, &a.state, now_ms())).collect(),
            })
        };
        if msg.consistency == ReadConsistency::Stale as i32 {
            return Ok(Response::new(list()));
        }
        let local = || async {
            self.node.linearize().await?;
            Ok(list())
        };
        self.node
            .serve_on_leader(&fwd, &msg, local, |c, m| async move { client(c).list_crons(m).await })
            .await
    }

    async fn get_cron(
        &self,
        req: Request<pb::GetCronRequest>,
    ) -> Result<Response<pb::CronResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        if msg.consistency == ReadConsistency::Stale as i32 {
            return self.read(&msg.name).map(Response::new);
        }
        let local = || async {
            self.node.linearize().await?;
            Ok(self.read(&msg.name)?)
        };
        self.node
            .serve_on_leader(&fwd, &msg, local, |c, m| async move { client(c).get_cron(m).await })
            .await
    }

    async fn delete_cron(
        &self,
        req: Request<pb::CronNameRequest>,
    ) -> Result<Response<pb::CronResponse>, Status> {
        self.name_change(
            req,
            |name| Command::DeleteCron { name, now: now_ms() },
            |mut c, m| Box::pin(async move { c.delete_cron(m).await }),
        )
        .await
    }

    async fn suspend_cron(
        &self,
        req: Request<pb::CronNameRequest>,
    ) -> Result<Response<pb::CronResponse>, Status> {
        self.name_change(
            req,
            |name| Command::SuspendCron { name, suspended: true, now: now_ms() },
            |mut c, m| Box::pin(async move { c.suspend_cron(m).await }),
        )
        .await
    }

    async fn resume_cron(
        &self,
        req: Request<pb::CronNameRequest>,
    ) -> Result<Response<pb::CronResponse>, Status> {
        self.name_change(
            req,
            |name| Command::SuspendCron { name, suspended: false, now: now_ms() },
            |mut c, m| Box::pin(async move { c.resume_cron(m).await }),
        )
        .await
    }

    async fn trigger_cron(
        &self,
        req: Request<pb::CronNameRequest>,
    ) -> Result<Response<pb::TriggerCronResponse>, Status> {
        let fwd = Caller::of(&req)?;
        let msg = req.into_inner();
        msg.validate()?;
        let job = match msg.trigger_job_id.as_str() {
            "" => Uuid::new_v4(),
            id => Uuid::parse_str(id).map_err(|_| {
                Status::invalid_argument(format!("trigger_job_id {id:?} is not a UUID"))
            })?,
        };
        let local = || async {
            let cmd = Command::TriggerCron { name: msg.name.clone(), job, now: now_ms() };
            match self.node.write_one(cmd).await? {
                Ok(Outcome::CronFired { job: Some(j) }) => {
                    Ok(pb::TriggerCronResponse { job_id: j.to_string() })
                }
                Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}")).into()),
                Err(r) => Err(rejection_to_status(&r).into()),
            }
        };
        self.node
            .serve_on_leader(
                &fwd,
                &msg,
                local,
                |c, m| async move { client(c).trigger_cron(m).await },
            )
            .await
    }
}

/// The leader's firing loop (see the module doc); runs until `shutdown`.
pub async fn fire_loop(node: Arc<Node>, mut shutdown: Shutdown) {
    let mut schedules: HashMap<(String, u64), Option<Schedule>> = HashMap::new();
    let mut in_flight: HashMap<(String, u64), Instant> = HashMap::new();
    let mut proposals = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => break,
        }
        while proposals.try_join_next().is_some() {}
        if !node.is_ready_leader() {
            in_flight.clear();
            leading = false;
            continue;
        }
        if !leading && crate::chaos::on(crate::chaos::Bug::CronNoDedup) {
            refire_last(&node, &mut proposals);
        }
        leading = true;
        let now = now_ms();
        let due: Vec<(String, Vec<u64>)> = with_read(&node.applied, true, |a| {
            let crons: Vec<&Cron> = a.state.crons().filter(|c| !c.suspended).collect();
            schedules.retain(|(n, t), _| a.state.cron(n).is_some_and(|c| c.created_at == *t));
            in_flight.retain(|(n, t), _| a.state.cron(n).is_some_and(|c| *t > c.handled_upto));
            crons
                .into_iter()
                .filter_map(|c| {
                    let key = (c.spec.name.clone(), c.created_at);
                    let s = schedules.entry(key).or_insert_with(|| schedule(c)).as_ref()?;
                    let times = s.due(c.handled_upto, now, MAX_DUE);
                    (!times.is_empty()).then(|| (c.spec.name.clone(), times))
                })
                .collect()
        });
        for (name, times) in due {
            // One task per cron, its times in order, each proposed only once the one before it
            // has applied: a later time never applies before an earlier one (which the
            // watermark would then refuse, losing it).
            let key = (name.clone(), times[0]);
            if in_flight.get(&key).is_some_and(|at| at.elapsed() < REPROPOSE)
                || proposals.len() >= MAX_IN_FLIGHT
            {
                continue;
            }
            in_flight.insert(key, Instant::now());
            let node = node.clone();
            proposals.spawn(async move {
                for t in times {
                    let cmd = Command::FireCron {
                        name: name.clone(),
                        scheduled_at: t,
                        job: Uuid::new_v4(),
                        now: now_ms(),
                    };
                    match node.write_one(cmd).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(r)) => {
                            tracing::warn!(cron = %name, error = %r, "cron firing refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(cron = %name, "cron firing not committed; proposed again");
                            return;
                        }
                    }
                }
            });
        }
    }
    proposals.abort_all();
}

/// The planted bug `cron-no-dedup` (see `crate::chaos`), leader side: a new leader, unsure
/// whether its predecessor's last firing of each cron committed, proposes that time again. With
/// the dedup key in apply this is harmless; the bug also removes that key, so it fires twice.
fn refire_last(node: &Arc<Node>, proposals: &mut tokio::task::JoinSet<()>) {
    let last: Vec<(String, u64)> = with_read(&node.applied, true, |a| {
        a.state
            .crons()
            .filter(|c| !c.suspended && c.handled_upto > c.created_at)
            .map(|c| (c.spec.name.clone(), c.handled_upto))
            .collect()
    });
    for (name, t) in last {
        let node = node.clone();
        proposals.spawn(async move {
            let cmd =
                Command::FireCron { name, scheduled_at: t, job: Uuid::new_v4(), now: now_ms() };
            let _ = node.write_one(cmd).await;
        });
    }
}
