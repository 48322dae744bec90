//! The lanspread desktop app: holds the peer runtime, forwards its events to
//! the UI and shuts it down on exit. Everything else lives in `lanspread-peer`.

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod events;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use lanspread_peer::{start_peer, PeerConfig, PeerRuntimeHandle};
use tauri::{Manager, RunEvent};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The longest the app waits for the runtime to stop on exit.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Tauri managed state: the running peer.
pub struct AppState {
    pub peer: PeerRuntimeHandle,
    exiting: AtomicBool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let app = tauri::Builder::default()
        .setup(|app| {
            let config = peer_config(app.handle())?;
            let peer = tauri::async_runtime::block_on(start_peer(config))?;
            events::forward(app.handle().clone(), peer.subscribe());
            app.manage(AppState {
                peer,
                exiting: AtomicBool::new(false),
            });
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::health,
            commands::catalog,
            commands::peers,
            commands::downloads,
            commands::diagnostics,
            commands::download,
            commands::cancel_download,
            commands::add_peer,
        ])
        .build(tauri::generate_context!())
        .expect("the Tauri application could not be built");

    app.run(|app, event| {
        if matches!(event, RunEvent::ExitRequested { .. } | RunEvent::Exit) {
            shutdown_once(app);
        }
    });
}

/// Stop the runtime on the first exit event and wait for it, at most
/// [`EXIT_WAIT`]; later exit events find the flag set and return.
fn shutdown_once(app: &tauri::AppHandle) {
    let Some(state) = app.try_state::<AppState>() else {
        return;
    };
    if state.exiting.swap(true, Ordering::SeqCst) {
        return;
    }
    state.peer.shutdown();
    let stopped = tauri::async_runtime::block_on(async {
        tokio::time::timeout(EXIT_WAIT, state.peer.wait_stopped()).await
    });
    match stopped {
        Ok(report) if report.stuck_services.is_empty() => tracing::info!("peer runtime stopped"),
        Ok(report) => tracing::warn!(services = ?report.stuck_services, "aborted on exit"),
        Err(_) => tracing::warn!("peer runtime still stopping after {EXIT_WAIT:?}; exiting anyway"),
    }
}

/// The runtime's configuration. Environment variables override the defaults,
/// for scripted and end-to-end runs: `LANSPREAD_GAMES_DIR`,
/// `LANSPREAD_DATA_DIR`, `LANSPREAD_LISTEN` (`addr:port`), `LANSPREAD_PEERS`
/// (comma-separated `[id@]host:port`), `LANSPREAD_MDNS=0`.
fn peer_config(app: &tauri::AppHandle) -> anyhow::Result<PeerConfig> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let data_dir = match env("LANSPREAD_DATA_DIR") {
        Some(dir) => dir.into(),
        None => app
            .path()
            .app_data_dir()
            .context("no application data folder on this system")?,
    };
    let games_dir = match env("LANSPREAD_GAMES_DIR") {
        Some(dir) => dir.into(),
        None => dirs::home_dir()
            .context("no home folder on this system")?
            .join("lanspread-games"),
    };
    std::fs::create_dir_all(&games_dir)
        .with_context(|| format!("cannot create the games folder {}", games_dir.display()))?;
    let mut config = PeerConfig::new(games_dir, data_dir);
    if let Some(listen) = env("LANSPREAD_LISTEN") {
        config.listen = listen
            .parse()
            .with_context(|| format!("LANSPREAD_LISTEN={listen} is not an address"))?;
    }
    if let Some(peers) = env("LANSPREAD_PEERS") {
        config.peers = peers.split(',').map(|p| p.trim().to_owned()).collect();
    }
    if env("LANSPREAD_MDNS").as_deref() == Some("0") {
        config.mdns = false;
    }
    Ok(config)
}
