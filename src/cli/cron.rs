//! `triad cron …`: create, list, get, delete, suspend, resume and trigger cron jobs.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::events::rfc3339;
use super::output::{json, table, Format};
use super::{st, MastersArg, OutputArg};
use crate::api::pb;
use crate::client::cron::CronChange;
use crate::executor::config::parse_kv;

#[derive(Subcommand, Debug)]
pub enum CronCmd {
    /// Create a cron job: a job template fired on a schedule.
    Create(Box<CreateArgs>),
    /// List cron jobs.
    List {
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Show one cron job: next firing times, last runs with their jobs, missed ones.
    Get {
        name: String,
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Delete a cron job (the jobs it created stay).
    Delete {
        name: String,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Stop firing a cron job until it is resumed.
    Suspend {
        name: String,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Fire a suspended cron job again (times that passed while suspended are not fired late).
    Resume {
        name: String,
        #[command(flatten)]
        m: MastersArg,
    },
    /// Fire a cron job now, outside its schedule; prints the job's id.
    Trigger {
        name: String,
        #[command(flatten)]
        m: MastersArg,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    /// 5-field cron (names, ranges, steps), an optional leading seconds field, @hourly-style
    /// macros, or "@every DUR".
    #[arg(long)]
    pub schedule: String,
    /// IANA time zone (default UTC).
    #[arg(long, default_value = "")]
    pub tz: String,
    /// What a firing does while an earlier run is active: allow, forbid or replace.
    #[arg(long, default_value = "allow")]
    pub overlap: String,
    /// A time fired later than this is recorded missed instead (e.g. 30s; default: never).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub starting_deadline: Option<Duration>,
    /// Succeeded runs to keep (default 3).
    #[arg(long, default_value_t = 0)]
    pub keep_succeeded: u32,
    /// Failed runs to keep (default 1).
    #[arg(long, default_value_t = 0)]
    pub keep_failed: u32,
    /// Name of the jobs it creates (default: the cron's name).
    #[arg(long, default_value = "")]
    pub job_name: String,
    #[arg(long, default_value_t = 1)]
    pub tasks: u32,
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    #[arg(long, default_value_t = 0)]
    pub cpu: u32,
    #[arg(long, default_value_t = 0)]
    pub memory: u64,
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub backoff: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    #[arg(long = "constraint", value_parser = parse_kv)]
    pub constraints: Vec<(String, String)>,
    #[arg(long = "env", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    #[arg(long)]
    pub shell: bool,
    #[command(flatten)]
    pub out: OutputArg,
    #[command(flatten)]
    pub m: MastersArg,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn run(cmd: CronCmd) -> anyhow::Result<i32> {
    match cmd {
        CronCmd::Create(a) => {
            let (command, args) =
                a.command.split_first().context("a command is required after --")?;
            let req = pb::CreateCronRequest {
                name: a.name.clone(),
                schedule: a.schedule.clone(),
                tz: a.tz.clone(),
                overlap: a.overlap.clone(),
                starting_deadline_ms: a.starting_deadline.map_or(0, |d| d.as_millis() as u64),
                keep_succeeded: a.keep_succeeded,
                keep_failed: a.keep_failed,
                job_name: a.job_name.clone(),
                spec: Some(pb::JobSpec {
                    command: command.clone(),
                    args: args.to_vec(),
                    env: a.env.iter().cloned().collect(),
                    shell: a.shell,
                    task_count: a.tasks,
                    resources: Some(pb::Resources {
                        slots: a.slots,
                        cpu_millis: a.cpu,
                        memory_mib: a.memory,
                    }),
                    constraints: a.constraints.iter().cloned().collect(),
                    max_attempts: a.max_attempts,
                    retry_backoff_ms: a.backoff.map_or(0, |d| d.as_millis() as u64),
                    timeout_ms: a.timeout.map_or(0, |d| d.as_millis() as u64),
                    priority: a.priority,
                    // The runs' retention is the cron's history limits (and the cluster TTL).
                    ttl_after_finished_ms: None,
                }),
            };
            let c = a.m.client()?.create_cron(req).await.map_err(st)?;
            match a.out.format {
                Format::Json => json(&c)?,
                Format::Table => print_cron(&c),
            }
        }
        CronCmd::List { stale, out, m } => {
            let crons = m.client()?.list_crons(stale).await.map_err(st)?;
            match out.format {
                Format::Json => json(&crons)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = crons
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.schedule.clone(),
                                if c.tz.is_empty() { "UTC".into() } else { c.tz.clone() },
                                c.overlap.clone(),
                                if c.suspended { "yes".into() } else { "no".into() },
                                c.next_ms.first().map_or("-".into(), |t| rfc3339(*t)),
                                format!("{}/{}/{}", c.fired, c.skipped, c.missed),
                            ]
                        })
                        .collect();
                    let header = [
                        "NAME",
                        "SCHEDULE",
                        "TZ",
                        "OVERLAP",
                        "SUSPENDED",
                        "NEXT",
                        "FIRED/SKIPPED/MISSED",
                    ];
                    println!("{}", table(&header, &rows));
                }
            }
        }
        CronCmd::Get { name, stale, out, m } => {
            let c = m.client()?.get_cron(&name, stale).await.map_err(st)?;
            match out.format {
                Format::Json => json(&c)?,
                Format::Table => print_cron(&c),
            }
        }
        CronCmd::Delete { name, m } => {
            m.client()?.change_cron(&name, CronChange::Delete).await.map_err(st)?;
            println!("{name} deleted");
        }
        CronCmd::Suspend { name, m } => {
            m.client()?.change_cron(&name, CronChange::Suspend).await.map_err(st)?;
            println!("{name} suspended");
        }
        CronCmd::Resume { name, m } => {
            m.client()?.change_cron(&name, CronChange::Resume).await.map_err(st)?;
            println!("{name} resumed");
        }
        CronCmd::Trigger { name, m } => {
            println!("{}", m.client()?.trigger_cron(&name).await.map_err(st)?);
        }
    }
    Ok(0)
}

fn print_cron(c: &pb::Cron) {
    let spec = c.spec.clone().unwrap_or_default();
    println!("name:       {}", c.name);
    println!("schedule:   {} ({})", c.schedule, if c.tz.is_empty() { "UTC" } else { &c.tz });
    println!("overlap:    {}", c.overlap);
    if c.starting_deadline_ms > 0 {
        println!("deadline:   {} ms", c.starting_deadline_ms);
    }
    println!("keep:       {} succeeded, {} failed", c.keep_succeeded, c.keep_failed);
    println!("command:    {} {}", spec.command, spec.args.join(" "));
    println!("suspended:  {}", c.suspended);
    println!("fired:      {} (skipped {}, missed {})", c.fired, c.skipped, c.missed);
    let next: Vec<String> = c.next_ms.iter().map(|t| rfc3339(*t)).collect();
    println!("next:       {}", if next.is_empty() { "-".into() } else { next.join(", ") });
    if !c.active_job_ids.is_empty() {
        println!("active:     {}", c.active_job_ids.join(", "));
    }
    if !c.beyond_limit_job_ids.is_empty() {
        println!("past limit: {}", c.beyond_limit_job_ids.join(", "));
    }
    let rows: Vec<Vec<String>> = c
        .runs
        .iter()
        .rev()
        .take(20)
        .map(|r| {
            vec![
                rfc3339(r.scheduled_at_ms),
                r.outcome.clone(),
                if r.job_id.is_empty() { "-".into() } else { r.job_id.clone() },
                if r.job_state.is_empty() { "-".into() } else { r.job_state.clone() },
                r.reason.clone(),
            ]
        })
        .collect();
    println!("\n{}", table(&["SCHEDULED", "OUTCOME", "JOB", "STATE", "REASON"], &rows));
}
