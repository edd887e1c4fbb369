//! The nemesis: on a schedule (`interval` off, `interval` on, repeated, seeded), injects one
//! fault and heals it. Every fault is recorded (`nemesis.jsonl`) with its targets and start/end
//! on the history's clock.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use triad_jepsen::history::monotonic_ns;

use crate::cluster::{find_leader, Cluster, LeaderView};
use crate::net::Net;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL a random master; restart it on heal.
    Kill,
    /// SIGKILL the leader; restart it on heal.
    KillLeader,
    /// SIGSTOP a random master; SIGCONT on heal.
    Pause,
    PauseLeader,
    /// Cut one random master off from every other host.
    IsolateOne,
    IsolateLeader,
    /// Masters split into a minority and a majority; executors fall on either side.
    Split,
    /// Two sides that cannot hear each other, and one master that hears both.
    Bridge,
    /// Every host drops a random 20-40 % of what it receives from the other hosts.
    Loss,
    /// SIGKILL every master, restart them all after 0-2 s.
    Restart,
    /// SIGKILL an executor and everything on its host (its attempts too: a host crash); restart
    /// the executor on heal.
    ExecutorKill,
    /// SIGKILL only an executor's process: its attempts live on as orphans (a daemon crash, not
    /// a host crash); restart it on heal.
    ExecutorCrash,
    /// SIGSTOP an executor process (its running attempts go on); SIGCONT on heal.
    ExecutorPause,
    /// Cut an executor off from every other host (its attempts go on).
    ExecutorPartition,
    /// Power loss of one random master: SIGKILL it and drop every write its disk (the lazy
    /// filesystem over its data dir) had not fsynced; restart it on heal.
    PowerLoss,
    /// Power loss of every master at once (one power supply): all killed, all their unsynced
    /// writes dropped, all restarted after 0-2 s.
    PowerLossAll,
}

/// The power-loss faults (`--nemesis power`): runs with them mount lazy disks.
pub const POWER: [Fault; 2] = [Fault::PowerLoss, Fault::PowerLossAll];

pub const ALL: [Fault; 14] = [
    Fault::Kill,
    Fault::KillLeader,
    Fault::Pause,
    Fault::PauseLeader,
    Fault::IsolateOne,
    Fault::IsolateLeader,
    Fault::Split,
    Fault::Bridge,
    Fault::Loss,
    Fault::Restart,
    Fault::ExecutorKill,
    Fault::ExecutorCrash,
    Fault::ExecutorPause,
    Fault::ExecutorPartition,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::PauseLeader => "pause-leader",
            Fault::IsolateOne => "isolate-one",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Split => "split",
            Fault::Bridge => "bridge",
            Fault::Loss => "loss",
            Fault::Restart => "restart",
            Fault::ExecutorKill => "executor-kill",
            Fault::ExecutorCrash => "executor-crash",
            Fault::ExecutorPause => "executor-pause",
            Fault::ExecutorPartition => "executor-partition",
            Fault::PowerLoss => "power-loss",
            Fault::PowerLossAll => "power-loss-all",
        }
    }

    /// Does this fault need the masters' data dirs on lazy filesystems?
    pub fn needs_lazy_disks(self) -> bool {
        POWER.contains(&self)
    }
}

/// Parses `--nemesis`: comma-separated groups or single faults.
pub fn parse(spec: &str) -> anyhow::Result<Vec<Fault>> {
    let mut out = BTreeSet::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let group: Vec<Fault> = match part {
            "none" => vec![],
            "all" => ALL.to_vec(),
            "kill" => vec![Fault::Kill, Fault::KillLeader],
            "pause" => vec![Fault::Pause, Fault::PauseLeader],
            "partition" => vec![
                Fault::IsolateOne,
                Fault::IsolateLeader,
                Fault::Split,
                Fault::Bridge,
                Fault::Loss,
            ],
            "power" => POWER.to_vec(),
            other => match ALL.iter().chain(POWER.iter()).find(|f| f.name() == other) {
                Some(f) => vec![*f],
                None => bail!(
                    "unknown nemesis {other:?}: use none, all, kill, pause, partition, power or one \
                     of {}",
                    ALL.iter().chain(POWER.iter()).map(|f| f.name()).collect::<Vec<_>>().join(", ")
                ),
            },
        };
        out.extend(group);
    }
    Ok(out.into_iter().collect())
}

/// One injected fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: String,
    pub targets: Vec<String>,
    /// Human-readable shape (e.g. the partition's sides).
    pub detail: String,
    /// The master the pollers believed led when it was injected.
    pub leader: Option<String>,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    /// Seconds since the workload began.
    pub start_s: f64,
    pub end_s: Option<f64>,
}

impl FaultRecord {
    pub fn hit_leader(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| self.targets.contains(l))
    }

    /// Every master went down at once (a full restart or a power loss of all).
    pub fn hit_all_masters(&self) -> bool {
        self.kind == "restart" || self.kind == "power-loss-all"
    }
}

enum Undo {
    Restart(Vec<String>),
    Resume(Vec<String>),
    Net,
    Nothing,
}

pub struct Nemesis {
    pub cluster: Arc<tokio::sync::Mutex<Cluster>>,
    pub net: Arc<Net>,
    pub view: LeaderView,
    pub faults: Vec<Fault>,
    pub interval: Duration,
    pub rng: StdRng,
    pub log: File,
    /// Workload start (for `start_s`).
    pub t0: Instant,
    pub master_ids: Vec<(u64, String)>,
    /// The probes' credentials (admin).
    pub dialer: triad::api::Dialer,
}

impl Nemesis {
    /// After `down_ms`, starts every one of `masters` (all killed by the fault) again and ends
    /// the fault's record: faults that take every master down heal themselves.
    async fn start_all_after(
        &self,
        rec: &mut FaultRecord,
        masters: &[String],
        down_ms: u64,
    ) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        {
            let mut c = self.cluster.lock().await;
            let t = c.elapsed();
            for m in masters {
                c.node_mut(m).proc.start(t)?;
            }
        }
        rec.end_ns = Some(monotonic_ns());
        rec.end_s = Some(self.since());
        Ok(())
    }

    fn since(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn write(&mut self, r: &FaultRecord) {
        if let Ok(s) = serde_json::to_string(r) {
            let _ = writeln!(self.log, "{s}");
        }
    }

    async fn leader(&self) -> Option<String> {
        let id = match self.view.leader(Duration::from_millis(1000)) {
            Some(id) => Some(id),
            None => find_leader(&self.dialer, &self.master_ids, Duration::from_millis(300)).await,
        };
        let c = self.cluster.lock().await;
        id.and_then(|id| c.master_by_id(id)).map(|m| m.name.clone())
    }

    /// Runs until `until`; every fault it injected is healed when it returns.
    pub async fn run(mut self, until: Instant) -> Vec<FaultRecord> {
        let mut records = Vec::new();
        if self.faults.is_empty() {
            return records;
        }
        loop {
            // Off.
            let off = self.interval.min(until.saturating_duration_since(Instant::now()));
            tokio::time::sleep(off).await;
            if Instant::now() + Duration::from_millis(500) >= until {
                break;
            }
            let fault = *self.faults.choose(&mut self.rng).expect("non-empty");
            let (mut rec, undo) = match self.inject(fault).await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("[+{:6.1}s] nemesis: {} failed: {e:#}", self.since(), fault.name());
                    continue;
                }
            };
            println!(
                "[+{:6.1}s] nemesis: {:<18} {}{}",
                rec.start_s,
                rec.kind,
                rec.detail,
                rec.leader.as_ref().map(|l| format!("  (leader {l})")).unwrap_or_default()
            );
            // On.
            let on = self.interval.min(until.saturating_duration_since(Instant::now()));
            tokio::time::sleep(on).await;
            let healed = self.undo(undo).await;
            if rec.end_ns.is_none() {
                rec.end_ns = Some(monotonic_ns());
                rec.end_s = Some(self.since());
            }
            println!(
                "[+{:6.1}s] nemesis: healed {}{}",
                self.since(),
                rec.kind,
                if healed.is_empty() { String::new() } else { format!(": {}", healed.join(", ")) }
            );
            self.write(&rec);
            records.push(rec);
        }
        records
    }

    fn start_record(
        &self,
        f: Fault,
        targets: Vec<String>,
        detail: String,
        leader: Option<String>,
    ) -> FaultRecord {
        FaultRecord {
            kind: f.name().to_string(),
            targets,
            detail,
            leader,
            start_ns: monotonic_ns(),
            end_ns: None,
            start_s: self.since(),
            end_s: None,
        }
    }

    /// Firewall changes run `nft`/`iptables` once per host: off the async workers.
    async fn apply_net(
        &self,
        drop_from: Vec<(String, BTreeSet<String>)>,
        loss: Option<u32>,
    ) -> anyhow::Result<()> {
        let net = self.net.clone();
        tokio::task::spawn_blocking(move || net.apply(&drop_from, loss)).await?
    }

    async fn inject(&mut self, f: Fault) -> anyhow::Result<(FaultRecord, Undo)> {
        let leader = self.leader().await;
        let (masters, executors): (Vec<String>, Vec<String>) = {
            let c = self.cluster.lock().await;
            (
                c.masters.iter().map(|m| m.name.clone()).collect(),
                c.executors.iter().map(|e| e.name.clone()).collect(),
            )
        };
        let random_master = masters.choose(&mut self.rng).cloned().expect("masters");
        let leader_or_random = leader.clone().unwrap_or_else(|| random_master.clone());
        let random_executor = executors.choose(&mut self.rng).cloned();
        match f {
            Fault::Kill | Fault::KillLeader => {
                let t = if f == Fault::Kill { random_master } else { leader_or_random };
                let rec = self.start_record(f, vec![t.clone()], t.clone(), leader);
                self.cluster.lock().await.node_mut(&t).proc.kill().await?;
                Ok((rec, Undo::Restart(vec![t])))
            }
            Fault::Pause | Fault::PauseLeader => {
                let t = if f == Fault::Pause { random_master } else { leader_or_random };
                let rec = self.start_record(f, vec![t.clone()], t.clone(), leader);
                self.cluster.lock().await.node_mut(&t).proc.pause()?;
                Ok((rec, Undo::Resume(vec![t])))
            }
            Fault::IsolateOne | Fault::IsolateLeader => {
                let t = if f == Fault::IsolateOne { random_master } else { leader_or_random };
                let rest: Vec<String> =
                    masters.iter().chain(executors.iter()).filter(|n| **n != t).cloned().collect();
                let groups = vec![vec![t.clone()], rest];
                let detail = describe(&groups, None);
                let rec = self.start_record(f, vec![t], detail, leader);
                self.apply_net(grudge(&groups, None), None).await?;
                Ok((rec, Undo::Net))
            }
            Fault::Split => {
                let mut ms = masters.clone();
                ms.shuffle(&mut self.rng);
                let minority = ((ms.len() - 1) / 2).max(1);
                let mut groups = vec![ms[..minority].to_vec(), ms[minority..].to_vec()];
                for e in &executors {
                    let side = self.rng.gen_range(0..2);
                    groups[side].push(e.clone());
                }
                let detail = describe(&groups, None);
                let rec = self.start_record(f, groups[0].clone(), detail, leader);
                self.apply_net(grudge(&groups, None), None).await?;
                Ok((rec, Undo::Net))
            }
            Fault::Bridge => {
                let mut ms = masters.clone();
                ms.shuffle(&mut self.rng);
                let bridge = ms.remove(0);
                let half = ms.len() / 2;
                let mut groups = vec![ms[..half].to_vec(), ms[half..].to_vec()];
                for e in &executors {
                    let side = self.rng.gen_range(0..2);
                    groups[side].push(e.clone());
                }
                let detail = describe(&groups, Some(&bridge));
                let mut targets = groups[0].clone();
                targets.extend(groups[1].iter().cloned());
                let rec = self.start_record(f, targets, detail, leader);
                self.apply_net(grudge(&groups, Some(&bridge)), None).await?;
                Ok((rec, Undo::Net))
            }
            Fault::Loss => {
                let pct = self.rng.gen_range(20..=40);
                let rec = self.start_record(
                    f,
                    vec![],
                    format!("{pct}% of packets between hosts dropped"),
                    leader,
                );
                self.apply_net(Vec::new(), Some(pct)).await?;
                Ok((rec, Undo::Net))
            }
            Fault::Restart => {
                let down_ms = self.rng.gen_range(0..=2000);
                let mut rec = self.start_record(
                    f,
                    masters.clone(),
                    format!("all masters, down {down_ms} ms"),
                    leader,
                );
                {
                    let mut c = self.cluster.lock().await;
                    for m in &masters {
                        c.node_mut(m).proc.kill().await?;
                    }
                }
                self.start_all_after(&mut rec, &masters, down_ms).await?;
                Ok((rec, Undo::Nothing))
            }
            Fault::PowerLoss => {
                let t = random_master;
                let mut rec = self.start_record(f, vec![t.clone()], t.clone(), leader);
                let mut c = self.cluster.lock().await;
                let node = c.node_mut(&t);
                let Some(disk) = node.disk.clone() else { bail!("{t} has no lazy disk") };
                node.proc.kill().await?;
                let cut = disk.cut();
                rec.detail =
                    format!("{t}: {} unsynced bytes in {} files dropped", cut.bytes, cut.files);
                Ok((rec, Undo::Restart(vec![t])))
            }
            Fault::PowerLossAll => {
                let down_ms = self.rng.gen_range(0..=2000);
                let mut rec = self.start_record(f, masters.clone(), String::new(), leader);
                let mut dropped = Vec::new();
                {
                    let mut c = self.cluster.lock().await;
                    // Killed first, every one, then the disks cut: no master outlives the power.
                    for m in &masters {
                        c.node_mut(m).proc.kill().await?;
                    }
                    for m in &masters {
                        let Some(disk) = c.node_mut(m).disk.clone() else {
                            bail!("{m} has no lazy disk")
                        };
                        let cut = disk.cut();
                        dropped.push(format!("{m} {} B/{} files", cut.bytes, cut.files));
                    }
                }
                rec.detail = format!(
                    "all masters, down {down_ms} ms; unsynced dropped: {}",
                    dropped.join(", ")
                );
                self.start_all_after(&mut rec, &masters, down_ms).await?;
                Ok((rec, Undo::Nothing))
            }
            Fault::ExecutorKill => {
                let Some(t) = random_executor else { bail!("no executors") };
                let rec =
                    self.start_record(f, vec![t.clone()], format!("{t} and its attempts"), leader);
                let mut c = self.cluster.lock().await;
                let node = c.node_mut(&t);
                crate::net::kill_ns_processes(&node.host.ns);
                node.proc.kill().await?;
                Ok((rec, Undo::Restart(vec![t])))
            }
            Fault::ExecutorCrash => {
                let Some(t) = random_executor else { bail!("no executors") };
                let rec = self.start_record(
                    f,
                    vec![t.clone()],
                    format!("{t} (its attempts live on)"),
                    leader,
                );
                self.cluster.lock().await.node_mut(&t).proc.kill().await?;
                Ok((rec, Undo::Restart(vec![t])))
            }
            Fault::ExecutorPause => {
                let Some(t) = random_executor else { bail!("no executors") };
                let rec = self.start_record(
                    f,
                    vec![t.clone()],
                    format!("{t} (its attempts run on)"),
                    leader,
                );
                self.cluster.lock().await.node_mut(&t).proc.pause()?;
                Ok((rec, Undo::Resume(vec![t])))
            }
            Fault::ExecutorPartition => {
                let Some(t) = random_executor else { bail!("no executors") };
                let rest: Vec<String> =
                    masters.iter().chain(executors.iter()).filter(|n| **n != t).cloned().collect();
                let groups = vec![vec![t.clone()], rest];
                let detail = describe(&groups, None);
                let rec = self.start_record(f, vec![t], detail, leader);
                self.apply_net(grudge(&groups, None), None).await?;
                Ok((rec, Undo::Net))
            }
        }
    }

    async fn undo(&mut self, u: Undo) -> Vec<String> {
        let mut did = Vec::new();
        match u {
            Undo::Restart(names) => {
                let mut c = self.cluster.lock().await;
                let t = c.elapsed();
                for n in names {
                    match c.node_mut(&n).proc.start(t) {
                        Ok(()) => did.push(format!("restarted {n}")),
                        Err(e) => did.push(format!("restarting {n} FAILED: {e:#}")),
                    }
                }
            }
            Undo::Resume(names) => {
                let mut c = self.cluster.lock().await;
                for n in names {
                    match c.node_mut(&n).proc.resume() {
                        Ok(()) => did.push(format!("resumed {n}")),
                        Err(e) => did.push(format!("resuming {n} FAILED: {e:#}")),
                    }
                }
            }
            Undo::Net => {
                if let Err(e) = self.apply_net(Vec::new(), None).await {
                    did.push(format!("healing the network FAILED: {e:#}"));
                }
            }
            Undo::Nothing => {}
        }
        did
    }
}

/// For each host, the hosts it must not hear: those outside its group, except across the bridge.
pub fn grudge(groups: &[Vec<String>], bridge: Option<&String>) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        for x in g {
            let others: BTreeSet<String> = groups
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, h)| h.iter().cloned())
                .collect();
            out.push((x.clone(), others));
        }
    }
    if let Some(b) = bridge {
        out.push((b.clone(), BTreeSet::new()));
    }
    out
}

fn describe(groups: &[Vec<String>], bridge: Option<&String>) -> String {
    let sides: Vec<String> = groups.iter().map(|g| g.join(" ")).collect();
    match bridge {
        Some(b) => format!("{} <-> {b} <-> {}", sides[0], sides[1]),
        None => sides.join(" | "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_and_expand() {
        assert!(parse("none").unwrap().is_empty());
        assert_eq!(parse("all").unwrap().len(), ALL.len());
        assert_eq!(
            parse("kill,pause").unwrap(),
            vec![Fault::Kill, Fault::KillLeader, Fault::Pause, Fault::PauseLeader]
        );
        assert_eq!(parse("isolate-leader").unwrap(), vec![Fault::IsolateLeader]);
        assert_eq!(parse("power").unwrap(), POWER.to_vec());
        assert_eq!(parse("power-loss-all").unwrap(), vec![Fault::PowerLossAll]);
        assert!(parse("power").unwrap().iter().all(|f| f.needs_lazy_disks()));
        assert!(!parse("kill").unwrap().iter().any(|f| f.needs_lazy_disks()));
        assert!(parse("bogus").is_err());
    }

    #[test]
    fn bridge_hears_both_sides_and_sides_do_not_hear_each_other() {
        let g = vec![vec!["m1".to_string(), "e1".into()], vec!["m3".to_string()]];
        let b = "m2".to_string();
        let gr = grudge(&g, Some(&b));
        let of = |n: &str| gr.iter().find(|(x, _)| x == n).unwrap().1.clone();
        assert_eq!(of("m1"), BTreeSet::from(["m3".to_string()]));
        assert_eq!(of("m3"), BTreeSet::from(["m1".to_string(), "e1".to_string()]));
        assert!(of("m2").is_empty());
    }
}
