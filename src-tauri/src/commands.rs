//! Tauri commands: each converts its input, calls the peer and maps the result.

use lanspread_peer::HealthSnapshot;
use tauri::State;

use crate::AppState;

/// Health of every runtime service.
#[tauri::command]
pub fn health(state: State<'_, AppState>) -> HealthSnapshot {
    state.peer.health()
}
