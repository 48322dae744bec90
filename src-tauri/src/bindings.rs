//! The TypeScript the UI imports for everything the shell sends it,
//! generated from the Rust types. The test fails when `ui/src/bindings.ts`
//! is stale; `LANSPREAD_WRITE_BINDINGS=1 cargo test -p lanspread bindings`
//! rewrites it.

use std::path::Path;

use lanspread_peer::events::{
    AddressReport, BoardGame, BoardPeer, CatalogEntry, Diagnostics, DownloadInfo, DownloadState,
    FailureCode, FirewallReport, GameMode, InterfaceReport, LastCopy, Lineup, LineupEntry,
    LineupFetch, NameConflict, NetworkProfile, PeerEvent, PeerInfo, PeerState, ReadyBoard,
    ReadyCheck, ReadyState, ServiceHealth, ServiceState, Source, SourceRate, UdpBuffers,
};
use lanspread_peer::settings::Settings;
use ts_rs::{Config, TS};

use crate::commands::{CommandError, LineupDraft};
use crate::events::QuitRequested;
use crate::state::SettingsView;

fn declaration<T: TS>(cfg: &Config) -> String {
    let docs = T::docs().unwrap_or_default();
    format!("{docs}export {}\n", T::decl(cfg))
}

fn generate() -> String {
    // Sizes and counts stay far below 2^53: plain numbers, not bigints.
    let cfg = Config::new().with_large_int("number");
    let declarations = [
        declaration::<PeerEvent>(&cfg),
        declaration::<ServiceState>(&cfg),
        declaration::<ServiceHealth>(&cfg),
        declaration::<CatalogEntry>(&cfg),
        declaration::<NameConflict>(&cfg),
        declaration::<PeerInfo>(&cfg),
        declaration::<PeerState>(&cfg),
        declaration::<Source>(&cfg),
        declaration::<SourceRate>(&cfg),
        declaration::<FailureCode>(&cfg),
        declaration::<DownloadInfo>(&cfg),
        declaration::<DownloadState>(&cfg),
        declaration::<Diagnostics>(&cfg),
        declaration::<InterfaceReport>(&cfg),
        declaration::<AddressReport>(&cfg),
        declaration::<UdpBuffers>(&cfg),
        declaration::<NetworkProfile>(&cfg),
        declaration::<FirewallReport>(&cfg),
        declaration::<Lineup>(&cfg),
        declaration::<LineupEntry>(&cfg),
        declaration::<ReadyState>(&cfg),
        declaration::<ReadyBoard>(&cfg),
        declaration::<BoardGame>(&cfg),
        declaration::<BoardPeer>(&cfg),
        declaration::<ReadyCheck>(&cfg),
        declaration::<GameMode>(&cfg),
        declaration::<LastCopy>(&cfg),
        declaration::<LineupFetch>(&cfg),
        declaration::<LineupDraft>(&cfg),
        declaration::<QuitRequested>(&cfg),
        declaration::<Settings>(&cfg),
        declaration::<SettingsView>(&cfg),
        declaration::<CommandError>(&cfg),
    ];
    format!(
        "// Generated from the Rust types by src-tauri/src/bindings.rs; do not edit.\n\n{}",
        declarations.join("\n")
    )
}

#[test]
fn bindings_are_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/bindings.ts");
    let generated = generate();
    if std::env::var_os("LANSPREAD_WRITE_BINDINGS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "{} is stale: run `LANSPREAD_WRITE_BINDINGS=1 cargo test -p lanspread bindings`",
        path.display()
    );
}
