//! Tauri commands: each converts its input, calls the peer and maps the result.

use lanspread_peer::download::DownloadInfo;
use lanspread_peer::games::GameActionError;
use lanspread_peer::peers::catalog::CatalogEntry;
use lanspread_peer::peers::diagnostics::Diagnostics;
use lanspread_peer::peers::PeerInfo;
use lanspread_peer::settings::Settings;
use lanspread_peer::HealthSnapshot;
use lanspread_proto::Hash;
use serde::Serialize;
use tauri::ipc::Response;
use tauri::{AppHandle, Manager, State};
use tauri_plugin_dialog::DialogExt;
use tauri_plugin_opener::OpenerExt;

use crate::state::{AppState, SettingsView};

/// What a failed command gives the UI: it branches on `code`.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct CommandError {
    code: String,
    message: String,
}

impl CommandError {
    fn new(code: impl Into<String>, message: impl ToString) -> Self {
        Self {
            code: code.into(),
            message: message.to_string(),
        }
    }
}

impl From<GameActionError> for CommandError {
    fn from(e: GameActionError) -> Self {
        Self::new(e.code(), e)
    }
}

type Reply<T> = Result<T, CommandError>;

/// Health of every runtime service.
#[tauri::command]
pub fn health(state: State<'_, AppState>) -> HealthSnapshot {
    state.peer().health()
}

#[tauri::command]
pub fn catalog(state: State<'_, AppState>) -> Vec<CatalogEntry> {
    state.peer().catalog()
}

#[tauri::command]
pub fn peers(state: State<'_, AppState>) -> Vec<PeerInfo> {
    state.peer().peers()
}

#[tauri::command]
pub fn downloads(state: State<'_, AppState>) -> Vec<DownloadInfo> {
    state.peer().downloads()
}

#[tauri::command]
pub fn diagnostics(state: State<'_, AppState>) -> Diagnostics {
    state.peer().diagnostics()
}

/// Start downloading a game id or version id; answers the version id.
#[tauri::command]
pub async fn download(state: State<'_, AppState>, target: String) -> Reply<String> {
    state
        .peer()
        .download(&target)
        .await
        .map(|v| v.to_hex())
        .map_err(|e| {
            let code = serde_json::to_value(e.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            CommandError::new(code, e.message)
        })
}

#[tauri::command]
pub async fn cancel_download(
    state: State<'_, AppState>,
    version_id: String,
    delete: bool,
) -> Reply<bool> {
    let version_id = Hash::from_hex(&version_id)
        .ok_or_else(|| CommandError::new("badVersionId", "not a version id"))?;
    Ok(state.peer().cancel_download(version_id, delete).await)
}

#[tauri::command]
pub async fn add_peer(state: State<'_, AppState>, address: String) -> Reply<()> {
    state
        .peer()
        .add_peer(&address)
        .await
        .map_err(|e| CommandError::new("addPeer", e))
}

/// A game's picture by its hash, as raw bytes (png, jpeg or webp).
#[tauri::command]
pub async fn thumbnail(state: State<'_, AppState>, hash: String) -> Reply<Response> {
    let picture = state
        .peer()
        .thumbnail(&hash)
        .await
        .ok_or_else(|| CommandError::new("notFound", "no peer has this picture"))?;
    Ok(Response::new(picture.bytes.to_vec()))
}

#[tauri::command]
pub fn play(state: State<'_, AppState>, game_id: String) -> Reply<()> {
    Ok(state.peer().launch_game(&game_id)?)
}

#[tauri::command]
pub fn open_game_folder(app: AppHandle, state: State<'_, AppState>, game_id: String) -> Reply<()> {
    let folder = state.peer().game_folder(&game_id)?;
    app.opener()
        .open_path(folder.display().to_string(), None::<&str>)
        .map_err(|e| CommandError::new("open", e))
}

#[tauri::command]
pub async fn delete_game(state: State<'_, AppState>, game_id: String) -> Reply<()> {
    Ok(state.peer().delete_game(&game_id).await?)
}

#[tauri::command]
pub fn settings(state: State<'_, AppState>) -> SettingsView {
    state.settings_view()
}

/// Save the settings; the runtime restarts when they need it.
#[tauri::command]
pub async fn save_settings(
    app: AppHandle,
    state: State<'_, AppState>,
    settings: Settings,
) -> Reply<SettingsView> {
    state
        .save_settings(&app, settings)
        .await
        .map_err(|e| CommandError::new("settings", format!("{e:#}")))?;
    Ok(state.settings_view())
}

/// Ask the player for a folder with the system dialog; `None` if cancelled.
#[tauri::command]
pub async fn pick_games_folder(app: AppHandle) -> Reply<Option<String>> {
    let picked = tauri::async_runtime::spawn_blocking(move || {
        app.dialog()
            .file()
            .set_title("Choose the folder for your games")
            .blocking_pick_folder()
    })
    .await
    .map_err(|e| CommandError::new("dialog", e))?;
    match picked {
        None => Ok(None),
        Some(path) => path
            .into_path()
            .map(|p| Some(p.display().to_string()))
            .map_err(|e| CommandError::new("dialog", e)),
    }
}

/// Open the folder holding the app's log file.
#[tauri::command]
pub fn open_log_folder(app: AppHandle) -> Reply<String> {
    let dir = app
        .path()
        .app_log_dir()
        .map_err(|e| CommandError::new("open", e))?;
    std::fs::create_dir_all(&dir).map_err(|e| CommandError::new("open", e))?;
    let shown = dir.display().to_string();
    app.opener()
        .open_path(shown.clone(), None::<&str>)
        .map_err(|e| CommandError::new("open", e))?;
    Ok(shown)
}
