//! Configuration of one peer runtime.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use lanspread_proto::wire::{truncate_display_name, MAX_DISPLAY_NAME_BYTES};

/// How long shutdown waits for tasks to finish before it reports the ones that
/// ignored cancellation. The desktop app waits at most 2 s on exit, so the
/// runtime must be done well inside that.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_millis(1500);

/// A game folder must see no change for this long before a new or changed
/// game is (re-)indexed and announced: a game still being copied in is not
/// announced half-copied.
pub const DEFAULT_LIBRARY_QUIET_PERIOD: Duration = Duration::from_secs(3);

/// The UDP port peers listen on unless told otherwise: a fixed port makes a
/// manual `host:port` easy to type and a firewall rule easy to write.
pub const DEFAULT_PORT: u16 = 27_600;

/// Downloads that run at once unless configured otherwise.
pub const DEFAULT_PARALLEL_DOWNLOADS: usize = 2;

/// A download gives a source measured faster than this (bytes per second,
/// above what a gigabit link carries) a second connection of its own with
/// two more streams: each side drives one QUIC connection on one task, so
/// one connection is bound by one core's encryption and packet work on
/// either end, and a second puts another core to work (docs/BENCHMARKS.md,
/// "CPU per GB against bare quinn").
pub const DEFAULT_SECOND_CONNECTION_AT: u64 = 160 << 20;

/// Everything a peer runtime needs to start.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The folder of games this peer shares (one game per top-level folder).
    pub games_dir: PathBuf,
    /// Identity, SQLite state and caches live here.
    pub data_dir: PathBuf,
    /// The name other peers show for this one. The runtime cuts a longer one
    /// to [`MAX_DISPLAY_NAME_BYTES`] at start
    /// ([`PeerConfig::with_display_name_fitted`]).
    pub display_name: String,
    /// See [`DEFAULT_SHUTDOWN_DEADLINE`].
    pub shutdown_deadline: Duration,
    /// See [`DEFAULT_LIBRARY_QUIET_PERIOD`].
    pub library_quiet_period: Duration,
    /// Where the QUIC server listens (UDP).
    pub listen: SocketAddr,
    /// A shared secret: only peers that know it may connect. `None`: any peer.
    pub party_key: Option<String>,
    /// Upload limit in bytes per second for everything this peer serves; 0 = none.
    pub upload_limit: u64,
    /// Announce and browse with mDNS. Off: only manual peers and peer exchange.
    pub mdns: bool,
    /// Peers to dial at start, `[peer-id@]host:port` (also remembered).
    pub peers: Vec<String>,
    /// A connected peer silent for this long is declared lost.
    pub lost_after: Duration,
    /// Interfaces mDNS uses; empty: every interface that is not virtual.
    pub mdns_interfaces: Vec<String>,
    /// Downloads that run at once; more wait in a queue.
    pub parallel_downloads: usize,
    /// See [`DEFAULT_SECOND_CONNECTION_AT`]; `u64::MAX`: never.
    pub second_connection_at: u64,
    /// Started as the party's organizer: under a party key only an
    /// organizer publishes a lineup (docs/PROTOCOL.md "Party").
    pub organizer: bool,
    /// Queue the games of the lineup we follow by themselves.
    pub keep_ready: bool,
    /// Seeding while a game started from lanspread runs, in percent of the
    /// upload limit (1-100).
    pub game_mode_upload_percent: u32,
}

impl PeerConfig {
    pub fn new(games_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            games_dir: games_dir.into(),
            data_dir: data_dir.into(),
            display_name: default_display_name(),
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            library_quiet_period: DEFAULT_LIBRARY_QUIET_PERIOD,
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            party_key: None,
            upload_limit: 0,
            mdns: true,
            peers: Vec::new(),
            lost_after: crate::peers::liveness::DEFAULT_LOST_AFTER,
            mdns_interfaces: Vec::new(),
            parallel_downloads: DEFAULT_PARALLEL_DOWNLOADS,
            second_connection_at: DEFAULT_SECOND_CONNECTION_AT,
            organizer: false,
            keep_ready: false,
            game_mode_upload_percent: crate::party::DEFAULT_GAME_MODE_UPLOAD_PERCENT,
        }
    }

    /// The same config with a display name the wire takes: one longer than
    /// [`MAX_DISPLAY_NAME_BYTES`] (from the CLI, a config file, a long host
    /// name) is cut at a character boundary, never refused. The settings
    /// refuse such a name instead, since there the player can fix it.
    pub fn with_display_name_fitted(mut self) -> Self {
        if self.display_name.len() > MAX_DISPLAY_NAME_BYTES {
            self.display_name = truncate_display_name(&self.display_name).to_owned();
        }
        self
    }
}

/// The machine's host name, or a generic name when it has none we can read.
pub fn default_display_name() -> String {
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "lanspread peer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_too_long_for_the_wire_is_cut_not_refused() {
        let named = |name: &str| {
            let mut config = PeerConfig::new("/games", "/data");
            config.display_name = name.into();
            config.with_display_name_fitted().display_name
        };
        assert_eq!(named("Ana"), "Ana");
        assert_eq!(named(&"Ж".repeat(56)), "Ж".repeat(32));
        assert_eq!(named(&"x".repeat(100)).len(), MAX_DISPLAY_NAME_BYTES);
    }
}
