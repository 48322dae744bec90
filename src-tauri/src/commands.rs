//! Tauri commands: each converts its input, calls the peer and maps the result.

use lanspread_peer::download::DownloadError;
use lanspread_peer::events::{
    CatalogEntry, Diagnostics, DownloadInfo, GameMode, LastCopy, Lineup, LineupFetch, PeerInfo,
    ReadyBoard,
};
use lanspread_peer::games::GameActionError;
use lanspread_peer::party::{LineupDraftEntry, PartyError};
use lanspread_peer::settings::Settings;
use lanspread_peer::{AddPeerError, FailureCode, HealthSnapshot, RuntimeStopped};
use lanspread_proto::{Hash, PeerId};
use serde::{Deserialize, Serialize};
use tauri::ipc::Response;
use tauri::{AppHandle, Manager, State};
use tauri_plugin_dialog::DialogExt;
use tauri_plugin_opener::OpenerExt;

use crate::state::{AppState, SettingsView};

/// What a failed command gives the UI: it branches on `code`.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct CommandError {
    code: FailureCode,
    message: String,
}

impl CommandError {
    fn new(code: FailureCode, message: impl ToString) -> Self {
        Self {
            code,
            message: message.to_string(),
        }
    }
}

impl From<GameActionError> for CommandError {
    fn from(e: GameActionError) -> Self {
        Self::new(e.code(), e)
    }
}

impl From<DownloadError> for CommandError {
    fn from(e: DownloadError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<AddPeerError> for CommandError {
    fn from(e: AddPeerError) -> Self {
        Self::new(e.code(), e)
    }
}

impl From<RuntimeStopped> for CommandError {
    fn from(e: RuntimeStopped) -> Self {
        Self::new(e.code(), e)
    }
}

/// One game of the lineup an organizer publishes, in its order.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct LineupDraft {
    version_id: String,
    /// When it is played, free text ("21:00"); at most 32 bytes.
    at: Option<String>,
}

impl From<PartyError> for CommandError {
    fn from(e: PartyError) -> Self {
        Self::new(e.code, e.message)
    }
}

fn peer_id(text: &str) -> Result<PeerId, CommandError> {
    PeerId::parse(text).ok_or_else(|| {
        CommandError::new(FailureCode::BadPeerId, format!("`{text}` is not a peer id"))
    })
}

fn version_id(hex: &str) -> Result<Hash, CommandError> {
    Hash::from_hex(hex).ok_or_else(|| {
        CommandError::new(
            FailureCode::BadVersionId,
            format!("`{hex}` is not a version id"),
        )
    })
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
    Ok(state.peer().download(&target).await?.to_hex())
}

#[tauri::command]
pub async fn cancel_download(
    state: State<'_, AppState>,
    version_id: String,
    delete: bool,
) -> Reply<bool> {
    let version_id = self::version_id(&version_id)?;
    Ok(state.peer().cancel_download(version_id, delete).await?)
}

#[tauri::command]
pub async fn add_peer(state: State<'_, AppState>, address: String) -> Reply<()> {
    Ok(state.peer().add_peer(&address).await?)
}

/// A game's picture by its hash, as raw bytes (png, jpeg or webp).
#[tauri::command]
pub async fn thumbnail(state: State<'_, AppState>, hash: String) -> Reply<Response> {
    let hash = Hash::from_hex(&hash).ok_or_else(|| {
        CommandError::new(
            FailureCode::BadVersionId,
            format!("`{hash}` is not a picture hash"),
        )
    })?;
    let picture = state
        .peer()
        .thumbnail(&hash)
        .await
        .ok_or_else(|| CommandError::new(FailureCode::NotFound, "no peer has this picture"))?;
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
        .map_err(|e| CommandError::new(FailureCode::Open, e))
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
        .map_err(|e| CommandError::new(FailureCode::InvalidSettings, format!("{e:#}")))?;
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
    .map_err(|e| CommandError::new(FailureCode::Dialog, e))?;
    match picked {
        None => Ok(None),
        Some(path) => path
            .into_path()
            .map(|p| Some(p.display().to_string()))
            .map_err(|e| CommandError::new(FailureCode::Dialog, e)),
    }
}

/// Open the folder holding the app's log file.
#[tauri::command]
pub fn open_log_folder(app: AppHandle) -> Reply<String> {
    let dir = app
        .path()
        .app_log_dir()
        .map_err(|e| CommandError::new(FailureCode::Open, e))?;
    std::fs::create_dir_all(&dir).map_err(|e| CommandError::new(FailureCode::Open, e))?;
    let shown = dir.display().to_string();
    app.opener()
        .open_path(shown.clone(), None::<&str>)
        .map_err(|e| CommandError::new(FailureCode::Open, e))?;
    Ok(shown)
}

/// Every lineup on the LAN, ours first.
#[tauri::command]
pub fn lineups(state: State<'_, AppState>) -> Vec<Lineup> {
    state.peer().lineups()
}

/// Publish our lineup, in order; an empty one withdraws it.
#[tauri::command]
pub fn publish_lineup(state: State<'_, AppState>, entries: Vec<LineupDraft>) -> Reply<Lineup> {
    let entries = entries
        .into_iter()
        .map(|entry| {
            Ok(LineupDraftEntry {
                version_id: version_id(&entry.version_id)?,
                at: entry.at,
            })
        })
        .collect::<Reply<Vec<_>>>()?;
    Ok(state.peer().publish_lineup(entries)?)
}

/// Queue every game of a lineup that we lack; no publisher: the first shown.
#[tauri::command]
pub async fn get_lineup(
    state: State<'_, AppState>,
    publisher: Option<String>,
) -> Reply<LineupFetch> {
    let publisher = publisher.as_deref().map(peer_id).transpose()?;
    Ok(state.peer().get_lineup(publisher).await?)
}

#[tauri::command]
pub fn ready_board(state: State<'_, AppState>) -> ReadyBoard {
    state.peer().ready_board()
}

/// Ask everyone to get a game of our lineup ready.
#[tauri::command]
pub fn ready_check(state: State<'_, AppState>, version_id: String) -> Reply<()> {
    let version_id = self::version_id(&version_id)?;
    Ok(state.peer().ready_check(version_id)?)
}

/// Games only we have complete while others fetch them.
#[tauri::command]
pub fn last_copies(state: State<'_, AppState>) -> Vec<LastCopy> {
    state.peer().last_copies()
}

#[tauri::command]
pub fn game_mode(state: State<'_, AppState>) -> GameMode {
    state.peer().game_mode()
}

/// Quit even while others fetch a last copy from us ("Quit anyway"); the
/// runtime stops as on any exit.
#[tauri::command]
pub fn quit(app: AppHandle, state: State<'_, AppState>) {
    state.confirm_quit();
    app.exit(0);
}
