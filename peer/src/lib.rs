//! The lanspread peer runtime.
//!
//! [`start_peer`] starts a supervised tokio runtime that shares a folder of
//! games and talks to other peers; the returned [`PeerRuntimeHandle`] is the
//! only way in (commands) and out (events, health, shutdown). Both front ends,
//! the desktop app and the headless `lanspread-peer`, drive it the same way.
//!
//! This crate knows nothing of any UI toolkit; it only speaks in
//! [`PeerEvent`]s. Its layers, lowest first (no module imports one above
//! it): `events` (the front-end contract, a leaf), `config`/`settings`,
//! `store`, `fsx`; `library`; `offer` (what we serve); `net` (the server
//! answers from `offer`) and `peers`; `download` (registers in `offer`);
//! `supervisor`, `tasks`, `health`; `runtime` on top.

pub mod config;
pub mod download;
pub mod events;
pub mod fsx;
pub mod games;
pub mod health;
pub mod library;
pub mod net;
pub mod offer;
pub mod party;
pub mod peers;
pub mod runtime;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod tasks;

#[cfg(test)]
mod portability_tests;

pub use config::PeerConfig;
pub use events::{EventSink, FailureCode, HealthSnapshot, PeerEvent, ServiceHealth, ServiceState};
pub use runtime::{
    start_peer, AddPeerError, PeerCommand, PeerCommandSender, PeerRuntimeHandle, RuntimeStopped,
    StartError, StopReport,
};
pub use supervisor::{Backoff, BackoffState, ServiceContext, SupervisionPolicy};
