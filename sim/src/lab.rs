//! The network: one bridge, one namespace per peer joined to it by a veth
//! pair whose namespace end is shaped by `tc netem` (rate and delay on its
//! egress, i.e. the peer's upload). Every name carries our process id, so
//! runs side by side do not meet, and leftovers of a crashed run (its
//! process gone) are removed at the start of the next.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::peer::PeerProc;

/// Namespace names: `lsim-PID-INDEX`.
const NS_PREFIX: &str = "lsim-";
/// Interface names: `lsmPIDb` (the bridge) and `lsmPIDhINDEX` (the host end
/// of a veth), within the 15 characters Linux allows.
const IF_PREFIX: &str = "lsm";
/// The subnet of the bridge: a /16, so up to 65,000 peers fit.
const SUBNET: [u8; 2] = [10, 77];
/// The UDP port every peer listens on (each has its own namespace).
pub const PORT: u16 = 27600;

/// How every link's upload is shaped (`tc netem` on the namespace's end).
#[derive(Debug, Clone)]
pub struct Shape {
    /// A tc rate, e.g. `1gbit`, `100mbit`.
    pub rate: String,
    /// A tc time, e.g. `0.2ms` (one way: each end delays what it sends).
    pub delay: String,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            rate: "1gbit".into(),
            delay: "0.2ms".into(),
        }
    }
}

/// Whether this kernel has `netem` (rate and delay); without it links get
/// `tbf` (rate only) and the delay is not applied. Asked once per lab.
static NETEM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Shape the egress of `eth0` in `ns`: `netem` (delay and rate) where the
/// kernel has it, else `tbf` at the rate, with a burst of 10 ms of data (at
/// least 16 KiB) and a queue of 100 ms, like a switch port.
fn shape_link(ns: &str, shape: &Shape) -> anyhow::Result<()> {
    let netem = *NETEM.get_or_init(|| {
        let ok = run(
            "tc",
            &[
                "-n", ns, "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "0ms",
            ],
        )
        .is_ok();
        if ok {
            let _ = run("tc", &["-n", ns, "qdisc", "del", "dev", "eth0", "root"]);
        } else {
            eprintln!(
                "lanspread-sim: this kernel has no netem qdisc: links are shaped by tbf \
                 (rate only) and --delay is not applied"
            );
        }
        ok
    });
    if netem {
        run(
            "tc",
            &[
                "-n",
                ns,
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                &shape.delay,
                "rate",
                &shape.rate,
                "limit",
                "10000",
            ],
        )?;
    } else {
        let bits = crate::stats::parse_rate(&shape.rate)?;
        let burst = ((bits / 8.0 / 100.0) as u64).max(16 << 10);
        run(
            "tc",
            &[
                "-n",
                ns,
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                &shape.rate,
                "burst",
                &burst.to_string(),
                "latency",
                "100ms",
            ],
        )?;
    }
    Ok(())
}

/// Whether links carry the delay (false when the kernel lacks `netem`).
pub fn delay_applied() -> bool {
    NETEM.get().copied().unwrap_or(true)
}

/// One peer's place: its namespace, its link, its address and its folder.
#[derive(Debug, Clone)]
pub struct Node {
    pub index: usize,
    pub ns: String,
    /// The host end of its veth: its counters are the peer's traffic seen
    /// from the bridge (rx = what the peer sent, tx = what it received).
    pub host_if: String,
    pub ip: Ipv4Addr,
    /// `games/` and `data/` live here.
    pub dir: PathBuf,
}

impl Node {
    pub fn games(&self) -> PathBuf {
        self.dir.join("games")
    }
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn addr(&self) -> String {
        format!("{}:{PORT}", self.ip)
    }
}

/// Bytes and packets through a peer's link, from the peer's side.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
}

/// The whole network and the processes in it: everything is removed on
/// drop (processes killed first), whatever the exit path.
pub struct Lab {
    pub nodes: Vec<Node>,
    /// One slot per node; a scenario puts its peer processes here so they
    /// die before their namespaces go.
    pub procs: Vec<Option<PeerProc>>,
    bridge: String,
    root: PathBuf,
    tag: u32,
    /// Kernel settings raised for this lab, with their values before.
    raised: Vec<(PathBuf, String)>,
}

/// The kernel's neighbour (ARP and NDP) tables are shared by every network
/// namespace: with the defaults (`gc_thresh3` = 1024) a lab of N peers,
/// each resolving the others, overflows them from about 32 peers on
/// ("neighbor table overflow" in the kernel log) and peers cannot reach
/// each other. Raise them for the lab's size; `Lab` puts them back.
fn raise_neighbour_tables(n: usize) -> Vec<(PathBuf, String)> {
    let needed = 4 * n * n + 1024;
    let mut raised = Vec::new();
    for family in ["ipv4", "ipv6"] {
        for (knob, share) in [("gc_thresh1", 4), ("gc_thresh2", 2), ("gc_thresh3", 1)] {
            let path = PathBuf::from(format!("/proc/sys/net/{family}/neigh/default/{knob}"));
            let Ok(before) = std::fs::read_to_string(&path) else {
                continue;
            };
            let want = needed / share;
            if before.trim().parse::<usize>().is_ok_and(|v| v >= want)
                || std::fs::write(&path, want.to_string()).is_err()
            {
                continue;
            }
            raised.push((path, before.trim().to_owned()));
        }
    }
    raised
}

fn ip_of(index: usize) -> Ipv4Addr {
    let host = index + 1;
    assert!(host < 65_535, "too many peers for a /16");
    Ipv4Addr::new(SUBNET[0], SUBNET[1], (host >> 8) as u8, (host & 0xff) as u8)
}

/// Run a command to its end; its stderr in the error.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kill every process in namespace `ns` and delete it.
fn remove_ns(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// Remove namespaces, links and folders of runs whose process is gone (or
/// of `own`, this process, before it builds a new lab).
pub fn clean_leftovers(own: Option<u32>) {
    let stale = |pid: u32| Some(pid) == own || !alive(pid);
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            if let Some(pid) = rest.split('-').next().and_then(|p| p.parse().ok()) {
                if stale(pid) {
                    remove_ns(name);
                }
            }
        }
    }
    if let Ok(list) = run("ip", &["-o", "link", "show"]) {
        for line in list.lines() {
            // "12: lsm123h4@if11: <...>"
            let Some(name) = line.split(':').nth(1).map(|n| n.trim()) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            let Some(rest) = name.strip_prefix(IF_PREFIX) else {
                continue;
            };
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(pid) = digits.parse() {
                if stale(pid) {
                    let _ = run("ip", &["link", "del", name]);
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(NS_PREFIX).and_then(|p| p.parse().ok()) {
                if stale(pid) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

/// Namespaces of this process still present (none after a lab is dropped).
pub fn own_namespaces() -> Vec<String> {
    let prefix = format!("{NS_PREFIX}{}-", std::process::id());
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

impl Lab {
    /// Build `n` namespaces on a fresh bridge, links shaped by `shape`.
    pub fn new(n: usize, shape: &Shape) -> anyhow::Result<Self> {
        let tag = std::process::id();
        clean_leftovers(Some(tag));
        let root = std::env::temp_dir().join(format!("{NS_PREFIX}{tag}"));
        let bridge = format!("{IF_PREFIX}{tag}b");
        // The guard exists before the first thing it removes.
        let mut lab = Self {
            nodes: Vec::with_capacity(n),
            procs: Vec::new(),
            bridge: bridge.clone(),
            root: root.clone(),
            tag,
            raised: raise_neighbour_tables(n),
        };
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        // No multicast snooping: mDNS reaches every port, as on a dumb switch.
        run(
            "ip",
            &[
                "link",
                "add",
                &bridge,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for index in 0..n {
            crate::check_stop()?;
            let node = lab.add_node(index, shape)?;
            lab.nodes.push(node);
            lab.procs.push(None);
        }
        Ok(lab)
    }

    fn add_node(&self, index: usize, shape: &Shape) -> anyhow::Result<Node> {
        let ns = format!("{NS_PREFIX}{}-{index}", self.tag);
        let host_if = format!("{IF_PREFIX}{}h{index}", self.tag);
        anyhow::ensure!(host_if.len() <= 15, "interface name {host_if} too long");
        let ip = ip_of(index);
        let dir = self.root.join(format!("p{index}"));
        std::fs::create_dir_all(dir.join("games"))?;
        std::fs::create_dir_all(dir.join("data"))?;
        run("ip", &["netns", "add", &ns])?;
        let inner = format!("{host_if}x");
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ],
        )?;
        run("ip", &["link", "set", &host_if, "master", &self.bridge])?;
        run("ip", &["link", "set", &host_if, "up"])?;
        run("ip", &["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/16"), "dev", "eth0"],
        )?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        shape_link(&ns, shape)?;
        Ok(Node {
            index,
            ns,
            host_if,
            ip,
            dir,
        })
    }

    /// The link counters of node `index`, from the peer's side.
    pub fn counters(&self, index: usize) -> Counters {
        let base = format!("/sys/class/net/{}/statistics", self.nodes[index].host_if);
        let read = |name: &str| -> u64 {
            std::fs::read_to_string(format!("{base}/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        // The host end receives what the peer sends.
        Counters {
            tx_bytes: read("rx_bytes"),
            rx_bytes: read("tx_bytes"),
            tx_packets: read("rx_packets"),
            rx_packets: read("tx_packets"),
        }
    }

    /// Kill every process first, then every namespace, link and folder.
    fn teardown(&mut self) {
        for slot in &mut self.procs {
            if let Some(mut p) = slot.take() {
                p.kill();
            }
        }
        for node in &self.nodes {
            remove_ns(&node.ns);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.root);
        // Anything half-made (a failure between `netns add` and the push).
        clean_leftovers(Some(self.tag));
        // Thresholds last: after the entries of the lab are gone.
        for (path, before) in self.raised.drain(..).rev() {
            let _ = std::fs::write(&path, before);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}
