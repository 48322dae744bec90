//! Forwarding of peer events to the UI, and desktop notifications when a
//! download ends while the player looks elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use lanspread_peer::events::LastCopy;
use lanspread_peer::PeerEvent;
use lanspread_proto::VersionId;
use serde::Serialize;
use tauri::{AppHandle, Emitter};
use tauri_plugin_notification::NotificationExt;
use tokio::sync::broadcast::{self, error::RecvError};

/// Every event but `RuntimeFailed`, as one typed stream.
pub const PEER_EVENT: &str = "peer-event";
/// `RuntimeFailed`, and only it, on the channel the UI contract names for it.
pub const PEER_RUNTIME_FAILED: &str = "peer-runtime-failed";
/// The window was asked to close while others still fetch games only we
/// have complete: the UI asks whether to quit ([`QuitRequested`]).
pub const QUIT_REQUESTED: &str = "quit-requested";

/// Sent on `quit-requested`: the games others would lose their only
/// complete source of if the app quit now.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct QuitRequested {
    pub last_copies: Vec<LastCopy>,
}

/// Which runtime's events reach the UI: the latest one's only. When a
/// settings change restarts the runtime, the old runtime's forwarder and the
/// new one's run side by side for a moment, and the old one's last events
/// (its peers gone as it stopped) could reach the UI after the new one's
/// first catalog and stay on screen until the next change.
#[derive(Debug, Default)]
pub struct Relay {
    current: Mutex<u64>,
}

impl Relay {
    /// A new runtime's turn: the ones before it forward nothing more.
    fn begin(&self) -> u64 {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current += 1;
        *current
    }

    /// Held while one event goes out, if `generation` is still the latest:
    /// nothing of an older runtime goes out after a newer one began.
    fn admit(&self, generation: u64) -> Option<MutexGuard<'_, u64>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (*current == generation).then_some(current)
    }

    /// Forward `events` until their runtime drops its event channel or a
    /// newer runtime's events are forwarded.
    pub fn forward(self: &Arc<Self>, app: AppHandle, mut events: broadcast::Receiver<PeerEvent>) {
        let generation = self.begin();
        let relay = self.clone();
        tauri::async_runtime::spawn(async move {
            let mut titles = HashMap::new();
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let Some(_latest) = relay.admit(generation) else {
                            break;
                        };
                        emit(&app, &event);
                        notify(&app, &event, &mut titles);
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the UI fell behind the peer's events");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
}

/// Each event goes out on one channel. `RuntimeFailed` goes on
/// `peer-runtime-failed` only: that is the name the UI contract gives it and
/// the one the UI listens to for it; on both channels a UI listening to both
/// would fold every failure twice, and one listening to `peer-event` alone
/// would seem to work while ignoring the contract.
fn emit(app: &AppHandle, event: &PeerEvent) {
    let channel = match event {
        PeerEvent::RuntimeFailed { .. } => PEER_RUNTIME_FAILED,
        _ => PEER_EVENT,
    };
    if let Err(e) = app.emit(channel, event) {
        tracing::warn!("cannot emit {channel}: {e}");
    }
}

/// A notification when a download completes or fails. `titles` remembers
/// each download's title from its start, by version id.
fn notify(app: &AppHandle, event: &PeerEvent, titles: &mut HashMap<VersionId, String>) {
    let (title, body) = match event {
        PeerEvent::DownloadQueued {
            version_id, title, ..
        }
        | PeerEvent::DownloadStarted {
            version_id, title, ..
        } => {
            titles.insert(*version_id, title.clone());
            return;
        }
        PeerEvent::DownloadCompleted {
            version_id,
            game_id,
        } => {
            let name = titles.remove(version_id).unwrap_or_else(|| game_id.clone());
            (
                format!("{name} is ready"),
                "Downloaded and verified.".into(),
            )
        }
        PeerEvent::DownloadFailed {
            version_id,
            game_id,
            message,
            ..
        } => {
            let name = titles.remove(version_id).unwrap_or_else(|| game_id.clone());
            (format!("{name} failed to download"), message.clone())
        }
        _ => return,
    };
    // Showing talks to the desktop's notification service; keep that off
    // the event loop.
    let app = app.clone();
    tauri::async_runtime::spawn_blocking(move || {
        if let Err(e) = app.notification().builder().title(title).body(body).show() {
            tracing::debug!("no desktop notification: {e}");
        }
    });
}

#[cfg(test)]
mod relay_tests {
    use super::Relay;

    /// Once a newer runtime's forwarding began, an older one's events are
    /// held back for good.
    #[test]
    fn only_the_latest_runtime_reaches_the_ui() {
        let relay = Relay::default();
        let old = relay.begin();
        assert!(relay.admit(old).is_some());
        let new = relay.begin();
        assert!(relay.admit(old).is_none(), "the old runtime is held back");
        assert!(relay.admit(new).is_some());
    }
}
