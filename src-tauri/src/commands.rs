//! Tauri commands: each converts its input, calls the peer and maps the result.

use lanspread_peer::download::DownloadInfo;
use lanspread_peer::peers::catalog::CatalogEntry;
use lanspread_peer::peers::diagnostics::Diagnostics;
use lanspread_peer::peers::PeerInfo;
use lanspread_peer::HealthSnapshot;
use lanspread_proto::Hash;
use serde::Serialize;
use tauri::State;

use crate::AppState;

/// What a failed command gives the UI: it branches on `code`.
#[derive(Debug, Serialize)]
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

type Reply<T> = Result<T, CommandError>;

/// Health of every runtime service.
#[tauri::command]
pub fn health(state: State<'_, AppState>) -> HealthSnapshot {
    state.peer.health()
}

#[tauri::command]
pub fn catalog(state: State<'_, AppState>) -> Vec<CatalogEntry> {
    state.peer.catalog()
}

#[tauri::command]
pub fn peers(state: State<'_, AppState>) -> Vec<PeerInfo> {
    state.peer.peers()
}

#[tauri::command]
pub fn downloads(state: State<'_, AppState>) -> Vec<DownloadInfo> {
    state.peer.downloads()
}

#[tauri::command]
pub fn diagnostics(state: State<'_, AppState>) -> Diagnostics {
    state.peer.diagnostics()
}

/// Start downloading a game id or version id; answers the version id.
#[tauri::command]
pub async fn download(state: State<'_, AppState>, target: String) -> Reply<String> {
    state
        .peer
        .download(&target)
        .await
        .map(|v| v.to_hex())
        .map_err(|e| CommandError::new(format!("{:?}", e.code), e.message))
}

#[tauri::command]
pub async fn cancel_download(
    state: State<'_, AppState>,
    version_id: String,
    delete: bool,
) -> Reply<bool> {
    let version_id = Hash::from_hex(&version_id)
        .ok_or_else(|| CommandError::new("badVersionId", "not a version id"))?;
    Ok(state.peer.cancel_download(version_id, delete).await)
}

#[tauri::command]
pub async fn add_peer(state: State<'_, AppState>, address: String) -> Reply<()> {
    state
        .peer
        .add_peer(&address)
        .await
        .map_err(|e| CommandError::new("addPeer", e))
}
