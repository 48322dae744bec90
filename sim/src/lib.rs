//! The party simulator: N real `lanspread-peer` processes, each in its own
//! network namespace on one Linux bridge, over veth links shaped by `tc`,
//! with real mDNS between them. It drives the peers only through their CLI,
//! their `--json` events and the network, so it measures any design of the
//! control plane alike. Linux only, as root.
//!
//! Scenarios (each prints one table): `idle` (chatter, CPU, memory and peers
//! per peer), `convergence` (a game added, a peer killed, a peer stopped:
//! how long until every peer knows), `rush` (one seed, N−1 downloaders
//! starting together over shaped links) and `churn` (the rush with the seed
//! and some downloaders killed and restarted).

#![cfg(target_os = "linux")]

pub mod lab;
pub mod peer;
pub mod scenario;
pub mod stats;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

pub use lab::{Lab, Shape};
pub use scenario::{
    churn, convergence, idle, lineup, rush, ConvergenceReport, IdleReport, LineupConfig,
    LineupReport, RushConfig, RushReport,
};

/// Set by SIGINT/SIGTERM; every wait of the simulator checks it and returns
/// an error, so the guards clean up on the way out.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Turn SIGINT and SIGTERM into a stop request (see [`check_stop`]).
pub fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}

/// An error once a stop was requested.
pub fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Sleep `d` in short steps, returning early with an error on a stop request.
pub fn sleep(d: std::time::Duration) -> anyhow::Result<()> {
    let end = std::time::Instant::now() + d;
    loop {
        check_stop()?;
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
    }
}

/// The environment variable naming the `lanspread-peer` binary.
pub const PEER_BIN_ENV: &str = "LANSPREAD_PEER_BIN";

/// The `lanspread-peer` binary: `flag`, else `$LANSPREAD_PEER_BIN`, else next
/// to our own executable (or one folder up, for test binaries in `deps/`).
pub fn find_peer_bin(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag.or_else(|| std::env::var_os(PEER_BIN_ENV).map(PathBuf::from)) {
        anyhow::ensure!(path.is_file(), "no peer binary at {}", path.display());
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("lanspread-peer");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    anyhow::bail!(
        "no lanspread-peer binary next to {}; build it (`cargo build -p lanspread-peer`) or pass \
         --peer-bin / ${PEER_BIN_ENV}",
        exe.display()
    )
}

/// Why the simulator cannot run here (not root, no `ip netns`, no `tc`), or
/// `None` when it can.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for (program, args) in [("ip", &["netns", "list"][..]), ("tc", &["-V"][..])] {
        match std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => return Some(format!("`{program} {}` failed: {s}", args.join(" "))),
            Err(e) => return Some(format!("cannot run `{program}`: {e}")),
        }
    }
    None
}
