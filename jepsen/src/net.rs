//! The test network: one network namespace per host on a Linux bridge, and firewall rules inside
//! the hosts' namespaces for partitions and packet loss.
//!
//! Layout (addresses 10.77.0.x/24):
//!
//! ```text
//!  root namespace: the runner (clients, nemesis), 10.77.0.1 on `triad-jh0`
//!        │ veth
//!  namespace triad-j-sw: bridge br0 ── port `hN` ── veth ── namespace triad-j-<host>: eth0 10.77.0.x
//! ```
//!
//! The bridge lives in its own namespace (`triad-j-sw`), not in the root one: the root namespace
//! of a machine running docker has `FORWARD` policy `DROP`, and with `br_netfilter` loaded bridged
//! frames go through it. A fresh namespace has an empty ruleset, so the switch forwards everything
//! and the host's firewall is never touched.
//!
//! Faults are rules in each host's own namespace (table `inet triad_jepsen`, chain `input`): a
//! partition drops what a host receives from the hosts it must not hear; loss drops a percentage
//! of what it receives from the other hosts. The runner's address is never filtered: clients
//! reach every master, as Jepsen's control node does. nftables is used when present, iptables
//! otherwise.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Every namespace and link this suite creates starts with this prefix (the startup sweep removes
/// anything matching it).
pub const PREFIX: &str = "triad-j";
pub const SWITCH_NS: &str = "triad-j-sw";
/// The runner's end of its veth, in the root namespace (<= 15 chars).
pub const HOST_LINK: &str = "triad-jh0";
pub const SUBNET: &str = "10.77.0";
pub const RUNNER_IP: &str = "10.77.0.1";

/// Runs a command, failing with its stderr.
pub fn run(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with `input` on stdin.
fn run_stdin(prog: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {prog} {}", args.join(" ")))?;
    child.stdin.take().expect("piped").write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}\ninput:\n{input}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// Namespaces that currently exist.
pub fn list_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Pids of every process in namespace `ns`.
pub fn ns_pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILLs every process in `ns` (SIGCONT too, so stopped ones die at once).
pub fn kill_ns_processes(ns: &str) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for pid in ns_pids(ns) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
    }
}

/// Removes every `triad-j*` namespace (killing what runs in it) and the runner's link: what a
/// crashed earlier run may have left. Bounded: each namespace gets a few kill rounds.
pub fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in list_namespaces().into_iter().filter(|n| n.starts_with(PREFIX)) {
        for _ in 0..50 {
            kill_ns_processes(&ns);
            if ns_pids(&ns).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = ip(&["netns", "del", &ns]);
        removed.push(ns);
    }
    if ip(&["link", "show", HOST_LINK]).is_ok() {
        let _ = ip(&["link", "del", HOST_LINK]);
        removed.push(HOST_LINK.to_string());
    }
    removed
}

/// Which firewall tool builds the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firewall {
    Nft,
    Iptables,
}

/// A host on the test network.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: String,
}

pub struct Net {
    pub firewall: Firewall,
    pub hosts: Vec<Host>,
}

impl Net {
    /// Creates the switch, the runner's link and one namespace per host name, with addresses
    /// `10.77.0.<octet>`. The caller registers the namespaces for teardown first.
    pub fn create(hosts: &[(String, u8)]) -> anyhow::Result<Net> {
        ip(&["netns", "add", SWITCH_NS])?;
        ip(&["-n", SWITCH_NS, "link", "set", "lo", "up"])?;
        ip(&["-n", SWITCH_NS, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", SWITCH_NS, "link", "set", "br0", "up"])?;
        // Belt and braces: no netfilter on bridged frames inside the switch (ignored if unsupported).
        let _ = run(
            "ip",
            &["netns", "exec", SWITCH_NS, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"],
        );
        ip(&[
            "link", "add", HOST_LINK, "type", "veth", "peer", "name", "runner", "netns", SWITCH_NS,
        ])?;
        ip(&["-n", SWITCH_NS, "link", "set", "runner", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{RUNNER_IP}/24"), "dev", HOST_LINK])?;
        ip(&["link", "set", HOST_LINK, "up"])?;
        let mut out = Vec::new();
        for (name, octet) in hosts {
            let ns = format!("{PREFIX}-{name}");
            let addr = format!("{SUBNET}.{octet}");
            let port = format!("p-{name}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                SWITCH_NS,
            ])?;
            ip(&["-n", SWITCH_NS, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            out.push(Host { name: name.clone(), ns, ip: addr });
        }
        let firewall = detect_firewall(&out[0].ns)?;
        let net = Net { firewall, hosts: out };
        net.heal()?;
        Ok(net)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Installs on each host a rule set dropping what it receives from `drop_from[host]` (host
    /// names), plus `loss` percent of everything from the other hosts. Replaces earlier rules.
    pub fn apply(
        &self,
        drop_from: &[(String, BTreeSet<String>)],
        loss: Option<u32>,
    ) -> anyhow::Result<()> {
        // One `nft`/`iptables` per host, all hosts at once: the fault starts (and heals) everywhere
        // within a few milliseconds.
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .hosts
                .iter()
                .map(|h| {
                    let ips: Vec<String> = drop_from
                        .iter()
                        .find(|(n, _)| *n == h.name)
                        .map(|(_, set)| set.iter().map(|n| self.host(n).ip.clone()).collect())
                        .unwrap_or_default();
                    let others: Vec<String> = self
                        .hosts
                        .iter()
                        .filter(|o| o.name != h.name)
                        .map(|o| o.ip.clone())
                        .collect();
                    scope.spawn(move || self.apply_host(h, &ips, loss.map(|l| (l, others))))
                })
                .collect();
            handles.into_iter().try_for_each(|j| {
                j.join().unwrap_or_else(|_| Err(anyhow::anyhow!("firewall thread panicked")))
            })
        })
    }

    fn apply_host(
        &self,
        h: &Host,
        drop_ips: &[String],
        loss: Option<(u32, Vec<String>)>,
    ) -> anyhow::Result<()> {
        match self.firewall {
            Firewall::Nft => {
                let mut s = String::from(
                    "table inet triad_jepsen {\n chain input { type filter hook input priority 0; policy accept; }\n}\nflush chain inet triad_jepsen input\n",
                );
                if !drop_ips.is_empty() {
                    s += &format!(
                        "add rule inet triad_jepsen input ip saddr {{ {} }} drop\n",
                        drop_ips.join(", ")
                    );
                }
                if let Some((pct, others)) = &loss {
                    if !others.is_empty() && *pct > 0 {
                        s += &format!(
                            "add rule inet triad_jepsen input ip saddr {{ {} }} numgen random mod 100 < {pct} drop\n",
                            others.join(", ")
                        );
                    }
                }
                run_stdin("ip", &["netns", "exec", &h.ns, "nft", "-f", "-"], &s)
            }
            Firewall::Iptables => {
                let ipt = |args: &[&str]| -> anyhow::Result<String> {
                    let mut a = vec!["netns", "exec", h.ns.as_str(), "iptables", "-w"];
                    a.extend_from_slice(args);
                    run("ip", &a)
                };
                ipt(&["-F", "INPUT"])?;
                for d in drop_ips {
                    ipt(&["-A", "INPUT", "-s", d, "-j", "DROP"])?;
                }
                if let Some((pct, others)) = &loss {
                    let p = format!("{:.2}", *pct as f64 / 100.0);
                    for o in others {
                        ipt(&[
                            "-A",
                            "INPUT",
                            "-s",
                            o,
                            "-m",
                            "statistic",
                            "--mode",
                            "random",
                            "--probability",
                            &p,
                            "-j",
                            "DROP",
                        ])?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Removes every fault rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.apply(&[], None)
    }
}

fn detect_firewall(probe_ns: &str) -> anyhow::Result<Firewall> {
    let nft_ok = run("ip", &["netns", "exec", probe_ns, "nft", "list", "ruleset"]).is_ok();
    if nft_ok {
        return Ok(Firewall::Nft);
    }
    if run("ip", &["netns", "exec", probe_ns, "iptables", "-w", "-L", "INPUT", "-n"]).is_ok() {
        return Ok(Firewall::Iptables);
    }
    bail!(
        "neither nft nor iptables works inside a network namespace (install nftables or iptables)"
    )
}

/// Deletes the namespaces and the runner's link (after their processes are gone).
pub fn destroy(namespaces: &[String]) {
    for ns in namespaces {
        for _ in 0..50 {
            kill_ns_processes(ns);
            if ns_pids(ns).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = ip(&["netns", "del", ns]);
    }
    if ip(&["link", "show", HOST_LINK]).is_ok() {
        let _ = ip(&["link", "del", HOST_LINK]);
    }
}
