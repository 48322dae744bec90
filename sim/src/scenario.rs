//! The four scenarios. Each builds its own [`Lab`], drives the peers through
//! their CLI, reads their events and link counters, and returns a report
//! whose `Display` is one markdown table. Every wait is bounded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::lab::{Counters, Lab, Shape};
use crate::peer::{OnCompleted, PeerProc};
use crate::stats::{self, bytes, mean, percentile, secs, since, Table};

/// How long a `serve` may take to bind and say so.
const SERVING_WITHIN: Duration = Duration::from_secs(60);
/// How often the waits look at the peers' views.
const POLL: Duration = Duration::from_millis(20);

/// `serve` arguments for node `i`: every peer but the first is told only
/// the first one's address; mDNS stays on.
fn serve_args(lab: &Lab, i: usize) -> Vec<String> {
    let node = &lab.nodes[i];
    let mut args = vec![
        "serve".into(),
        "--games".into(),
        node.games().display().to_string(),
        "--data".into(),
        node.data().display().to_string(),
        "--name".into(),
        format!("p{i}"),
        "--listen".into(),
        format!("0.0.0.0:{}", crate::lab::PORT),
    ];
    if i > 0 {
        args.extend(["--peer".into(), lab.nodes[0].addr()]);
    }
    args
}

/// Start `serve` on every node and wait until each is serving; their peer
/// ids, by node.
fn start_all(lab: &mut Lab, bin: &Path) -> anyhow::Result<Vec<String>> {
    for i in 0..lab.nodes.len() {
        crate::check_stop()?;
        let args = serve_args(lab, i);
        lab.procs[i] = Some(PeerProc::spawn(bin, &lab.nodes[i].ns, &args, None)?);
    }
    let mut ids = Vec::new();
    for p in lab.procs.iter().flatten() {
        ids.push(p.wait_serving(SERVING_WITHIN)?);
    }
    Ok(ids)
}

/// Wait until every running peer sees all the other `n − 1`, at most
/// `within`: how long it took, or `None` and the fewest seen.
fn wait_mesh(lab: &Lab, within: Duration) -> anyhow::Result<(Option<Duration>, usize)> {
    let start = Instant::now();
    let want = lab.procs.iter().flatten().count().saturating_sub(1);
    loop {
        crate::check_stop()?;
        let fewest = lab
            .procs
            .iter()
            .flatten()
            .map(|p| p.view().peers.len())
            .min()
            .unwrap_or(0);
        if fewest >= want {
            return Ok((Some(start.elapsed()), fewest));
        }
        if start.elapsed() >= within {
            return Ok((None, fewest));
        }
        std::thread::sleep(POLL * 5);
    }
}

/// Said under a table when the links carry no delay (no netem).
fn delay_note() -> &'static str {
    if crate::lab::delay_applied() {
        ""
    } else {
        " Links shaped by tbf (rate only): this kernel has no netem, so no delay was added."
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// idle

/// One row of the idle table: per-peer figures over the window.
#[derive(Debug, Clone)]
pub struct IdleRow {
    pub n: usize,
    /// How long until every peer saw every other; `None` if not within the
    /// warm-up bound.
    pub warmup: Option<Duration>,
    pub fewest_seen: usize,
    pub tx_bps: f64,
    pub rx_bps: f64,
    pub max_bps: f64,
    pub tx_pps: f64,
    pub rx_pps: f64,
    /// Percent of one core.
    pub cpu: f64,
    pub cpu_max: f64,
    pub peers_mean: f64,
    pub peers_min: usize,
    /// Distinct unicast UDP destinations per peer over the window (wire).
    pub talks_mean: f64,
    pub talks_max: usize,
    pub rss_mean: f64,
    pub rss_max: f64,
    /// The 1-minute load average at the end of the window.
    pub load: String,
}

pub struct IdleReport {
    pub settle: Duration,
    pub window: Duration,
    pub rows: Vec<IdleRow>,
}

impl IdleReport {
    pub fn converged(&self) -> bool {
        self.rows.iter().all(|r| r.warmup.is_some())
    }
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut t = Table::new(&[
            "idle peers",
            "bytes/s per peer (sent + received)",
            "sent / received",
            "max peer",
            "packets/s per peer (sent + received)",
            "CPU per peer (mean / max)",
            "peers seen (mean / min)",
            "sends unicast to (mean / max)",
            "RSS (mean / max)",
            "warm-up",
            "load",
        ]);
        for r in &self.rows {
            t.row(vec![
                r.n.to_string(),
                bytes(r.tx_bps + r.rx_bps),
                format!("{} / {}", bytes(r.tx_bps), bytes(r.rx_bps)),
                bytes(r.max_bps),
                format!("{:.0}", r.tx_pps + r.rx_pps),
                format!("{:.2} % / {:.2} %", r.cpu, r.cpu_max),
                format!("{:.1} / {}", r.peers_mean, r.peers_min),
                format!("{:.1} / {}", r.talks_mean, r.talks_max),
                format!("{} / {}", bytes(r.rss_mean), bytes(r.rss_max)),
                r.warmup.map_or_else(
                    || format!("not all within the bound (fewest saw {})", r.fewest_seen),
                    stats::dur,
                ),
                r.load.clone(),
            ]);
        }
        write!(f, "{t}")?;
        writeln!(
            f,
            "\nOver a {:.0} s window, {:.0} s after warm-up; bytes and packets from each peer's veth \
             counters; peers seen = discovered minus lost, from its events; sends unicast \
             to = distinct addresses it sent UDP to in the window (its working connections), \
             from a packet capture on the bridge ports.{}",
            self.window.as_secs_f64(),
            self.settle.as_secs_f64(),
            delay_note()
        )
    }
}

/// `n` idle peers with no games: warm up (every peer sees the others, at
/// most `warmup`), let the start-up settle for `settle` (first dials,
/// mDNS queries backing off), then measure over `window`.
pub fn idle(
    bin: &Path,
    sizes: &[usize],
    shape: &Shape,
    warmup: Duration,
    settle: Duration,
    window: Duration,
) -> anyhow::Result<IdleReport> {
    let mut rows = Vec::new();
    for &n in sizes {
        rows.push(idle_one(bin, n, shape, warmup, settle, window)?);
    }
    Ok(IdleReport {
        settle,
        window,
        rows,
    })
}

fn idle_one(
    bin: &Path,
    n: usize,
    shape: &Shape,
    warmup: Duration,
    settle: Duration,
    window: Duration,
) -> anyhow::Result<IdleRow> {
    let mut lab = Lab::new(n, shape)?;
    start_all(&mut lab, bin)?;
    let (took, fewest_seen) = wait_mesh(&lab, warmup)?;
    crate::sleep(settle)?;
    let procs: Vec<&PeerProc> = lab.procs.iter().flatten().collect();
    let before: Vec<(Counters, Duration)> = (0..n)
        .map(|i| (lab.counters(i), procs[i].cpu_time()))
        .collect();
    let host_ifs: Vec<String> = lab.nodes.iter().map(|n| n.host_if.clone()).collect();
    let capture = crate::wire::Capture::start(&host_ifs)?;
    let t0 = Instant::now();
    crate::sleep(window)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let partners = capture.finish();
    let mut tx = Vec::new();
    let mut rx = Vec::new();
    let mut txp = Vec::new();
    let mut rxp = Vec::new();
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    let mut peers = Vec::new();
    let mut talks = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let (c0, cpu0) = before[i];
        let c1 = lab.counters(i);
        tx.push((c1.tx_bytes - c0.tx_bytes) as f64 / elapsed);
        rx.push((c1.rx_bytes - c0.rx_bytes) as f64 / elapsed);
        txp.push((c1.tx_packets - c0.tx_packets) as f64 / elapsed);
        rxp.push((c1.rx_packets - c0.rx_packets) as f64 / elapsed);
        cpu.push((p.cpu_time() - cpu0).as_secs_f64() / elapsed * 100.0);
        rss.push(p.rss() as f64);
        peers.push(p.view().peers.len() as f64);
        talks.push(partners.get(&i).map_or(0, |s| s.len()) as f64);
    }
    let sums: Vec<f64> = tx.iter().zip(&rx).map(|(a, b)| a + b).collect();
    Ok(IdleRow {
        n,
        warmup: took,
        fewest_seen,
        tx_bps: mean(&tx),
        rx_bps: mean(&rx),
        max_bps: stats::max(&sums),
        tx_pps: mean(&txp),
        rx_pps: mean(&rxp),
        cpu: mean(&cpu),
        cpu_max: stats::max(&cpu),
        peers_mean: mean(&peers),
        peers_min: peers.iter().copied().fold(f64::MAX, f64::min) as usize,
        talks_mean: mean(&talks),
        talks_max: stats::max(&talks) as usize,
        rss_mean: mean(&rss),
        rss_max: stats::max(&rss),
        load: load_average(),
    })
}

// ---------------------------------------------------------------------------
// convergence

/// One measured change: per observing peer, seconds until it saw it.
#[derive(Debug, Clone)]
pub struct ConvergenceRow {
    pub what: String,
    pub times: Vec<f64>,
    /// Peers that had to see it.
    pub of: usize,
}

pub struct ConvergenceReport {
    pub n: usize,
    pub warmup: Option<Duration>,
    pub bound: Duration,
    pub rows: Vec<ConvergenceRow>,
}

impl ConvergenceReport {
    /// Every peer converged in warm-up and saw every change.
    pub fn complete(&self) -> bool {
        self.warmup.is_some() && self.rows.iter().all(|r| r.times.len() == r.of)
    }
}

impl std::fmt::Display for ConvergenceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut t = Table::new(&["N", "change", "peers that saw it", "p50", "p99", "max"]);
        for r in &self.rows {
            t.row(vec![
                self.n.to_string(),
                r.what.clone(),
                format!("{} / {}", r.times.len(), r.of),
                secs(percentile(&r.times, 50.0)),
                secs(percentile(&r.times, 99.0)),
                secs(percentile(&r.times, 100.0)),
            ]);
        }
        write!(f, "{t}")?;
        writeln!(
            f,
            "\nWarm-up (every peer sees the others): {}; each change waited for at most {:.0} s.",
            self.warmup
                .map_or_else(|| "not within the bound".into(), stats::dur),
            self.bound.as_secs_f64()
        )
    }
}

/// Write a game of `files` files totalling `size` bytes of pseudo-random
/// data (a keyed BLAKE3 stream, so runs are alike) into `games/name`,
/// built aside and renamed in so it appears at once.
pub fn write_game(games: &Path, name: &str, size: u64, files: usize) -> anyhow::Result<()> {
    let aside = games
        .parent()
        .context("games folder has no parent")?
        .join(format!("building-{name}"));
    std::fs::create_dir_all(&aside)?;
    let mut key = [0u8; 32];
    key[..name.len().min(32)].copy_from_slice(&name.as_bytes()[..name.len().min(32)]);
    let mut stream = blake3::Hasher::new_keyed(&key).finalize_xof();
    let files = files.max(1);
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    for k in 0..files {
        let this = if k + 1 == files {
            left
        } else {
            size / files as u64
        };
        left -= this;
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(aside.join(format!("data-{k}.bin")))?);
        let mut todo = this;
        while todo > 0 {
            let chunk = todo.min(buf.len() as u64) as usize;
            stream.fill(&mut buf[..chunk]);
            std::io::Write::write_all(&mut out, &buf[..chunk])?;
            todo -= chunk as u64;
        }
        std::io::Write::flush(&mut out)?;
    }
    std::fs::rename(&aside, games.join(name))
        .with_context(|| format!("cannot move {} into {}", aside.display(), games.display()))
}

/// Wait until `pick` gives a time for every peer in `watchers`, at most
/// `bound`; the seconds from `t0` for those that did.
fn wait_all(
    lab: &Lab,
    watchers: &[usize],
    t0: Instant,
    bound: Duration,
    pick: impl Fn(&crate::peer::View) -> Option<Instant>,
) -> anyhow::Result<Vec<f64>> {
    loop {
        crate::check_stop()?;
        let seen: Vec<f64> = watchers
            .iter()
            .filter_map(|&i| lab.procs[i].as_ref())
            .filter_map(|p| pick(&p.view()))
            .filter(|&t| t >= t0)
            .map(|t| since(t, t0))
            .collect();
        if seen.len() == watchers.len() || t0.elapsed() >= bound {
            return Ok(seen);
        }
        std::thread::sleep(POLL);
    }
}

/// `n` peers converged; a game added on one: until every catalog lists it;
/// that peer SIGKILLed: until every catalog drops it and every peer reports
/// it lost; the same with a clean stop (SIGTERM) of another.
pub fn convergence(
    bin: &Path,
    n: usize,
    shape: &Shape,
    warmup: Duration,
    bound: Duration,
) -> anyhow::Result<ConvergenceReport> {
    anyhow::ensure!(n >= 4, "convergence needs at least 4 peers");
    let mut lab = Lab::new(n, shape)?;
    let ids = start_all(&mut lab, bin)?;
    let (took, _) = wait_mesh(&lab, warmup)?;
    let mut rows = Vec::new();
    // Peer 0 is everyone's first address: the changes happen elsewhere.
    for (victim, how) in [(1usize, "SIGKILL"), (2, "SIGTERM")] {
        let game = format!("sim-game-{victim}");
        // The peers still running, but the one that changes.
        let watchers: Vec<usize> = (0..n)
            .filter(|&i| i != victim && lab.procs[i].is_some())
            .collect();
        let t0 = Instant::now();
        write_game(&lab.nodes[victim].games(), &game, 256 << 10, 3)?;
        // Its owner lists it once indexed: the part of the time that is not
        // the network's.
        let times = wait_all(&lab, &[victim], t0, bound, |v| v.listed.get(&game).copied())?;
        rows.push(ConvergenceRow {
            what: "game added on a peer: listed by that peer".into(),
            times,
            of: 1,
        });
        let times = wait_all(&lab, &watchers, t0, bound, |v| v.listed.get(&game).copied())?;
        rows.push(ConvergenceRow {
            what: "game added on a peer: listed by every other".into(),
            times,
            of: watchers.len(),
        });
        let t0 = Instant::now();
        let proc = lab.procs[victim].as_mut().expect("started");
        match how {
            "SIGKILL" => proc.kill(),
            _ => proc.stop(Duration::from_secs(10)),
        }
        let label = if how == "SIGKILL" {
            "peer killed (SIGKILL)"
        } else {
            "peer stopped (SIGTERM)"
        };
        let times = wait_all(&lab, &watchers, t0, bound, |v| {
            (!v.listed.contains_key(&game))
                .then(|| v.unlisted_at.get(&game).copied())
                .flatten()
        })?;
        rows.push(ConvergenceRow {
            what: format!("{label}: its game dropped"),
            times,
            of: watchers.len(),
        });
        let id = ids[victim].clone();
        let times = wait_all(&lab, &watchers, t0, bound, |v| {
            (!v.peers.contains(&id))
                .then(|| v.lost_at.get(&id).copied())
                .flatten()
        })?;
        rows.push(ConvergenceRow {
            what: format!("{label}: reported lost"),
            times,
            of: watchers.len(),
        });
        lab.procs[victim] = None;
    }
    Ok(ConvergenceReport {
        n,
        warmup: took,
        bound,
        rows,
    })
}

// ---------------------------------------------------------------------------
// rush and churn

/// The game the rush moves.
const RUSH_GAME: &str = "sim-rush";

#[derive(Debug, Clone)]
pub struct RushConfig {
    /// Peers in all: one seed and `n − 1` downloaders.
    pub n: usize,
    /// F: the game's size in bytes.
    pub size: u64,
    /// How many files it is.
    pub files: usize,
    /// R (a tc rate) and the delay of every link.
    pub shape: Shape,
    /// Bound on the whole download phase; `None`: 60 s + 2·(n−1)·F/R.
    pub timeout: Option<Duration>,
    /// Bound on the wait, before the game appears, for every downloader to
    /// find the seed.
    pub warmup: Duration,
}

impl RushConfig {
    fn rate_bps(&self) -> anyhow::Result<f64> {
        stats::parse_rate(&self.shape.rate)
    }
    /// F/R in seconds.
    fn ideal(&self) -> anyhow::Result<f64> {
        Ok(self.size as f64 * 8.0 / self.rate_bps()?)
    }
}

pub struct RushReport {
    pub config: RushConfig,
    pub churn: bool,
    /// Seconds from the game appearing on the seed to each downloader's
    /// completion.
    pub finish: Vec<f64>,
    /// Downloaders whose files match the seed's.
    pub verified: usize,
    /// Downloaders whose files differ (or are missing) after completing.
    pub corrupt: Vec<usize>,
    /// Seed's bytes sent between the start and the first completion.
    pub seed_before_second_copy: Option<u64>,
    /// Highest upload per peer over a [`CAP_WINDOW`], bits per second.
    pub max_upload_bps: f64,
    /// Nodes whose upload over some [`CAP_WINDOW`] exceeded R by more than 5 %.
    pub over_cap: Vec<usize>,
    /// CPU seconds of every peer process from the downloaders' start to the
    /// end (restarted processes: their last run only).
    pub peers_cpu: f64,
    /// Per [`CAP_WINDOW`] from the start: the share of the party's upload
    /// capacity (N × R) used, and of the seed's (R).
    pub upload_used: Vec<(f64, f64)>,
    /// Per [`CAP_WINDOW`] from the start: the downloaders' progress (share
    /// of F verified; a finished one counts whole), least, median and most.
    pub progress: Vec<[f64; 3]>,
    /// Share of the machine's CPU time that was busy over the same span:
    /// near 1, the lab was bound by the machine, not by its links.
    pub machine_busy: Option<f64>,
    /// Processes killed (seed, downloaders), and downloaders started again
    /// after they gave up on their own.
    pub killed_seed: usize,
    pub killed_downloaders: usize,
    pub reruns: usize,
    pub failures: Vec<String>,
}

impl RushReport {
    /// Every downloader finished and its copy matched.
    pub fn complete(&self) -> bool {
        self.finish.len() == self.config.n - 1
            && self.verified == self.config.n - 1
            && self.corrupt.is_empty()
    }
}

impl std::fmt::Display for RushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        let ideal = c.ideal().unwrap_or(f64::NAN);
        let ratio = |s: Option<f64>| {
            s.map_or_else(
                || "–".into(),
                |s| format!("{s:.1} s ({:.2} × F/R)", s / ideal),
            )
        };
        let copy = |b: Option<u64>| {
            b.map_or_else(
                || "–".into(),
                |b| format!("{} ({:.2} × F)", bytes(b as f64), b as f64 / c.size as f64),
            )
        };
        let mut head = vec![
            "N",
            "F",
            "R",
            "F/R",
            "finished / verified",
            "p50 finish",
            "last finish",
            "seed sent before a 2nd copy",
            "max 3-s upload of a peer",
            "peers over R",
            "peers' CPU-s per GB downloaded",
            "machine busy",
        ];
        if self.churn {
            head.extend(["killed (seed / downloaders)", "re-runs after giving up"]);
        }
        let mut t = Table::new(&head);
        let mut row = vec![
            c.n.to_string(),
            format!("{} MiB", c.size as f64 / f64::from(1u32 << 20)),
            c.shape.rate.clone(),
            format!("{ideal:.1} s"),
            format!("{} / {} of {}", self.finish.len(), self.verified, c.n - 1),
            ratio(percentile(&self.finish, 50.0)),
            ratio(percentile(&self.finish, 100.0)),
            copy(self.seed_before_second_copy),
            format!("{:.1} Mbit/s", self.max_upload_bps / 1e6),
            if self.over_cap.is_empty() {
                "none".into()
            } else {
                format!("{:?}", self.over_cap)
            },
            {
                let gb = (c.size * self.finish.len() as u64) as f64 / 1e9;
                if gb > 0.0 {
                    format!("{:.1}", self.peers_cpu / gb)
                } else {
                    "–".into()
                }
            },
            self.machine_busy
                .map_or_else(|| "–".into(), |b| format!("{:.0} %", b * 100.0)),
        ];
        if self.churn {
            row.extend([
                format!("{} / {}", self.killed_seed, self.killed_downloaders),
                self.reruns.to_string(),
            ]);
        }
        t.row(row);
        write!(f, "{t}")?;
        writeln!(
            f,
            "\nFinish times from the seed listing the game (the downloaders already running) to each one's downloadCompleted; \
             seed bytes from its veth counter at the first completion; every copy hashed \
             against the seed's.{}",
            delay_note()
        )?;
        let used = |pick: fn(&(f64, f64)) -> f64| {
            self.upload_used
                .iter()
                .map(|u| format!("{:.0}", pick(u) * 100.0))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(
            f,
            "\nUpload used, % per {} s from the start: party {}; seed {}",
            CAP_WINDOW.as_secs(),
            used(|u| u.0),
            used(|u| u.1)
        )?;
        let progress = self
            .progress
            .iter()
            .map(|p| p.map(|x| format!("{:.0}", x * 100.0)).join("/"))
            .collect::<Vec<_>>()
            .join(" ");
        writeln!(
            f,
            "
Downloaders' progress, % of F at each {} s, least/median/most: {progress}",
            CAP_WINDOW.as_secs()
        )?;
        for failure in &self.failures {
            writeln!(f, "\n{failure}")?;
        }
        if !self.corrupt.is_empty() {
            writeln!(f, "\nCORRUPT copies on nodes {:?}", self.corrupt)?;
        }
        Ok(())
    }
}

fn download_args(lab: &Lab, i: usize) -> Vec<String> {
    let node = &lab.nodes[i];
    vec![
        "download".into(),
        RUSH_GAME.into(),
        "--games".into(),
        node.games().display().to_string(),
        "--data".into(),
        node.data().display().to_string(),
        "--listen".into(),
        format!("0.0.0.0:{}", crate::lab::PORT),
        "--peer".into(),
        lab.nodes[0].addr(),
        "--wait".into(),
        "600".into(),
        "--seed".into(),
    ]
}

/// Every file under `dir` with its BLAKE3 hash, by relative path.
fn hash_tree(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, blake3::Hash>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else {
                let mut hasher = blake3::Hasher::new();
                hasher.update_reader(std::fs::File::open(&path)?)?;
                out.insert(path.strip_prefix(dir)?.to_path_buf(), hasher.finalize());
            }
        }
    }
    Ok(out)
}

enum Action {
    Kill(usize),
    Start(usize),
}

/// The rush with churn (see [`rush`]).
pub fn churn(bin: &Path, config: &RushConfig) -> anyhow::Result<RushReport> {
    rush(bin, config, true)
}

/// The window of the upload cap check: long enough that reading 2·N
/// counters on a loaded machine does not skew it.
const CAP_WINDOW: Duration = Duration::from_secs(3);

/// The machine's (busy, all) CPU time in ticks, from /proc/stat.
fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait
    // are not busy.
    let all: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((all - idle, all))
}

/// One seed and `n − 1` downloaders, running, that all start on the game
/// when it appears on the seed; with `churn`, the seed and a quarter of the
/// downloaders are SIGKILLed at 0.3·F/R and restarted (same `--data`),
/// another quarter at 0.6·F/R; a downloader that gives up on its own (every
/// source gone) is started again after a second.
pub fn rush(bin: &Path, config: &RushConfig, churn: bool) -> anyhow::Result<RushReport> {
    let n = config.n;
    anyhow::ensure!(n >= 2, "a rush needs a seed and a downloader");
    let rate = config.rate_bps()?;
    let ideal = config.ideal()?;
    let timeout = config
        .timeout
        .unwrap_or_else(|| Duration::from_secs_f64(60.0 + 2.0 * (n - 1) as f64 * ideal));
    let mut lab = Lab::new(n, &config.shape)?;
    let seed_args = serve_args(&lab, 0);
    lab.procs[0] = Some(PeerProc::spawn(bin, &lab.nodes[0].ns, &seed_args, None)?);
    let seed_id = lab.procs[0]
        .as_ref()
        .expect("just started")
        .wait_serving(SERVING_WITHIN)?;

    // The seed's bytes sent when the first downloader completes.
    let seed_counter = PathBuf::from(format!(
        "/sys/class/net/{}/statistics/rx_bytes",
        lab.nodes[0].host_if
    ));
    let first_copy: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
    let on_completed: OnCompleted = {
        let first_copy = first_copy.clone();
        let seed_counter = seed_counter.clone();
        Arc::new(move |_| {
            let mut first = first_copy.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = std::fs::read_to_string(&seed_counter)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
            }
        })
    };
    // The downloaders start first, like apps already running at the party,
    // and wait for the game: a rush is everyone asking for it at once, not
    // 31 programs starting and finding each other.
    for i in 1..n {
        let args = download_args(&lab, i);
        lab.procs[i] = Some(PeerProc::spawn(
            bin,
            &lab.nodes[i].ns,
            &args,
            Some(on_completed.clone()),
        )?);
    }
    let met_by = Instant::now() + config.warmup;
    while !(1..n).all(|i| {
        lab.procs[i]
            .as_ref()
            .is_some_and(|p| p.view().peers.contains(&seed_id))
    }) {
        crate::check_stop()?;
        for i in 1..n {
            let Some(p) = lab.procs[i].as_ref() else {
                continue;
            };
            let v = p.view();
            if v.ended {
                let said: Vec<String> = v.stderr_tail.iter().cloned().collect();
                bail!(
                    "downloader {i} ended before the game appeared: {}",
                    said.join(" | ")
                );
            }
        }
        if Instant::now() >= met_by {
            bail!(
                "not every downloader found the seed within {:?}",
                config.warmup
            );
        }
        std::thread::sleep(POLL);
    }
    // Then the game appears on the seed at once (`write_game` moves it in
    // whole), and the rush starts when the seed lists it.
    write_game(&lab.nodes[0].games(), RUSH_GAME, config.size, config.files)?;
    let seed = lab.procs[0].as_ref().expect("started");
    let indexed_by = Instant::now() + Duration::from_secs(120);
    while !seed.view().listed.contains_key(RUSH_GAME) {
        crate::check_stop()?;
        if Instant::now() >= indexed_by {
            bail!("the seed did not index {RUSH_GAME} within 120 s");
        }
        std::thread::sleep(POLL);
    }
    let seed_start = lab.counters(0).tx_bytes;
    let cpu_start: Vec<Option<(u32, Duration)>> = lab
        .procs
        .iter()
        .map(|p| p.as_ref().map(|p| (p.pid, p.cpu_time())))
        .collect();
    let machine_start = machine_cpu();
    let t0 = Instant::now();

    // The churn plan: (when, what), in order.
    let mut plan: Vec<(Instant, Action)> = Vec::new();
    if churn {
        let at = |f: f64| t0 + Duration::from_secs_f64((f * ideal).max(1.0));
        let quarter = ((n - 1) / 4).max(1);
        let first: Vec<usize> = (1..n).step_by(4).take(quarter).collect();
        let second: Vec<usize> = (3..n).step_by(4).take(quarter).collect();
        plan.push((at(0.3), Action::Kill(0)));
        for &i in &first {
            plan.push((at(0.3), Action::Kill(i)));
            plan.push((at(0.3) + Duration::from_secs(2), Action::Start(i)));
        }
        plan.push((at(0.3) + Duration::from_secs(3), Action::Start(0)));
        for &i in &second {
            plan.push((at(0.6), Action::Kill(i)));
            plan.push((at(0.6) + Duration::from_secs(2), Action::Start(i)));
        }
        plan.sort_by_key(|(when, _)| *when);
    }
    let mut plan = plan.into_iter().peekable();

    let mut finished: Vec<Option<Instant>> = vec![None; n];
    let mut skipped_kill = vec![false; n];
    let mut down = vec![false; n];
    let mut rerun_at: Vec<Option<Instant>> = vec![None; n];
    let mut report = RushReport {
        config: config.clone(),
        churn,
        finish: Vec::new(),
        verified: 0,
        corrupt: Vec::new(),
        seed_before_second_copy: None,
        max_upload_bps: 0.0,
        over_cap: Vec::new(),
        peers_cpu: 0.0,
        upload_used: Vec::new(),
        progress: Vec::new(),
        machine_busy: None,
        killed_seed: 0,
        killed_downloaders: 0,
        reruns: 0,
        failures: Vec::new(),
    };
    let mut last_sample = (
        Instant::now(),
        (0..n).map(|i| lab.counters(i)).collect::<Vec<_>>(),
    );
    let mut max_up = vec![0f64; n];
    loop {
        crate::check_stop()?;
        let now = Instant::now();
        // Upload of every peer over each window, for the cap check.
        if now.duration_since(last_sample.0) >= CAP_WINDOW {
            let counters: Vec<Counters> = (0..n).map(|i| lab.counters(i)).collect();
            let dt = now.duration_since(last_sample.0).as_secs_f64();
            let bps: Vec<f64> = (0..n)
                .map(|i| (counters[i].tx_bytes - last_sample.1[i].tx_bytes) as f64 * 8.0 / dt)
                .collect();
            for (max, &b) in max_up.iter_mut().zip(&bps) {
                *max = max.max(b);
            }
            let all: f64 = bps.iter().sum();
            report
                .upload_used
                .push((all / (rate * n as f64), bps[0] / rate));
            let done: Vec<f64> = (1..n)
                .map(|i| match (&finished[i], lab.procs[i].as_ref()) {
                    (Some(_), _) => 1.0,
                    (None, Some(p)) => p.view().bytes_done as f64 / config.size as f64,
                    (None, None) => 0.0,
                })
                .collect();
            report
                .progress
                .push([0.0, 50.0, 100.0].map(|p| percentile(&done, p).unwrap_or(0.0)));
            last_sample = (now, counters);
        }
        while plan.peek().is_some_and(|(when, _)| *when <= now) {
            let (_, action) = plan.next().expect("peeked");
            match action {
                Action::Kill(i) => {
                    if i > 0 && finished[i].is_some() {
                        skipped_kill[i] = true;
                        continue;
                    }
                    if let Some(p) = lab.procs[i].as_mut() {
                        p.kill();
                    }
                    down[i] = true;
                    if i == 0 {
                        report.killed_seed += 1;
                    } else {
                        report.killed_downloaders += 1;
                    }
                }
                Action::Start(i) => {
                    if skipped_kill[i] {
                        continue;
                    }
                    down[i] = false;
                    let args = if i == 0 {
                        seed_args.clone()
                    } else {
                        download_args(&lab, i)
                    };
                    let hook = (i > 0).then(|| on_completed.clone());
                    lab.procs[i] = Some(PeerProc::spawn(bin, &lab.nodes[i].ns, &args, hook)?);
                }
            }
        }
        for i in 1..n {
            let Some(p) = lab.procs[i].as_mut() else {
                continue;
            };
            if finished[i].is_none() {
                let (completed, failed) = {
                    let v = p.view();
                    // Its own message (the CLI's lines start with its name).
                    let said = v
                        .stderr_tail
                        .iter()
                        .rev()
                        .find(|l| l.starts_with("lanspread-peer:"));
                    let why = v.failed.clone().or_else(|| said.cloned());
                    (v.completed_at, why)
                };
                if let Some(at) = completed {
                    finished[i] = Some(at);
                    continue;
                }
                if let Some(status) = p.try_wait() {
                    if down[i] {
                        // Killed by the plan, which starts it again.
                        continue;
                    }
                    if status.success() {
                        // Already installed (completed before a kill landed).
                        finished[i] = Some(now);
                    } else if churn {
                        if rerun_at[i].is_none() {
                            rerun_at[i] = Some(now + Duration::from_secs(1));
                        }
                    } else {
                        report.failures.push(format!(
                            "node {i}: download ended with {status}: {}",
                            failed.unwrap_or_default()
                        ));
                        finished[i] = None;
                        lab.procs[i] = None;
                    }
                }
            }
        }
        for (i, due) in rerun_at.iter_mut().enumerate().skip(1) {
            if due.is_some_and(|at| at <= now) {
                *due = None;
                report.reruns += 1;
                let args = download_args(&lab, i);
                lab.procs[i] = Some(PeerProc::spawn(
                    bin,
                    &lab.nodes[i].ns,
                    &args,
                    Some(on_completed.clone()),
                )?);
            }
        }
        let done = (1..n).filter(|&i| finished[i].is_some()).count();
        let gone = (1..n).filter(|&i| lab.procs[i].is_none()).count();
        if done + gone >= n - 1 && plan.peek().is_none() {
            break;
        }
        if t0.elapsed() >= timeout {
            report.failures.push(format!(
                "timeout: {done} of {} finished within {timeout:?}",
                n - 1
            ));
            break;
        }
        std::thread::sleep(POLL * 5);
    }
    report.machine_busy =
        machine_start
            .zip(machine_cpu())
            .and_then(|((busy0, all0), (busy1, all1))| {
                (all1 > all0).then(|| (busy1 - busy0) as f64 / (all1 - all0) as f64)
            });
    // CPU since the rush started: a process's time before it is not the
    // rush's (one killed and started again counts whole).
    report.peers_cpu = lab
        .procs
        .iter()
        .zip(&cpu_start)
        .filter_map(|(p, start)| {
            let p = p.as_ref()?;
            let before = start
                .filter(|(pid, _)| *pid == p.pid)
                .map_or(Duration::ZERO, |(_, cpu)| cpu);
            Some(p.cpu_time().saturating_sub(before).as_secs_f64())
        })
        .sum::<f64>();
    report.finish = finished
        .iter()
        .skip(1)
        .flatten()
        .map(|&at| since(at, t0))
        .collect();
    report.seed_before_second_copy = first_copy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|b| b.saturating_sub(seed_start));
    report.max_upload_bps = stats::max(&max_up);
    report.over_cap = (0..n).filter(|&i| max_up[i] > rate * 1.05).collect();
    let reference = hash_tree(&lab.nodes[0].games().join(RUSH_GAME))?;
    for (i, done) in finished.iter().enumerate().skip(1) {
        if done.is_none() {
            continue;
        }
        match hash_tree(&lab.nodes[i].games().join(RUSH_GAME)) {
            Ok(tree) if tree == reference => report.verified += 1,
            _ => report.corrupt.push(i),
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// lineup

/// Games of the lineup scenario, in order.
const LINEUP_GAMES: [&str; 3] = ["lineup-a", "lineup-b", "lineup-c"];

#[derive(Debug, Clone)]
pub struct LineupConfig {
    /// Peers in all: the organizer (who has the games) and `n − 1`
    /// attendees with "keep me ready" on.
    pub n: usize,
    /// The size of each of the three games, in bytes.
    pub size: u64,
    /// R (a tc rate) and the delay of every link.
    pub shape: Shape,
    /// Bound on the wait for everyone ready; `None`: 60 s + 2·(n−1)·3F/R.
    pub timeout: Option<Duration>,
}

impl LineupConfig {
    /// 3F/R in seconds: each attendee fetches three games at its link's
    /// rate, which a perfect swarm sustains.
    fn ideal(&self) -> anyhow::Result<f64> {
        Ok(3.0 * self.size as f64 * 8.0 / stats::parse_rate(&self.shape.rate)?)
    }
}

pub struct LineupReport {
    pub config: LineupConfig,
    /// Seconds from `lineup set` until each attendee showed the lineup.
    pub lineup_seen: Vec<f64>,
    /// Seconds from `lineup set` until the organizer's board showed all
    /// `n` peers ready for every game.
    pub all_ready: Option<f64>,
    /// Attendees whose three games match the organizer's.
    pub verified: usize,
    pub failures: Vec<String>,
}

impl LineupReport {
    pub fn complete(&self) -> bool {
        self.all_ready.is_some()
            && self.lineup_seen.len() == self.config.n - 1
            && self.verified == self.config.n - 1
    }
}

impl std::fmt::Display for LineupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        let ideal = c.ideal().unwrap_or(f64::NAN);
        let mut table = Table::new(&[
            "peers",
            "games",
            "R",
            "lineup on every peer p50 / last",
            "board: everyone ready",
            "ideal 3F/R",
            "ready / ideal",
            "verified",
        ]);
        let ready = self.all_ready.map_or_else(
            || "not within the bound".to_owned(),
            |s| format!("{s:.1} s"),
        );
        let ratio = self
            .all_ready
            .map_or_else(|| "-".to_owned(), |s| format!("{:.2}", s / ideal));
        table.row(vec![
            c.n.to_string(),
            format!("3 × {}", bytes(c.size as f64)),
            c.shape.rate.clone(),
            format!(
                "{} / {}",
                secs(percentile(&self.lineup_seen, 50.0)),
                secs(percentile(&self.lineup_seen, 100.0))
            ),
            ready,
            format!("{ideal:.1} s"),
            ratio,
            format!("{} / {}", self.verified, c.n - 1),
        ]);
        write!(f, "{table}")?;
        writeln!(
            f,
            "\nLineup of 3 games set on the organizer (`lineup set`) once all {} peers see each \
             other; every attendee runs `serve --keep-ready`; load {}.{}",
            c.n,
            load_average(),
            delay_note()
        )?;
        for failure in &self.failures {
            writeln!(f, "- {failure}")?;
        }
        Ok(())
    }
}

/// An organizer with three games and `n − 1` attendees with "keep me
/// ready": the lineup is set once the party has formed; until every
/// attendee shows it, and until the organizer's board shows everyone ready.
pub fn lineup(bin: &Path, config: &LineupConfig, warmup: Duration) -> anyhow::Result<LineupReport> {
    let n = config.n;
    anyhow::ensure!(n >= 2, "a lineup needs an organizer and an attendee");
    let ideal = config.ideal()?;
    let timeout = config
        .timeout
        .unwrap_or_else(|| Duration::from_secs_f64(60.0 + 2.0 * (n - 1) as f64 * ideal));
    let mut lab = Lab::new(n, &config.shape)?;
    for game in LINEUP_GAMES {
        write_game(&lab.nodes[0].games(), game, config.size, 2)?;
    }
    for i in 0..n {
        crate::check_stop()?;
        let mut args = serve_args(&lab, i);
        args.push(
            if i == 0 {
                "--organizer"
            } else {
                "--keep-ready"
            }
            .into(),
        );
        lab.procs[i] = Some(PeerProc::spawn(bin, &lab.nodes[i].ns, &args, None)?);
    }
    for p in lab.procs.iter().flatten() {
        p.wait_serving(SERVING_WITHIN)?;
    }
    let (formed, fewest) = wait_mesh(&lab, warmup)?;
    if formed.is_none() {
        bail!("the party did not form within {warmup:?}: a peer saw only {fewest} others");
    }
    let organizer = lab.procs[0].as_ref().expect("started");
    let indexed_by = Instant::now() + Duration::from_secs(120);
    while !LINEUP_GAMES
        .iter()
        .all(|g| organizer.view().listed.contains_key(*g))
    {
        crate::check_stop()?;
        if Instant::now() >= indexed_by {
            bail!("the organizer did not index its games within 120 s");
        }
        std::thread::sleep(POLL);
    }

    let t0 = Instant::now();
    let data = lab.nodes[0].data().display().to_string();
    let mut set = vec!["lineup", "set", "--data", data.as_str(), "-q"];
    set.extend(LINEUP_GAMES);
    crate::lab::run(&bin.display().to_string(), &set)?;
    let attendees: Vec<usize> = (1..n).collect();
    let lineup_seen = wait_all(&lab, &attendees, t0, timeout, |v| {
        v.lineup_at.get(&LINEUP_GAMES.len()).copied()
    })?;
    let organizer = lab.procs[0].as_ref().expect("started");
    let all_ready = loop {
        crate::check_stop()?;
        if let Some(at) = organizer.view().board_ready_at.get(&n) {
            break Some(since(*at, t0));
        }
        if t0.elapsed() >= timeout {
            break None;
        }
        std::thread::sleep(POLL);
    };
    let mut report = LineupReport {
        config: config.clone(),
        lineup_seen,
        all_ready,
        verified: 0,
        failures: Vec::new(),
    };
    let want: Vec<_> = LINEUP_GAMES
        .iter()
        .map(|g| hash_tree(&lab.nodes[0].games().join(g)))
        .collect::<anyhow::Result<_>>()?;
    for i in 1..n {
        let got: anyhow::Result<Vec<_>> = LINEUP_GAMES
            .iter()
            .map(|g| hash_tree(&lab.nodes[i].games().join(g)))
            .collect();
        match got {
            Ok(got) if got == want => report.verified += 1,
            Ok(_) => report
                .failures
                .push(format!("p{i}: a game differs from the organizer's")),
            Err(e) => report.failures.push(format!("p{i}: {e:#}")),
        }
    }
    Ok(report)
}
