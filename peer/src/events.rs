//! The events a running peer reports. This is the contract with every front
//! end: the desktop UI receives these (serialized as tagged camelCase JSON) and
//! `lanspread-peer --json` prints them one per line.

use serde::Serialize;

use crate::health::ServiceHealth;
use crate::peers::catalog::CatalogEntry;
use crate::peers::PeerInfo;

/// Everything the runtime tells the outside world.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
}
