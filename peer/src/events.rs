//! The contract with every front end: the events a running peer reports, and
//! every type that events and the snapshots a front end asks for carry (peer
//! info, catalog entries, downloads, service health, diagnostics, error
//! codes). The desktop UI receives them as tagged camelCase JSON and
//! `lanspread-peer --json` prints them one per line.
//!
//! A leaf: it imports nothing but `proto`'s ids; the modules that emit events
//! import it, never the reverse. Ids stay typed here ([`VersionId`],
//! [`PeerId`]) and become text only when serialized (hex for hashes).
//! With the `ts` feature every type derives `ts_rs::TS`, which the desktop
//! crate's binding test renders into `ui/src/bindings.ts`.

use std::net::SocketAddr;

use lanspread_proto::{Hash, PeerId, VersionId};
use serde::Serialize;
use tokio::sync::broadcast;

/// Everything the runtime tells the outside world.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum PeerEvent {
    /// A `Required` part of the runtime failed; the runtime is shutting down.
    RuntimeFailed { component: String, error: String },
    /// A supervised service changed state (started, failed, backing off, ...).
    HealthChanged { health: ServiceHealth },
    /// Hashing a game of the local library: bytes read so far of those to read.
    IndexingProgress {
        game: String,
        bytes_done: u64,
        bytes_total: u64,
    },
    /// The local library changed (game ids); peers are told as well.
    LibraryChanged {
        added: Vec<String>,
        updated: Vec<String>,
        removed: Vec<String>,
    },
    /// A peer was connected (for the first time, or again after being lost).
    PeerDiscovered { peer: PeerInfo },
    /// A peer stopped answering, or said goodbye.
    PeerLost {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        peer_id: PeerId,
        reason: String,
    },
    /// The LAN catalog changed; the whole new catalog.
    CatalogChanged { catalog: Vec<CatalogEntry> },
    /// A download waits for a free slot (see the parallel downloads setting).
    DownloadQueued {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        game_id: String,
        title: String,
    },
    /// A download has its manifest and staging folder and starts fetching.
    DownloadStarted {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        game_id: String,
        title: String,
        bytes_total: u64,
    },
    /// At most four per second per download.
    DownloadProgress {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        game_id: String,
        bytes_done: u64,
        bytes_total: u64,
        bytes_per_sec: f64,
        eta_secs: Option<u64>,
        sources: Vec<SourceRate>,
    },
    /// Every piece verified; the game is installed.
    DownloadCompleted {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        game_id: String,
    },
    DownloadFailed {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        game_id: String,
        code: FailureCode,
        message: String,
    },
    /// Cancelled; its staging data stays for a resume unless deleted.
    DownloadCancelled {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        game_id: String,
    },
    /// Every piece verified, but the game is running (started by lanspread,
    /// or its files in use): the update stays staged and installs when it
    /// exits. `message` says so in words.
    DownloadWaiting {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        game_id: String,
        message: String,
    },
    /// Every source is gone; the staging data stays for a resume.
    DownloadPeersGone {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        game_id: String,
    },
    /// The lineups known on the LAN changed (one published, replaced, or
    /// its publisher left); every lineup, ours first, then by publisher.
    LineupChanged { lineups: Vec<Lineup> },
    /// The ready board changed (a peer's state for a lineup game); at most
    /// two per second.
    ReadyBoardChanged { board: ReadyBoard },
    /// An organizer asks everyone to get a lineup game ready.
    ReadyCheck { check: ReadyCheck },
    /// A game started from lanspread runs (or the last one exited): seeding
    /// is capped to `upload_cap` bytes per second meanwhile.
    GameModeChanged { game_mode: GameMode },
    /// A source sent too many pieces that failed verification and is no
    /// longer used for this download.
    SourceBanned {
        #[serde(serialize_with = "hex::one")]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        version_id: VersionId,
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        peer_id: PeerId,
        reason: String,
    },
}

/// Tonight's lineup as one peer published it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Lineup {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub publisher: PeerId,
    pub publisher_name: String,
    /// Published by this peer.
    pub ours: bool,
    /// The publisher was started as an organizer.
    pub organizer: bool,
    /// The publisher is present now (a lineup stays shown after it left).
    pub present: bool,
    /// The lineup's version (the publisher's clock in milliseconds when it
    /// published): a newer one from the same publisher replaces the older.
    pub version: u64,
    pub entries: Vec<LineupEntry>,
}

/// One game of a lineup.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct LineupEntry {
    #[serde(serialize_with = "hex::one")]
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub version_id: VersionId,
    pub game_id: String,
    /// From the catalog; the game id while no peer lists the version.
    pub title: String,
    /// When it is played, as the organizer wrote it ("21:00").
    pub at: Option<String>,
    /// Bytes; 0 while no peer lists the version.
    pub total_size: u64,
    /// Our own state for it.
    pub state: ReadyState,
}

/// Where one peer stands with one lineup game.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub enum ReadyState {
    /// The exact version is installed.
    Ready,
    Downloading,
    /// Another version of the same game is installed.
    Outdated,
    Missing,
    /// The game runs on that peer now (started from lanspread).
    Playing,
}

/// Every lineup game with every peer's state: the data of the ready board.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ReadyBoard {
    /// Whose lineup the board follows (none: no lineup).
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub publisher: Option<PeerId>,
    pub games: Vec<BoardGame>,
}

/// One lineup game on the ready board.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct BoardGame {
    #[serde(serialize_with = "hex::one")]
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub version_id: VersionId,
    pub game_id: String,
    pub title: String,
    pub at: Option<String>,
    /// Peers ready for it (playing counts as ready), of `peers.len()`.
    pub ready: u32,
    pub peers: Vec<BoardPeer>,
}

/// One peer's row for one lineup game.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct BoardPeer {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub peer_id: PeerId,
    pub name: String,
    /// This row is us.
    pub us: bool,
    pub state: ReadyState,
    /// While downloading: how far, 0-100.
    pub percent: Option<f64>,
    /// While downloading: seconds left, when known.
    pub eta_secs: Option<u64>,
}

/// "Get ready for Quake 3: 1.2 GB, about 40 s".
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ReadyCheck {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub publisher: PeerId,
    pub publisher_name: String,
    #[serde(serialize_with = "hex::one")]
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub version_id: VersionId,
    pub game_id: String,
    pub title: String,
    /// What this peer still has to fetch (0: ready).
    pub bytes_needed: u64,
    /// About how long that takes, at this peer's recent download rate or a
    /// LAN's typical one.
    pub eta_secs: u64,
    pub state: ReadyState,
}

/// Whether a game started from lanspread runs here, capping our seeding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct GameMode {
    pub active: bool,
    /// Game ids running now.
    pub games: Vec<String>,
    /// The upload limit while active, bytes per second.
    pub upload_cap: u64,
}

/// A game only this peer has complete while others still fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct LastCopy {
    #[serde(serialize_with = "hex::one")]
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub version_id: VersionId,
    pub game_id: String,
    pub title: String,
    /// Peers fetching it now.
    pub fetching: u32,
}

/// What "Get the lineup" did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct LineupFetch {
    /// Versions queued now.
    #[cfg_attr(feature = "ts", ts(type = "Array<string>"))]
    #[serde(serialize_with = "hex::many")]
    pub queued: Vec<VersionId>,
    /// Entries already installed or downloading.
    pub already: u32,
    /// Game ids no peer lists yet (queued once one does, with "keep me
    /// ready").
    pub unavailable: Vec<String>,
    /// Entries that could not be queued, each "title: why".
    pub failed: Vec<String>,
}

/// Where the runtime's events go: one bounded broadcast channel that every
/// front end subscribes to. Cloning is cheap; all clones feed one channel.
#[derive(Debug, Clone)]
pub struct EventSink(broadcast::Sender<PeerEvent>);

impl EventSink {
    /// A sink buffering `capacity` events per subscriber (a slow one then
    /// sees `RecvError::Lagged` and resynchronises from snapshots), and a
    /// first subscriber.
    pub fn new(capacity: usize) -> (Self, broadcast::Receiver<PeerEvent>) {
        let (sender, receiver) = broadcast::channel(capacity);
        (Self(sender), receiver)
    }

    /// Send to every subscriber. Never blocks; no subscriber is fine (nobody
    /// is listening yet, or the front end went away).
    pub fn emit(&self, event: PeerEvent) {
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.0.subscribe()
    }
}

/// One code scheme for every failure a front end sees: `DownloadFailed`
/// events and every command's error. The UI branches on these, never on
/// message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub enum FailureCode {
    /// No such game or version on the LAN (or no such picture).
    NotFound,
    AlreadyInstalled,
    NoSpace,
    PermissionDenied,
    GamesDirMissing,
    /// A folder of the game's name is there and is not an older version.
    DestinationExists,
    BadManifest,
    Io,
    /// The runtime has stopped (shutting down, or restarting with new
    /// settings); try again in a moment.
    RuntimeStopped,
    /// The game is not installed here.
    NotInstalled,
    /// The game names no program to start.
    NoExecutable,
    Launch,
    Delete,
    /// A typed peer address names a malformed peer id.
    BadPeerId,
    /// A typed peer address does not resolve.
    Unresolved,
    /// Settings that cannot be used; the message says which value.
    InvalidSettings,
    /// A version id that is not 64 hex digits.
    BadVersionId,
    /// The system dialog failed.
    Dialog,
    /// A folder could not be opened.
    Open,
    /// A game refused as listed: its id is not a plain folder name, or it
    /// is over a limit; the message says which.
    Refused,
    /// The peers that list this version disagree on its game id; download
    /// it by the game id you choose.
    NameConflict,
    /// The game's files are in use (a running game on Windows); the update
    /// waits for it.
    GameInUse,
    /// Under a party key only a peer started as organizer publishes a
    /// lineup or calls a ready check.
    NotOrganizer,
    /// A lineup over its bounds, empty where it may not be, or naming a
    /// game no peer lists.
    BadLineup,
}

/// How a peer's address became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Manual,
    Mdns,
    Exchange,
    /// It connected to us and told us its port.
    Incoming,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub enum PeerState {
    Connected,
    Lost,
    /// Speaks another protocol version: listed, never connected.
    Incompatible,
}

/// What the UI and CLI show of a peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub peer_id: PeerId,
    pub display_name: String,
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub addr: Option<SocketAddr>,
    pub state: PeerState,
    pub rtt_ms: Option<f64>,
    pub games: usize,
    pub source: Source,
    pub last_error: Option<String>,
}

/// One game version on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntry {
    /// The folder name.
    pub game_id: String,
    #[serde(serialize_with = "hex::one")]
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub version_id: VersionId,
    pub title: String,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub min_players: Option<u32>,
    pub max_players: Option<u32>,
    pub version_label: Option<String>,
    pub total_size: u64,
    /// The picture's hash (hex), to fetch with the thumbnail command.
    #[serde(serialize_with = "hex::option")]
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub thumbnail: Option<Hash>,
    /// Peers that serve this version.
    #[cfg_attr(feature = "ts", ts(type = "Array<string>"))]
    pub sources: Vec<PeerId>,
    /// Peers still downloading it that serve the pieces they have.
    #[cfg_attr(feature = "ts", ts(type = "Array<string>"))]
    pub partial_sources: Vec<PeerId>,
    /// This exact version is in our games folder.
    pub installed: bool,
    /// On the entry of an installed version: the version id of a newer one
    /// on the LAN (same game id).
    #[serde(serialize_with = "hex::option")]
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub update_to: Option<VersionId>,
    /// The peers that list this version disagree on its game id or title:
    /// every name seen. Shown, never silently merged.
    pub conflict: Option<NameConflict>,
    /// Why this version cannot be downloaded as listed (e.g. "game id
    /// `../x` is not a plain folder name"); `None` when it can.
    pub refused: Option<String>,
    /// What was cut to fit a limit, in words (e.g. "description cut to
    /// 8192 bytes").
    pub notes: Vec<String>,
}

/// The names the sources of one version gave it, when they disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct NameConflict {
    /// Sorted, unique; more than one when the game ids disagree.
    pub game_ids: Vec<String>,
    /// Sorted, unique; more than one when the titles disagree.
    pub titles: Vec<String>,
}

/// One source's share of a download's progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SourceRate {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub peer_id: PeerId,
    pub bytes_per_sec: f64,
}

/// A download as the UI lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct DownloadInfo {
    #[serde(serialize_with = "hex::one")]
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub version_id: VersionId,
    pub game_id: String,
    pub title: String,
    pub state: DownloadState,
}

/// Whether a listed download runs or waits for a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub enum DownloadState {
    Queued,
    Running,
}

/// Lifecycle state of one supervised service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub enum ServiceState {
    Starting,
    Running,
    BackingOff,
    Failed,
    Stopped,
}

/// What the supervisor knows about one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ServiceHealth {
    pub service: String,
    /// `required`, `restart` or `bestEffort`.
    pub policy: String,
    pub state: ServiceState,
    /// How many times the supervisor restarted it after a failure.
    pub restarts: u32,
    pub last_error: Option<String>,
    /// Unix milliseconds of the last sign of life (start or explicit heartbeat).
    pub last_heartbeat_ms: Option<u64>,
}

/// Health of every service, in service-name order.
pub type HealthSnapshot = Vec<ServiceHealth>;

/// A network interface, and whether discovery uses it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct InterfaceReport {
    pub name: String,
    pub addr: String,
    pub used_for_discovery: bool,
    /// Why discovery skips it (a virtual adapter, not configured).
    pub skipped_because: Option<String>,
}

/// An address we know of, and what went wrong dialling it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct AddressReport {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub addr: SocketAddr,
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub expected_peer_id: Option<PeerId>,
    pub source: Source,
    pub last_error: Option<String>,
}

/// UDP socket buffer sizes: asked of the OS, and granted as it reports them
/// (Linux reports twice what it accounts for; Windows defaults to 64 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UdpBuffers {
    pub asked: u64,
    pub recv: u64,
    pub send: u64,
}

/// A network Windows knows the machine is on, and its category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    pub name: String,
    pub interface: String,
    /// `Public`, `Private` or `DomainAuthenticated`.
    pub category: String,
}

/// What the Windows firewall check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct FirewallReport {
    pub networks: Vec<NetworkProfile>,
    /// Firewall profiles (`Domain`, `Private`, `Public`) that are switched on.
    pub enabled_profiles: Vec<String>,
    /// Enabled inbound rules that allow our UDP port, with the profiles
    /// they apply to, e.g. `lanspread (Private, Domain)`.
    pub rules: Vec<String>,
    /// Why the check could not run, when it could not.
    pub error: Option<String>,
}

/// The "why can't I see peers" report.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub peer_id: PeerId,
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub bound_addr: SocketAddr,
    pub mdns_enabled: bool,
    /// The discovery service's health (multicast status).
    pub discovery: Option<ServiceHealth>,
    pub interfaces: Vec<InterfaceReport>,
    pub peers: Vec<PeerInfo>,
    /// Addresses we know of and what went wrong dialling them.
    pub addresses: Vec<AddressReport>,
    /// The QUIC socket's buffers as the OS granted them.
    pub udp_buffers: UdpBuffers,
    /// Windows only: network categories and firewall rules (`None`
    /// elsewhere, and until the first check has finished).
    pub firewall: Option<FirewallReport>,
    pub hints: Vec<String>,
}

/// Hashes travel to front ends as hex text.
mod hex {
    use lanspread_proto::Hash;
    use serde::Serializer;

    pub fn one<S: Serializer>(hash: &Hash, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hash.to_hex())
    }

    pub fn many<S: Serializer>(hashes: &[Hash], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(hashes.iter().map(Hash::to_hex))
    }

    pub fn option<S: Serializer>(hash: &Option<Hash>, serializer: S) -> Result<S::Ok, S::Error> {
        match hash {
            Some(hash) => serializer.serialize_some(&hash.to_hex()),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are typed inside the peer and plain text for front ends.
    #[test]
    fn ids_serialize_as_text() {
        let event = PeerEvent::DownloadCompleted {
            version_id: Hash([0xab; 32]),
            game_id: "q3".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "downloadCompleted");
        assert_eq!(json["versionId"], "ab".repeat(32));
        assert_eq!(json["gameId"], "q3");
    }
}
