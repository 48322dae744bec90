//! The lanspread desktop app: holds the peer runtime, forwards its events to
//! the UI and shuts it down on exit. Everything else lives in `lanspread-peer`.

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod events;
mod state;

#[cfg(test)]
mod bindings;
#[cfg(test)]
mod installer;

use std::time::Duration;

use tauri::{Emitter, Manager, RunEvent, WindowEvent};
use tauri_plugin_log::{RotationStrategy, Target, TargetKind};

use state::AppState;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The longest the app waits for the runtime to stop on exit.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The log file rolls over at this size; the last few are kept.
const LOG_FILE_BYTES: u128 = 5 << 20;
const LOG_FILES_KEPT: usize = 3;

fn main() {
    let app = tauri::Builder::default()
        .plugin(log_plugin())
        .plugin(tauri_plugin_dialog::init())
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_notification::init())
        .setup(|app| {
            let state = tauri::async_runtime::block_on(AppState::start(app.handle()))?;
            app.manage(state);
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing while others fetch a game only we have complete asks
            // first; "Quit anyway" (the `quit` command) exits as below.
            if let WindowEvent::CloseRequested { api, .. } = event {
                let Some(question) = window
                    .try_state::<AppState>()
                    .and_then(|state| state.quit_question())
                else {
                    return;
                };
                api.prevent_close();
                if let Err(e) = window.emit(events::QUIT_REQUESTED, question) {
                    tracing::warn!("cannot ask before quitting: {e}");
                }
            }
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
            commands::thumbnail,
            commands::play,
            commands::open_game_folder,
            commands::delete_game,
            commands::settings,
            commands::save_settings,
            commands::pick_games_folder,
            commands::open_log_folder,
            commands::lineups,
            commands::publish_lineup,
            commands::get_lineup,
            commands::ready_board,
            commands::ready_check,
            commands::last_copies,
            commands::game_mode,
            commands::quit,
        ])
        .build(tauri::generate_context!())
        .expect("the Tauri application could not be built");

    // Every way out (the last window closed, `quit`) passes here:
    // the runtime stops before the process ends.
    app.run(|app, event| {
        if matches!(event, RunEvent::ExitRequested { .. } | RunEvent::Exit) {
            if let Some(state) = app.try_state::<AppState>() {
                state.shutdown_once(EXIT_WAIT);
            }
        }
    });
}

/// Log to the terminal and to a file in the platform's log folder (the UI's
/// Services tab opens it). The peer logs with `tracing`, which forwards to
/// this logger because no tracing subscriber is set.
fn log_plugin<R: tauri::Runtime>() -> tauri::plugin::TauriPlugin<R> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    tauri_plugin_log::Builder::new()
        .clear_targets()
        .targets([
            Target::new(TargetKind::Stdout),
            Target::new(TargetKind::LogDir { file_name: None }),
        ])
        .level(level)
        // Per-packet chatter of the network stack is noise in a player's log.
        .level_for("quinn", log::LevelFilter::Warn)
        .level_for("quinn_proto", log::LevelFilter::Warn)
        .level_for("rustls", log::LevelFilter::Warn)
        .level_for("mdns_sd", log::LevelFilter::Warn)
        .max_file_size(LOG_FILE_BYTES)
        .rotation_strategy(RotationStrategy::KeepSome(LOG_FILES_KEPT))
        .build()
}
