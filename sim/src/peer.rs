//! One `lanspread-peer` process in a namespace, and what its `--json` events
//! and its serving line tell: the peers it sees, the games its catalog lists
//! (and since when), its download's end.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What a peer's output has told so far.
#[derive(Debug, Default)]
pub struct View {
    /// From the serving line (`serve` only).
    pub peer_id: Option<String>,
    /// Peers reported discovered and not lost since.
    pub peers: HashSet<String>,
    /// When each peer was last reported lost.
    pub lost_at: HashMap<String, Instant>,
    /// Games the catalog lists with a source (or installed here), and since
    /// when.
    pub listed: HashMap<String, Instant>,
    /// When each game last left the catalog.
    pub unlisted_at: HashMap<String, Instant>,
    pub completed_at: Option<Instant>,
    /// Bytes its download had verified at its last progress event.
    pub bytes_done: u64,
    /// The last download failure or "every source left".
    pub failed: Option<String>,
    /// When it first showed a lineup of this many games.
    pub lineup_at: HashMap<usize, Instant>,
    /// When its ready board first showed this many peers all ready for
    /// every lineup game.
    pub board_ready_at: HashMap<usize, Instant>,
    pub events: u64,
    /// Its output closed: the process ended.
    pub ended: bool,
    /// The last lines of its stderr, for error messages.
    pub stderr_tail: VecDeque<String>,
}

/// Called with the time of the process's `downloadCompleted` event, on its
/// reader thread, at once (the rush samples the seed's counter there).
pub type OnCompleted = Arc<dyn Fn(Instant) + Send + Sync>;

/// A running peer process; killed and reaped on drop.
pub struct PeerProc {
    child: Child,
    pub pid: u32,
    pub started: Instant,
    view: Arc<Mutex<View>>,
}

impl PeerProc {
    /// Start `bin ARGS` in `node`'s namespace, with `-q --json`.
    pub fn spawn(
        bin: &Path,
        ns: &str,
        args: &[String],
        on_completed: Option<OnCompleted>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(bin)
            .args(args)
            .args(["-q", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches only
            // the simulator, which then stops everything in order.
            .process_group(0);
        // SAFETY: prctl between fork and exec, async-signal-safe. The peer
        // dies with the simulator even when the simulator is SIGKILLed
        // (`ip netns exec` execs the peer, which keeps the setting).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id();
        let view = Arc::new(Mutex::new(View::default()));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        {
            let view = view.clone();
            std::thread::spawn(move || read_events(stdout, &view, on_completed));
        }
        {
            let view = view.clone();
            // With LANSPREAD_SIM_LOGS=DIR each peer's log also goes to
            // DIR/<namespace>.log (set RUST_LOG for more than errors).
            let log = std::env::var_os("LANSPREAD_SIM_LOGS").and_then(|dir| {
                std::fs::File::create(Path::new(&dir).join(format!("{ns}.log"))).ok()
            });
            std::thread::spawn(move || read_stderr(stderr, &view, log));
        }
        Ok(Self {
            child,
            pid,
            started: Instant::now(),
            view,
        })
    }

    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for the serving line (a `serve` is bound and has its id).
    pub fn wait_serving(&self, within: Duration) -> anyhow::Result<String> {
        let end = Instant::now() + within;
        loop {
            crate::check_stop()?;
            {
                let view = self.view();
                if let Some(id) = &view.peer_id {
                    return Ok(id.clone());
                }
                if view.ended {
                    bail!(
                        "peer {} ended without serving:\n{}",
                        self.pid,
                        Vec::from(view.stderr_tail.clone()).join("\n")
                    );
                }
            }
            if Instant::now() >= end {
                bail!("peer {} not serving within {within:?}", self.pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our child, not reaped yet.
        unsafe { libc::kill(self.pid as libc::pid_t, signal) };
    }

    /// Its exit status, if it has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `within` for it to end (SIGKILL after).
    pub fn stop(&mut self, within: Duration) {
        self.signal(libc::SIGTERM);
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.try_wait().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// CPU time used so far (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return Duration::ZERO;
        };
        // Fields after the command name (which may hold spaces), closed by ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(ticks * 1_000_000 / hz)
    }

    /// Resident memory in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock(view: &Mutex<View>) -> MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_events(out: impl std::io::Read, view: &Mutex<View>, on_completed: Option<OnCompleted>) {
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        let now = Instant::now();
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let str_of = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        let mut v = lock(view);
        v.events += 1;
        match event["type"].as_str().unwrap_or("") {
            "peerDiscovered" => {
                if let Some(id) = str_of(&event["peer"]["peerId"]) {
                    v.peers.insert(id);
                }
            }
            "peerLost" => {
                if let Some(id) = str_of(&event["peerId"]) {
                    v.peers.remove(&id);
                    v.lost_at.insert(id, now);
                }
            }
            "catalogChanged" => {
                let listed: HashSet<String> = event["catalog"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| {
                        let some = |k: &str| e[k].as_array().is_some_and(|a| !a.is_empty());
                        some("sources") || some("partialSources") || e["installed"] == true
                    })
                    .filter_map(|e| str_of(&e["gameId"]))
                    .collect();
                let gone: Vec<String> = v
                    .listed
                    .keys()
                    .filter(|g| !listed.contains(*g))
                    .cloned()
                    .collect();
                for game in gone {
                    v.listed.remove(&game);
                    v.unlisted_at.insert(game, now);
                }
                for game in listed {
                    v.listed.entry(game).or_insert(now);
                }
            }
            "downloadProgress" => {
                if let Some(done) = event["bytesDone"].as_u64() {
                    v.bytes_done = done;
                }
            }
            "downloadCompleted" => {
                v.completed_at.get_or_insert(now);
                drop(v);
                if let Some(f) = &on_completed {
                    f(now);
                }
                continue;
            }
            "lineupChanged" => {
                let games = event["lineups"][0]["entries"]
                    .as_array()
                    .map_or(0, Vec::len);
                if games > 0 {
                    v.lineup_at.entry(games).or_insert(now);
                }
            }
            "readyBoardChanged" => {
                let games = event["board"]["games"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let peers = games
                    .iter()
                    .map(|g| g["peers"].as_array().map_or(0, Vec::len))
                    .min()
                    .unwrap_or(0);
                let all_ready = !games.is_empty()
                    && games
                        .iter()
                        .all(|g| g["ready"].as_u64() == Some(peers as u64));
                if all_ready {
                    v.board_ready_at.entry(peers).or_insert(now);
                }
            }
            "downloadFailed" => v.failed = str_of(&event["message"]),
            "downloadPeersGone" => v.failed = Some("every source left".into()),
            _ => {}
        }
    }
    lock(view).ended = true;
}

fn read_stderr(err: impl std::io::Read, view: &Mutex<View>, mut log: Option<std::fs::File>) {
    for line in BufReader::new(err).lines().map_while(Result::ok) {
        if let Some(file) = &mut log {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
        }
        let mut v = lock(view);
        // "serving on ADDR as PEER_ID"
        if v.peer_id.is_none() {
            if let Some(rest) = line.strip_prefix("serving on ") {
                if let Some((_, id)) = rest.split_once(" as ") {
                    v.peer_id = Some(id.trim().to_owned());
                    continue;
                }
            }
        }
        if v.stderr_tail.len() >= 20 {
            v.stderr_tail.pop_front();
        }
        v.stderr_tail.push_back(line);
    }
}
