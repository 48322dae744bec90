//! The app's managed state: the running peer and the settings it runs with.
//! Saving settings that a running peer cannot take restarts the runtime.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use lanspread_peer::settings::Settings;
use lanspread_peer::{start_peer, PeerConfig, PeerEvent, PeerRuntimeHandle};
use serde::Serialize;
use tauri::{AppHandle, Manager};
use tokio::sync::broadcast;

use crate::events::{self, QuitRequested};

/// What the settings screen shows.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub settings: Settings,
    /// No usable games folder chosen yet: the UI asks for one.
    pub first_run: bool,
    /// The folder the running peer shares.
    pub games_dir: String,
    /// Why the saved settings could not be used, if so.
    pub problem: Option<String>,
}

/// Set by scripted and end-to-end runs; each wins over the saved settings.
#[derive(Debug, Default)]
struct Overrides {
    games_dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    peers: Option<Vec<String>>,
    mdns_off: bool,
}

impl Overrides {
    /// `LANSPREAD_GAMES_DIR`, `LANSPREAD_LISTEN` (`addr:port`),
    /// `LANSPREAD_PEERS` (comma-separated `[id@]host:port`), `LANSPREAD_MDNS=0`.
    fn from_env() -> anyhow::Result<Self> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let listen = match env("LANSPREAD_LISTEN") {
            Some(listen) => Some(
                listen
                    .parse()
                    .with_context(|| format!("LANSPREAD_LISTEN={listen} is not an address"))?,
            ),
            None => None,
        };
        Ok(Self {
            games_dir: env("LANSPREAD_GAMES_DIR").map(PathBuf::from),
            listen,
            peers: env("LANSPREAD_PEERS")
                .map(|peers| peers.split(',').map(|p| p.trim().to_owned()).collect()),
            mdns_off: env("LANSPREAD_MDNS").as_deref() == Some("0"),
        })
    }
}

pub struct AppState {
    peer: RwLock<Arc<PeerRuntimeHandle>>,
    settings: Mutex<Settings>,
    problem: Mutex<Option<String>>,
    launcher: Launcher,
    /// Forwards the current runtime's events to the UI.
    relay: Arc<events::Relay>,
    /// One settings change at a time.
    restarting: tokio::sync::Mutex<()>,
    exiting: AtomicBool,
    /// "Quit anyway": closing no longer asks.
    quit_confirmed: AtomicBool,
}

impl AppState {
    /// Read the settings and start the peer with them.
    pub async fn start(app: &AppHandle) -> anyhow::Result<Self> {
        let data_dir = match std::env::var_os("LANSPREAD_DATA_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => dir.into(),
            None => app
                .path()
                .app_data_dir()
                .context("no application data folder on this system")?,
        };
        let default_games_dir = dirs::home_dir()
            .context("no home folder on this system")?
            .join("lanspread-games");
        let launcher = Launcher {
            data_dir,
            default_games_dir,
            overrides: Overrides::from_env()?,
        };
        let (settings, unreadable) = match Settings::load(&launcher.data_dir) {
            Ok(settings) => (settings.unwrap_or_default(), None),
            Err(e) => (Settings::default(), Some(e.to_string())),
        };
        let (peer, events, missing) = launcher.start(&settings).await?;
        let relay = Arc::new(events::Relay::default());
        relay.forward(app.clone(), events);
        Ok(Self {
            relay,
            peer: RwLock::new(Arc::new(peer)),
            settings: Mutex::new(settings),
            problem: Mutex::new(unreadable.or(missing)),
            launcher,
            restarting: tokio::sync::Mutex::new(()),
            exiting: AtomicBool::new(false),
            quit_confirmed: AtomicBool::new(false),
        })
    }

    /// The running peer. Hold it only for one command: a settings change
    /// replaces it.
    pub fn peer(&self) -> Arc<PeerRuntimeHandle> {
        self.peer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn settings_view(&self) -> SettingsView {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let problem = self
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SettingsView {
            // No folder chosen yet, or the saved settings could not be used
            // (unreadable, or their folder is gone): ask.
            first_run: (settings.games_dir.is_none() || problem.is_some())
                && self.launcher.overrides.games_dir.is_none(),
            games_dir: self.peer().games_dir().display().to_string(),
            problem,
            settings,
        }
    }

    /// What to ask before the window closes: the games others would lose
    /// their only complete source of. `None` once the player chose "Quit
    /// anyway", or while exiting.
    pub fn quit_question(&self) -> Option<QuitRequested> {
        if self.quit_confirmed.load(Ordering::SeqCst) || self.exiting.load(Ordering::SeqCst) {
            return None;
        }
        let last_copies = self.peer().last_copies();
        (!last_copies.is_empty()).then_some(QuitRequested { last_copies })
    }

    /// The player chose "Quit anyway".
    pub fn confirm_quit(&self) {
        self.quit_confirmed.store(true, Ordering::SeqCst);
    }

    /// Save `new`; apply the upload limit, "keep me ready" and the game-mode
    /// share at once, and restart the runtime for anything else that changed.
    pub async fn save_settings(&self, app: &AppHandle, new: Settings) -> anyhow::Result<()> {
        let _one_at_a_time = self.restarting.lock().await;
        if let Some(dir) = &new.games_dir {
            anyhow::ensure!(
                dir.is_dir(),
                "the games folder {} does not exist",
                dir.display()
            );
        }
        new.save(&self.launcher.data_dir)?;
        let old = std::mem::replace(
            &mut *self.settings.lock().unwrap_or_else(|e| e.into_inner()),
            new.clone(),
        );
        if !old.needs_restart(&new) {
            let peer = self.peer();
            peer.set_upload_limit(new.upload_limit);
            peer.set_keep_ready(new.keep_ready);
            peer.set_game_mode_upload_percent(new.game_mode_upload_percent);
            return Ok(());
        }
        let old_peer = self.peer();
        old_peer.shutdown();
        // Bounded by the runtime's own deadline; once it returns the port
        // is free for the new runtime.
        let report = old_peer.wait_stopped().await;
        if !report.stragglers.is_empty() {
            tracing::warn!(stragglers = ?report.stragglers, "the old runtime stopped late");
        }
        let ((peer, events, problem), outcome) = match self.launcher.start(&new).await {
            Ok(started) => (started, Ok(())),
            Err(e) => {
                // Never leave the app without a peer: go back to what ran.
                tracing::warn!("cannot start with the new settings: {e:#}; restoring the old ones");
                old.save(&self.launcher.data_dir)?;
                *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = old.clone();
                let started = self.launcher.start(&old).await?;
                (started, Err(e.context("the settings were not applied")))
            }
        };
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
        self.relay.forward(app.clone(), events);
        *self.peer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(peer);
        tracing::info!("peer runtime restarted");
        outcome
    }

    /// Stop the runtime on the first exit event and wait for it, at most
    /// `wait`; later exit events find the flag set and return.
    pub fn shutdown_once(&self, wait: Duration) {
        if self.exiting.swap(true, Ordering::SeqCst) {
            return;
        }
        let peer = self.peer();
        peer.shutdown();
        let stopped = tauri::async_runtime::block_on(async {
            tokio::time::timeout(wait, peer.wait_stopped()).await
        });
        match stopped {
            Ok(report) if report.stragglers.is_empty() => {
                tracing::info!("peer runtime stopped")
            }
            Ok(report) => {
                tracing::warn!(stragglers = ?report.stragglers, "not stopped by the deadline on exit")
            }
            Err(_) => tracing::warn!("peer runtime still stopping after {wait:?}; exiting anyway"),
        }
    }
}

/// What every start of the peer shares: the data folder, the default games
/// folder and the environment's overrides.
struct Launcher {
    data_dir: PathBuf,
    default_games_dir: PathBuf,
    overrides: Overrides,
}

impl Launcher {
    /// Start the peer with `settings` and the overrides; with it, its events
    /// from the very start and why a saved choice could not be used (see [`Settings::apply`]). Only the
    /// default games folder, or one given by the environment, is created.
    async fn start(
        &self,
        settings: &Settings,
    ) -> anyhow::Result<(
        PeerRuntimeHandle,
        broadcast::Receiver<PeerEvent>,
        Option<String>,
    )> {
        let (default_games_dir, overrides) = (&self.default_games_dir, &self.overrides);
        let mut config = PeerConfig::new(default_games_dir, &self.data_dir);
        let problem = settings.apply(&mut config);
        if let Some(dir) = &overrides.games_dir {
            config.games_dir = dir.clone();
        }
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(peers) = &overrides.peers {
            config.peers = peers.clone();
        }
        if overrides.mdns_off {
            config.mdns = false;
        }
        if config.games_dir == *default_games_dir || overrides.games_dir.is_some() {
            std::fs::create_dir_all(&config.games_dir).with_context(|| {
                format!(
                    "cannot create the games folder {}",
                    config.games_dir.display()
                )
            })?;
        }
        // A runtime that reported stopped has released its port already.
        let (peer, events) = start_peer(config).await?;
        Ok((peer, events, problem))
    }
}
