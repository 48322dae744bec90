//! Helpers shared by the integration tests, each written once: games on disk,
//! in-process peers and waiting on their events, and `lanspread-peer` child
//! processes that are always killed and reaped, also when a test fails.
//!
//! No helper sleeps to wait for a state: it waits for an event, a line a child
//! prints, or a process exit, each bounded by a timeout.
#![cfg_attr(not(unix), allow(dead_code))]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lanspread_peer::{start_peer, PeerConfig, PeerEvent, PeerRuntimeHandle};
use tokio::sync::broadcast::{self, error::RecvError};

pub const MIB: usize = 1 << 20;

/// How long a peer may take to stop before a test calls it stuck: a guard
/// against hangs, not the product's promise (the desktop app waits at most
/// 2 s on exit), which `peers::shutdown_with_discovery_running_takes_under_2_s`
/// and `cli::sigint_on_serve_exits_0_within_2_s` hold the runtime to.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Games on disk

/// Deterministic pseudo-random bytes (incompressible, reproducible).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A game folder: one big file of `size` bytes, a few small ones, an empty
/// file, an empty folder, a picture and a title.
pub fn make_game(games: &Path, name: &str, size: usize) {
    let root = games.join(name);
    fs::create_dir_all(root.join("data/maps")).unwrap();
    fs::create_dir_all(root.join("saves")).unwrap();
    fs::write(root.join("data/big.pak"), bytes(size, 7)).unwrap();
    for i in 0..20 {
        fs::write(
            root.join(format!("data/maps/m{i:02}.map")),
            bytes(1000 + i * 37, i as u64),
        )
        .unwrap();
    }
    fs::write(root.join("empty.cfg"), b"").unwrap();
    fs::write(
        root.join("cover.png"),
        [&b"\x89PNG\r\n\x1a\n"[..], name.as_bytes()].concat(),
    )
    .unwrap();
    fs::write(root.join("lanspread.toml"), format!("title = \"{name}\"\n")).unwrap();
}

/// A small game folder `name` with one file whose bytes depend on the name.
pub fn small_game(games: &Path, name: &str) {
    fs::create_dir_all(games.join(name)).unwrap();
    fs::write(games.join(name).join("data.bin"), name.repeat(1000)).unwrap();
}

/// Both trees hold the same folders and byte-identical files.
pub fn assert_identical(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
                if entry.file_type().unwrap().is_dir() {
                    out.push((rel, None));
                    stack.push(entry.path());
                } else {
                    out.push((rel, Some(fs::read(entry.path()).unwrap())));
                }
            }
        }
        out.sort();
        out
    };
    let (left, right) = (list(a), list(b));
    assert_eq!(
        left.len(),
        right.len(),
        "{} vs {}",
        a.display(),
        b.display()
    );
    for (l, r) in left.iter().zip(&right) {
        assert_eq!(l.0, r.0);
        assert!(l.1 == r.1, "{} differs", l.0.display());
    }
}

// ---------------------------------------------------------------------------
// In-process peers

/// A peer on 127.0.0.1, on a port the OS picks (read it back with
/// `local_addr`), without mDNS.
pub fn local_config(games: &Path, data: &Path) -> PeerConfig {
    let mut config = PeerConfig::new(games, data);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    config
}

/// A running peer with its events since before its first service started.
pub struct Peer {
    pub handle: PeerRuntimeHandle,
    pub events: broadcast::Receiver<PeerEvent>,
    pub games: PathBuf,
}

/// The config of [`Peer::named`]: folders under `root/name`, dialling
/// `peers`, uploads capped at `upload_limit`.
pub fn named_config(root: &Path, name: &str, peers: Vec<String>, upload_limit: u64) -> PeerConfig {
    let games = root.join(name).join("games");
    fs::create_dir_all(&games).unwrap();
    let mut config = local_config(&games, &root.join(name).join("data"));
    config.display_name = name.into();
    config.peers = peers;
    config.upload_limit = upload_limit;
    config.library_quiet_period = Duration::from_millis(300);
    config
}

impl Peer {
    pub async fn start(config: PeerConfig) -> Self {
        let games = config.games_dir.clone();
        let (handle, events) = start_peer(config).await.unwrap();
        Self {
            handle,
            events,
            games,
        }
    }

    /// `root/name/games` (created) and `root/name/data`, a short quiet
    /// period, the display name `name`, `peers` to dial.
    pub async fn named(root: &Path, name: &str, peers: Vec<String>, upload_limit: u64) -> Self {
        Self::start(named_config(root, name, peers, upload_limit)).await
    }

    /// Wait until this peer shares `game` (its library announces it).
    pub async fn indexed(&mut self, game: &str) {
        let handle = &self.handle;
        until(
            &mut self.events,
            &format!("{game} indexed"),
            Duration::from_secs(20),
            || handle.library().contains_key(game),
        )
        .await;
    }

    /// `host:port` to dial this peer at.
    pub fn addr(&self) -> String {
        self.handle.local_addr().to_string()
    }
}

/// The first event for which `pick` gives a value, within `within`.
pub async fn wait_event<T>(
    events: &mut broadcast::Receiver<PeerEvent>,
    what: &str,
    within: Duration,
    mut pick: impl FnMut(&PeerEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("{what}: the peer's events ended"),
            }
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {within:?}"))
}

/// Wait until `ok()` holds, within `within`; returns how long it took. It is
/// checked now and again after each event of the peer whose state it reads
/// (every change of its library, catalog, peers or downloads comes with one),
/// The terminal event of the download of `game`.
pub async fn outcome(
    events: &mut broadcast::Receiver<PeerEvent>,
    game: &str,
    within: Duration,
) -> PeerEvent {
    wait_event(
        events,
        &format!("the end of the download of {game}"),
        within,
        |event| match event {
            PeerEvent::DownloadCompleted { game_id, .. }
            | PeerEvent::DownloadFailed { game_id, .. }
            | PeerEvent::DownloadCancelled { game_id, .. }
            | PeerEvent::DownloadPeersGone { game_id, .. }
                if game_id == game =>
            {
                Some(event.clone())
            }
            _ => None,
        },
    )
    .await
}

/// so it wakes on the change itself rather than on a timer.
pub async fn until(
    events: &mut broadcast::Receiver<PeerEvent>,
    what: &str,
    within: Duration,
    mut ok: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    while !ok() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("{what}: the peer's events ended"),
            Err(_) => panic!("{what}: not within {within:?}"),
        }
    }
    started.elapsed()
}

/// Shut every peer down, then check each stopped because it was asked to,
/// with no service aborted after the shutdown deadline.
pub async fn stop<'a>(handles: impl IntoIterator<Item = &'a PeerRuntimeHandle>) {
    let handles: Vec<_> = handles.into_iter().collect();
    for handle in &handles {
        handle.shutdown();
    }
    for handle in handles {
        let report = tokio::time::timeout(STOP_WITHIN, handle.wait_stopped())
            .await
            .unwrap_or_else(|_| panic!("{} not stopped within {STOP_WITHIN:?}", handle.peer_id()));
        assert!(
            report.requested && report.stragglers.is_empty(),
            "{report:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// `lanspread-peer` child processes

#[cfg(unix)]
pub use process::*;

#[cfg(unix)]
mod process {
    use std::ffi::OsStr;
    use std::io::{BufRead, BufReader, Read};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::{Child, Command, ExitStatus, Output, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::STOP_WITHIN;

    pub const PEER: &str = env!("CARGO_BIN_EXE_lanspread-peer");

    /// How long `serve` may take to say it is serving (start, open its
    /// database, bind): a guard against hangs on a busy machine.
    const SERVING_WITHIN: Duration = Duration::from_secs(20);

    /// A child process killed and reaped on drop, so a failing test leaves
    /// nothing running.
    pub struct ChildGuard(pub Child);

    impl ChildGuard {
        pub fn spawn(command: &mut Command) -> Self {
            Self(
                command
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}")),
            )
        }

        /// Send `signal` (kill(2) on our own child).
        pub fn signal(&self, signal: libc::c_int) {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(self.0.id() as libc::pid_t, signal) };
        }

        /// SIGKILL, and reap it.
        pub fn kill(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// Run `command` to its end, at most `within` (killed after), and
    /// collect its output. Its end is seen as both pipes closing.
    pub fn output_within(command: &mut Command, within: Duration) -> Output {
        let mut child = ChildGuard::spawn(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let (tx, rx) = mpsc::channel();
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.0.stdout.take().unwrap()),
            Box::new(child.0.stderr.take().unwrap()),
        ];
        for (i, mut pipe) in pipes.into_iter().enumerate() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let _ = pipe.read_to_end(&mut out);
                let _ = tx.send((i, out));
            });
        }
        let deadline = Instant::now() + within;
        let mut outputs = [Vec::new(), Vec::new()];
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let (i, out) = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{command:?} still running after {within:?}"));
            outputs[i] = out;
        }
        let status = child.0.wait().unwrap();
        let [stdout, stderr] = outputs;
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Forward every JSON line of `out` (a `--json` child's stdout) until it
    /// closes; other lines are skipped.
    pub fn json_lines(out: impl Read + Send + 'static) -> mpsc::Receiver<serde_json::Value> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str(&line) {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        rx
    }

    /// The first JSON event for which `pick` gives a value, within `within`.
    pub fn wait_json<T>(
        events: &mpsc::Receiver<serde_json::Value>,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&serde_json::Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not within {within:?}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("{what}: the process ended first")
                }
            }
        }
    }

    /// A `lanspread-peer serve` process, started and known to be serving: it
    /// printed `serving on ADDR as PEER_ID`. Its `--json` events, if asked
    /// for, can be waited on; it is killed and reaped on drop.
    pub struct ServeChild {
        child: ChildGuard,
        /// The address it is bound to, from its serving line.
        pub addr: SocketAddr,
        pub peer_id: String,
        events: mpsc::Receiver<serde_json::Value>,
        /// Everything else it wrote on stderr, sent once stderr closes.
        stderr_end: mpsc::Receiver<String>,
    }

    impl ServeChild {
        /// `serve --no-mdns -q --json` sharing `games` with `data`, on
        /// 127.0.0.1 at a port the OS picks unless `extra` has `--listen`.
        pub fn start(games: &Path, data: &Path, extra: &[&str]) -> Self {
            let mut command = Command::new(PEER);
            command
                .args(["serve", "--no-mdns", "-q", "--json", "--games"])
                .arg(games)
                .arg("--data")
                .arg(data);
            if !extra.contains(&"--listen") {
                command.args(["--listen", "127.0.0.1:0"]);
            }
            command.args(extra);
            Self::spawn(command)
        }

        /// Spawn `command` (a `serve`, maybe behind a wrapper that execs it)
        /// and wait for its serving line.
        pub fn spawn(mut command: Command) -> Self {
            let mut child = ChildGuard::spawn(
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped()),
            );
            let events = json_lines(child.0.stdout.take().unwrap());
            let stderr = child.0.stderr.take().unwrap();
            let (serving_tx, serving) = mpsc::channel();
            let (end_tx, stderr_end) = mpsc::channel();
            std::thread::spawn(move || {
                let mut rest = String::new();
                let mut serving_tx = Some(serving_tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    match (parse_serving(&line), &serving_tx) {
                        (Some(found), Some(tx)) => {
                            let _ = tx.send(Ok(found));
                            serving_tx = None;
                        }
                        _ => {
                            rest.push_str(&line);
                            rest.push('\n');
                        }
                    }
                }
                if let Some(tx) = serving_tx {
                    let _ = tx.send(Err(rest.clone()));
                }
                let _ = end_tx.send(rest);
            });
            let (addr, peer_id) = match serving.recv_timeout(SERVING_WITHIN) {
                Ok(Ok(found)) => found,
                Ok(Err(stderr)) => panic!("{command:?} ended without serving:\n{stderr}"),
                Err(_) => panic!("{command:?} not serving within {SERVING_WITHIN:?}"),
            };
            Self {
                child,
                addr,
                peer_id,
                events,
                stderr_end,
            }
        }

        pub fn signal(&self, signal: libc::c_int) {
            self.child.signal(signal);
        }

        /// Its process id (to read its memory in `/proc`).
        pub fn pid(&self) -> u32 {
            self.child.0.id()
        }

        /// SIGKILL, and reap it.
        pub fn kill(&mut self) {
            self.child.kill();
        }

        /// Wait at most `within` for it to exit (seen as its stderr closing);
        /// `None` if it is still running.
        pub fn wait_exit(&mut self, within: Duration) -> Option<(ExitStatus, String)> {
            let stderr = self.stderr_end.recv_timeout(within).ok()?;
            Some((self.child.0.wait().unwrap(), stderr))
        }

        /// SIGINT, and check it exits 0 in time: a graceful stop.
        pub fn stop(mut self) {
            self.signal(libc::SIGINT);
            let (status, stderr) = self
                .wait_exit(STOP_WITHIN)
                .unwrap_or_else(|| panic!("serve still running {STOP_WITHIN:?} after SIGINT"));
            assert_eq!(status.code(), Some(0), "{stderr}");
        }

        /// The first of its `--json` events for which `pick` gives a value.
        pub fn wait_event<T>(
            &self,
            what: &str,
            within: Duration,
            pick: impl FnMut(&serde_json::Value) -> Option<T>,
        ) -> T {
            wait_json(&self.events, what, within, pick)
        }

        /// Wait until its library announces `game` (indexed, so offered).
        pub fn indexed(&self, game: &str) {
            let listed = |event: &serde_json::Value, key: &str| {
                event[key]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id == game))
            };
            self.wait_event(
                &format!("{game} indexed"),
                Duration::from_secs(20),
                |event| {
                    (event["type"] == "libraryChanged"
                        && (listed(event, "added") || listed(event, "updated")))
                    .then_some(())
                },
            );
        }
    }

    /// `serving on ADDR as PEER_ID`, the line `serve` prints once it listens.
    fn parse_serving(line: &str) -> Option<(SocketAddr, String)> {
        let rest = line.strip_prefix("serving on ")?;
        let (addr, peer_id) = rest.split_once(" as ")?;
        Some((addr.parse().ok()?, peer_id.trim().to_owned()))
    }

    /// `Command::new(PEER).args(args)`.
    pub fn peer_command<I: AsRef<OsStr>>(args: impl IntoIterator<Item = I>) -> Command {
        let mut command = Command::new(PEER);
        command.args(args);
        command
    }
}
