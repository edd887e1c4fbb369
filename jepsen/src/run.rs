//! `triad-jepsen test`: one chaos run, start to verdict.
//!
//! 1. network: switch + one namespace per host; cluster: configs, masters, leader, executors;
//! 2. workload for `time_limit` with leader pollers and the nemesis running;
//! 3. final phase: heal everything, wait (bounded) for every job to be terminal, final read;
//! 4. stop the processes, judge the run directory, print the summary.
//!
//! Everything lives in `jepsen/store/<run-id>/` (kept); the guard in `main` tears the network and
//! all processes down whatever happens.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::SeedableRng;
use triad_jepsen::history::monotonic_ns;

use crate::cleanup;
use crate::cluster::{self, Cluster, LeaderView};
use crate::creds::Creds;
use crate::nemesis::{self, Nemesis};
use crate::net::{self, Net};
use crate::recorder::Recorder;
use crate::report::{self, RunMeta};
use crate::watch;
use crate::workload::{self, Params, Workload};
use crate::TestArgs;

/// Creates the run directory (`<store>/<utc time>-<nemesis>-s<seed>`) and points `latest` at it.
pub fn make_run_dir(
    store: &std::path::Path,
    nemesis: &str,
    seed: u64,
) -> anyhow::Result<(String, PathBuf)> {
    std::fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let (d, s) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = d as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    let nem: String = nemesis
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '+' })
        .take(40)
        .collect();
    let mut id = format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}-{nem}-s{seed}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    );
    let mut dir = store.join(&id);
    let mut n = 1;
    while dir.exists() {
        n += 1;
        id = format!("{id}-{n}");
        dir = store.join(&id);
    }
    std::fs::create_dir_all(&dir)?;
    let latest = store.join("latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(&id, &latest);
    Ok((id, dir))
}

pub async fn test(
    args: TestArgs,
    run_id: String,
    dir: PathBuf,
    triad_bin: PathBuf,
    self_exe: PathBuf,
) -> anyhow::Result<bool> {
    let faults = nemesis::parse(&args.nemesis)?;
    let task_millis = crate::task::parse_range(&args.task_millis)?;
    if args.masters == 0 || args.masters > 9 || args.executors > 9 {
        bail!("--masters must be 1..=9 and --executors 0..=9");
    }
    let seed = args.seed.expect("seed resolved in main");
    let command = format!(
        "triad-jepsen test --nemesis {} --time-limit {} --concurrency {} --rate {} --seed {} --interval {} --masters {} --executors {} --task-millis {}{}",
        args.nemesis,
        args.time_limit,
        args.concurrency,
        args.rate,
        seed,
        args.interval,
        args.masters,
        args.executors,
        args.task_millis,
        args.bug.as_ref().map(|b| format!(" --bug {b}")).unwrap_or_default()
    );
    let mut meta = RunMeta {
        id: run_id.clone(),
        command,
        nemesis: args.nemesis.clone(),
        time_limit_s: args.time_limit,
        concurrency: args.concurrency,
        rate: args.rate,
        seed,
        interval_s: args.interval,
        bug: args.bug.clone(),
        masters: args.masters,
        executors: args.executors,
        task_millis: args.task_millis.clone(),
        terminal_bound_ns: args.final_wait * 1_000_000_000,
        finished_job_ttl_ms: Some((args.finished_job_ttl.max(0.0) * 1000.0) as u64)
            .filter(|&ms| ms > 0),
        ..Default::default()
    };
    report::write_meta(&dir, &meta)?;
    println!("triad-jepsen: run {run_id} in {}", dir.display());
    println!("  {}", meta.command);

    // --- network and cluster
    let t0 = Instant::now();
    let plan = cluster::host_plan(args.masters, args.executors);
    cleanup::add_namespace(net::SWITCH_NS);
    for (name, _) in &plan {
        cleanup::add_namespace(&format!("{}-{name}", net::PREFIX));
    }
    let net = Arc::new(tokio::task::spawn_blocking(move || Net::create(&plan)).await??);
    println!(
        "network: {} hosts on {}.0/24 via switch namespace {} ({:?} rules)",
        net.hosts.len(),
        net::SUBNET,
        net::SWITCH_NS,
        net.firewall
    );
    let opts = cluster::Options {
        triad_bin: triad_bin.clone(),
        run_dir: dir.clone(),
        slots: args.slots,
        bug: args.bug.clone(),
        log_filter: args.triad_log.clone(),
        finished_job_ttl: Duration::from_secs_f64(args.finished_job_ttl.max(0.0)),
        lazy_disks: faults.iter().any(|f| f.needs_lazy_disks()),
    };
    let creds = Creds::create(&dir.join("creds"))?;
    let admin = creds.admin.clone();
    let mut c = Cluster::new(&opts, &creds, &net.hosts, t0)?;
    if opts.lazy_disks {
        println!(
            "disks: a lazy filesystem over every master's data dir (unsynced writes die with the power)"
        );
    }
    let master_ids: Vec<(u64, String)> = c.masters.iter().map(|m| (m.id, m.addr.clone())).collect();
    let addrs = c.master_addrs();
    c.start_masters()?;
    c.start_executors()?;
    cluster::wait_ready(
        &admin,
        &master_ids,
        addrs.clone(),
        args.executors,
        Duration::from_secs(60),
    )
    .await
    .context("cluster did not come up")?;
    println!(
        "cluster up in {:.1} s: masters {}; executors {}",
        t0.elapsed().as_secs_f64(),
        addrs.join(","),
        c.executors.iter().map(|e| e.addr.as_str()).collect::<Vec<_>>().join(",")
    );
    let cluster = Arc::new(tokio::sync::Mutex::new(c));
    // The cron and the event follower (issue 17): judged by `cron_once` and `events_complete`.
    if let Err(e) = watch::create_cron(&addrs, &admin).await {
        meta.runner_errors.push(format!("{e:#}"));
    }
    let follower = watch::follow(&dir.join("events.jsonl"), &addrs, &creds.client)?;

    // --- workload, pollers, nemesis
    let rec = Arc::new(Recorder::create(&dir.join("history.jsonl"))?);
    let sink = dir.join("sink.jsonl");
    std::fs::File::create(&sink)?;
    let view = LeaderView::default();
    let (stop_polls, polls_rx) = tokio::sync::watch::channel(false);
    let mut pollers = Vec::new();
    for (id, addr) in &master_ids {
        pollers.push(tokio::spawn(cluster::poll_leader(
            admin.clone(),
            rec.clone(),
            view.clone(),
            *id,
            addr.clone(),
            Duration::from_millis(200),
            polls_rx.clone(),
        )));
    }
    let params = Params {
        concurrency: args.concurrency.max(1),
        rate: args.rate,
        seed,
        task_program: self_exe,
        sink: sink.clone(),
        task_millis,
        max_tasks: 4,
        max_attempts: args.max_attempts,
        p_submit: 0.2,
        p_cancel: 0.1,
        call_timeout: Duration::from_millis(3500),
        retry_for: Duration::from_secs(8),
    };
    let op_bound = params.op_bound();
    let wl = Arc::new(Workload {
        params,
        rec: rec.clone(),
        masters: addrs.clone(),
        dialer: creds.client.clone(),
        shared: Mutex::new(Default::default()),
    });
    meta.start_ns = monotonic_ns();
    let start = Instant::now();
    let until = start + Duration::from_secs(args.time_limit);
    println!(
        "workload: {} clients, {} ops/s, {} s; nemesis: {}",
        args.concurrency,
        args.rate,
        args.time_limit,
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
        }
    );
    let workers: Vec<_> =
        (0..args.concurrency.max(1)).map(|w| tokio::spawn(wl.clone().worker(w, until))).collect();
    let nem = Nemesis {
        cluster: cluster.clone(),
        net: net.clone(),
        view: view.clone(),
        faults,
        interval: Duration::from_secs_f64(args.interval.max(0.5)),
        rng: StdRng::seed_from_u64(seed),
        log: std::fs::File::create(dir.join("nemesis.jsonl"))?,
        t0: start,
        master_ids: master_ids.clone(),
        dialer: admin.clone(),
    };
    let nem = tokio::spawn(nem.run(until));
    let progress = {
        let rec = rec.clone();
        let wl = wl.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                println!(
                    "[+{:6.1}s] {} ops recorded, {} jobs acknowledged",
                    start.elapsed().as_secs_f64(),
                    rec.ops(),
                    wl.acknowledged()
                );
            }
        })
    };
    let faults_done = nem.await.context("nemesis task")?;
    for w in workers {
        // Each worker's last op is bounded by `op_bound`.
        if tokio::time::timeout(op_bound + Duration::from_secs(5), w).await.is_err() {
            meta.runner_errors.push("a client worker did not finish its last op in time".into());
        }
    }
    progress.abort();

    // --- final phase
    println!(
        "[+{:6.1}s] final phase: healing everything ({} faults injected)",
        start.elapsed().as_secs_f64(),
        faults_done.len()
    );
    {
        let mut c = cluster.lock().await;
        for d in c.revive_all() {
            println!("  {d}");
        }
    }
    let n2 = net.clone();
    tokio::task::spawn_blocking(move || n2.heal()).await??;
    let healed = monotonic_ns();
    meta.heal_time_ns = Some(healed);
    let healed_at = Instant::now();
    if let Err(e) = cluster::wait_ready(
        &admin,
        &master_ids,
        addrs.clone(),
        args.executors,
        Duration::from_secs(60),
    )
    .await
    {
        meta.runner_errors.push(format!("after healing: {e:#}"));
    }
    if let Err(e) = watch::finish_cron(&dir, &addrs, &admin).await {
        meta.runner_errors.push(format!("after healing: {e:#}"));
    }
    let (jobs, live) = workload::wait_terminal(
        &admin,
        addrs.clone(),
        healed_at + Duration::from_secs(args.final_wait),
    )
    .await;
    meta.terminal_wait_s = Some(healed_at.elapsed().as_secs_f64());
    println!(
        "[+{:6.1}s] {} jobs, {} still live after {:.1} s; final read",
        start.elapsed().as_secs_f64(),
        jobs,
        if live == usize::MAX { "?".to_string() } else { live.to_string() },
        healed_at.elapsed().as_secs_f64()
    );
    let acked = wl.acknowledged_jobs();
    if workload::final_read(&rec, &admin, addrs.clone(), acked, Duration::from_secs(60))
        .await
        .is_none()
    {
        meta.runner_errors
            .push("the final read failed (the cluster did not answer within 60 s)".into());
    }
    let (caught_up, fs) = follower.finish(&addrs, &admin, Duration::from_secs(30)).await;
    meta.events_caught_up = caught_up;
    println!(
        "[+{:6.1}s] event follower: {} messages, {} events, {} resets, caught up: {caught_up}",
        start.elapsed().as_secs_f64(),
        fs.messages,
        fs.events,
        fs.resets
    );
    let _ = stop_polls.send(true);
    for p in pollers {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    println!("[+{:6.1}s] stopping the cluster", start.elapsed().as_secs_f64());
    {
        let mut c = cluster.lock().await;
        c.stop_all(Duration::from_secs(8)).await;
        for line in c.unmount_disks() {
            println!("  disk {line}");
        }
    }
    if let Some(e) = rec.error() {
        meta.runner_errors.push(format!("writing the history: {e}"));
    }
    report::write_meta(&dir, &meta)?;

    // --- judge
    let out = tokio::task::spawn_blocking(move || report::judge(&dir)).await??;
    print!("{}", out.text);
    Ok(out.valid)
}
