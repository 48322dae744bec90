//! Forwarding of peer events to the UI.

use lanspread_peer::PeerEvent;
use tauri::{AppHandle, Emitter};
use tokio::sync::broadcast::{self, error::RecvError};

/// Every event, as one typed stream.
pub const PEER_EVENT: &str = "peer-event";
/// `RuntimeFailed`, additionally on its own channel so the UI can never miss it.
pub const PEER_RUNTIME_FAILED: &str = "peer-runtime-failed";

/// Forward events until the runtime drops its event channel.
pub fn forward(app: AppHandle, mut events: broadcast::Receiver<PeerEvent>) {
    tauri::async_runtime::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => emit(&app, &event),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the UI fell behind the peer's events");
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

fn emit(app: &AppHandle, event: &PeerEvent) {
    if let PeerEvent::RuntimeFailed { .. } = event {
        if let Err(e) = app.emit(PEER_RUNTIME_FAILED, event) {
            tracing::warn!("cannot emit {PEER_RUNTIME_FAILED}: {e}");
        }
    }
    if let Err(e) = app.emit(PEER_EVENT, event) {
        tracing::warn!("cannot emit {PEER_EVENT}: {e}");
    }
}
