//! The events a running peer reports. This is the contract with every front
//! end: the desktop UI receives these (serialized as tagged camelCase JSON) and
//! `lanspread-peer --json` prints them one per line.

use serde::Serialize;

use crate::download::{DownloadCode, SourceRate};
use crate::health::ServiceHealth;
use crate::peers::catalog::CatalogEntry;
use crate::peers::PeerInfo;

/// Everything the runtime tells the outside world.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
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
    PeerLost { peer_id: String, reason: String },
    /// The LAN catalog changed; the whole new catalog.
    CatalogChanged { catalog: Vec<CatalogEntry> },
    /// A download waits for a free slot (see the parallel downloads setting).
    DownloadQueued {
        version_id: String,
        game_id: String,
        title: String,
    },
    /// A download has its manifest and staging folder and starts fetching.
    DownloadStarted {
        version_id: String,
        game_id: String,
        title: String,
        bytes_total: u64,
    },
    /// At most four per second per download.
    DownloadProgress {
        version_id: String,
        game_id: String,
        bytes_done: u64,
        bytes_total: u64,
        bytes_per_sec: f64,
        eta_secs: Option<u64>,
        sources: Vec<SourceRate>,
    },
    /// Every piece verified; the game is installed.
    DownloadCompleted { version_id: String, game_id: String },
    DownloadFailed {
        version_id: String,
        game_id: String,
        code: DownloadCode,
        message: String,
    },
    /// Cancelled; its staging data stays for a resume unless deleted.
    DownloadCancelled { version_id: String, game_id: String },
    /// Every source is gone; the staging data stays for a resume.
    DownloadPeersGone { version_id: String, game_id: String },
    /// A source sent too many pieces that failed verification and is no
    /// longer used for this download.
    SourceBanned {
        version_id: String,
        peer_id: String,
        reason: String,
    },
}
