//! The party: tonight's lineup, the ready board, ready checks, game mode and
//! the last-copy check.
//!
//! Everything here is built from what the control plane already carries:
//! each peer's game list (complete and partial) and its record, whose
//! [`PeerStatus`] says which lineup it publishes, which games it plays and
//! how far its lineup downloads are. A lineup itself is fetched from its
//! publisher (`GetLineup`) when its status names a newer one. Nobody polls
//! anybody: the board is redrawn from the directory when news arrives.
//!
//! The lineup we publish lives in `lineup.toml` in the data folder, written
//! by the app or by `lanspread-peer lineup set`, and read again within a
//! tick after it changes, so a running `serve` publishes what the CLI set.
//! The `party` service (policy `Restart`: it keeps nothing the directory
//! and that file do not hold) runs [`Party::step`] every [`TICK`] after
//! news, every [`IDLE_TICK`] without.

pub mod board;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lanspread_proto::wire::{
    DownloadStatus, PeerStatus, WireLineup, WireLineupEntry, WireReadyCheck, MAX_LINEUP_AT_BYTES,
    MAX_LINEUP_ENTRIES, MAX_STATUS_DOWNLOADS, MAX_STATUS_PLAYING,
};
use lanspread_proto::{GameSummary, Hash, PeerId, VersionId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use self::board::{BoardEntry, PeerFacts};
use crate::download::Engine;
use crate::events::{
    CatalogEntry, DownloadState, EventSink, FailureCode, GameMode, LastCopy, Lineup, LineupEntry,
    LineupFetch, PeerEvent, ReadyBoard, ReadyCheck, ReadyState,
};
use crate::net::limiter::UploadLimiter;
use crate::offer::Offer;
use crate::peers::membership::next_version;
use crate::peers::PeerDirectory;
use crate::supervisor::ServiceContext;

/// The lineup we publish, in the data folder.
pub const LINEUP_FILE: &str = "lineup.toml";
/// How often the party looks at its news: at most two boards a second.
pub const TICK: Duration = Duration::from_millis(500);
/// How often it looks with no news (no event since the last look): for
/// `lineup.toml` written by another process and a game's process that
/// ended. Each look is a wake-up, and an idle peer's CPU is mostly those.
pub const IDLE_TICK: Duration = Duration::from_secs(1);
/// A status change that is only progress waits this long after the last
/// one told: every change is one record to the whole party.
pub const STATUS_MIN_GAP: Duration = Duration::from_secs(2);
/// The rate a ready check's estimate assumes before this peer downloaded
/// anything: a busy gigabit LAN's share for one player.
pub const TYPICAL_LAN_RATE: u64 = 30_000_000;
/// What game mode takes its share of when there is no upload limit: about
/// a gigabit link.
pub const GAME_MODE_NOMINAL_UPLOAD: u64 = 100_000_000;
/// Seeding while a game runs, in percent of the upload limit.
pub const DEFAULT_GAME_MODE_UPLOAD_PERCENT: u32 = 10;

/// One game of a lineup to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineupDraftEntry {
    pub version_id: VersionId,
    /// When it is played ("21:00"), at most [`MAX_LINEUP_AT_BYTES`].
    pub at: Option<String>,
}

/// Why a party command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PartyError {
    pub code: FailureCode,
    pub message: String,
}

impl PartyError {
    fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// `lineup.toml`: what we publish. `game` is a game id (the newest version
/// we have, or the LAN's most shared) or a version id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineupFile {
    /// The lineup's version: the clock in milliseconds when it was set.
    pub version: u64,
    #[serde(default)]
    pub games: Vec<LineupFileEntry>,
    pub ready_check: Option<LineupFileCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineupFileEntry {
    pub game: String,
    pub at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineupFileCheck {
    pub version_id: String,
    pub id: u64,
}

impl LineupFile {
    /// The lineup in `data_dir`; `Ok(None)` when there is none.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, String> {
        let path = data_dir.join(LINEUP_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let file: Self =
            toml::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        file.check()?;
        Ok(Some(file))
    }

    /// Within the wire's bounds.
    pub fn check(&self) -> Result<(), String> {
        if self.games.len() > MAX_LINEUP_ENTRIES {
            return Err(format!(
                "{} games in the lineup (at most {MAX_LINEUP_ENTRIES})",
                self.games.len()
            ));
        }
        for entry in &self.games {
            if entry
                .at
                .as_ref()
                .is_some_and(|at| at.len() > MAX_LINEUP_AT_BYTES)
            {
                return Err(format!(
                    "the time of {} is over {MAX_LINEUP_AT_BYTES} bytes",
                    entry.game
                ));
            }
            if entry.game.is_empty() || entry.game.len() > lanspread_proto::path::MAX_GAME_ID_LEN {
                return Err(format!("`{}` is not a game id or version id", entry.game));
            }
        }
        Ok(())
    }

    /// Write it to `data_dir` at once (a temporary file renamed over).
    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        let path = data_dir.join(LINEUP_FILE);
        let temp = data_dir.join(format!("{LINEUP_FILE}.tmp"));
        let text = format!(
            "# Tonight's lineup, published by the peer that uses this data folder.\n{}",
            toml::to_string_pretty(self).expect("a lineup serializes to TOML")
        );
        std::fs::create_dir_all(data_dir)
            .and_then(|()| std::fs::write(&temp, text))
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| format!("cannot save {}: {e}", path.display()))
    }

    /// A new lineup of `games` (`game[@time]` each) replacing the one in
    /// `data_dir`, with a newer version. What `lineup set` writes.
    pub fn replace(data_dir: &Path, games: Vec<LineupFileEntry>) -> Result<Self, String> {
        let old = Self::load(data_dir).ok().flatten().unwrap_or_default();
        let file = Self {
            version: next_version(old.version),
            games,
            ready_check: None,
        };
        file.check()?;
        file.save(data_dir)?;
        Ok(file)
    }
}

/// `GAME[@TIME]` as the CLI takes it.
pub fn parse_lineup_arg(arg: &str) -> LineupFileEntry {
    match arg.split_once('@') {
        Some((game, at)) if !at.trim().is_empty() => LineupFileEntry {
            game: game.trim().to_owned(),
            at: Some(at.trim().to_owned()),
        },
        _ => LineupFileEntry {
            game: arg.trim_end_matches('@').trim().to_owned(),
            at: None,
        },
    }
}

/// What the party is built from; the runtime wires it.
pub(crate) struct PartyParts {
    pub data_dir: PathBuf,
    pub display_name: String,
    pub organizer: bool,
    pub party_key: bool,
    pub keep_ready: bool,
    pub game_mode_upload_percent: u32,
    pub upload_limit: u64,
    pub limiter: Arc<UploadLimiter>,
    pub directory: Arc<PeerDirectory>,
    pub offer: Arc<Offer>,
    pub engine: Arc<Engine>,
    pub events: EventSink,
}

/// The party's state, shared by the service and the handle.
pub struct Party {
    data_dir: PathBuf,
    /// Our name on our own lineup and our row of the board.
    display_name: String,
    organizer: bool,
    party_key: bool,
    keep_ready: AtomicBool,
    game_mode_percent: AtomicU32,
    /// The upload limit the player set (0: none); game mode lowers the
    /// limiter below it while a game runs.
    base_upload: AtomicU64,
    limiter: Arc<UploadLimiter>,
    directory: Arc<PeerDirectory>,
    offer: Arc<Offer>,
    engine: Arc<Engine>,
    events: EventSink,
    // A std Mutex: bookkeeping under it, never an await.
    state: Mutex<State>,
    /// Told when a command changed something the next step must see.
    poke: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// `lineup.toml` as last read, and its modification time and length.
    file: Option<LineupFile>,
    file_stamp: Option<(SystemTime, u64)>,
    /// What we publish now (resolved from the file).
    published: Option<WireLineup>,
    /// Our lineup downloads' progress: bytes done, total, seconds left.
    progress: BTreeMap<VersionId, (u64, u64, Option<u64>)>,
    /// The best rate a download of ours reached, for ready-check estimates.
    best_rate: f64,
    /// Ready checks already told: (publisher, id).
    seen_checks: HashSet<(PeerId, u64)>,
    lineups: Vec<Lineup>,
    board: Option<ReadyBoard>,
    game_mode: Option<GameMode>,
    status_told: Option<Instant>,
    /// Something "keep me ready" acts on changed (a lineup, the catalog).
    fetch_due: bool,
}

/// What "ours" is made of for the board: our offer and our status.
struct Ours {
    games: Vec<GameSummary>,
    status: PeerStatus,
}

impl Party {
    pub(crate) fn new(parts: PartyParts) -> Self {
        Self {
            data_dir: parts.data_dir,
            display_name: parts.display_name,
            organizer: parts.organizer,
            party_key: parts.party_key,
            keep_ready: AtomicBool::new(parts.keep_ready),
            game_mode_percent: AtomicU32::new(parts.game_mode_upload_percent.clamp(1, 100)),
            base_upload: AtomicU64::new(parts.upload_limit),
            limiter: parts.limiter,
            directory: parts.directory,
            offer: parts.offer,
            engine: parts.engine,
            events: parts.events,
            state: Mutex::default(),
            poke: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May we publish (and call ready checks)? Under a party key only as
    /// an organizer.
    fn may_publish(&self) -> Result<(), PartyError> {
        if self.party_key && !self.organizer {
            return Err(PartyError::new(
                FailureCode::NotOrganizer,
                "this party has a key: only a peer started as organizer publishes a lineup",
            ));
        }
        Ok(())
    }

    /// Whether we take a lineup from another peer: under a party key only
    /// an organizer's.
    fn accepts(&self, lineup: &WireLineup) -> bool {
        !self.party_key || lineup.organizer
    }

    pub fn set_keep_ready(&self, keep: bool) {
        self.keep_ready.store(keep, Ordering::SeqCst);
        self.state().fetch_due = true;
        self.poke.notify_one();
    }

    pub fn set_game_mode_upload_percent(&self, percent: u32) {
        self.game_mode_percent
            .store(percent.clamp(1, 100), Ordering::SeqCst);
        self.state().game_mode = None;
        self.poke.notify_one();
    }

    /// The upload limit the player set; game mode applies below it.
    pub fn set_upload_limit(&self, bytes_per_sec: u64) {
        self.base_upload.store(bytes_per_sec, Ordering::SeqCst);
        self.state().game_mode = None;
        self.apply_game_mode();
    }

    /// Publish `entries` as our lineup (empty: withdraw it). Each version
    /// must be ours or listed on the LAN.
    pub fn publish(&self, entries: Vec<LineupDraftEntry>) -> Result<Lineup, PartyError> {
        self.may_publish()?;
        if entries.len() > MAX_LINEUP_ENTRIES {
            return Err(PartyError::new(
                FailureCode::BadLineup,
                format!("a lineup has at most {MAX_LINEUP_ENTRIES} games"),
            ));
        }
        let catalog = self.directory.catalog();
        let ours = self.offer.summaries();
        let mut games = Vec::new();
        for entry in entries {
            if entry
                .at
                .as_ref()
                .is_some_and(|at| at.len() > MAX_LINEUP_AT_BYTES)
            {
                return Err(PartyError::new(
                    FailureCode::BadLineup,
                    format!("a time is at most {MAX_LINEUP_AT_BYTES} bytes"),
                ));
            }
            if game_of_version(&entry.version_id, &ours, &catalog).is_none() {
                return Err(PartyError::new(
                    FailureCode::NotFound,
                    format!(
                        "no game of version {} on the LAN",
                        entry.version_id.to_hex()
                    ),
                ));
            }
            games.push(LineupFileEntry {
                game: entry.version_id.to_hex(),
                at: entry
                    .at
                    .map(|at| at.trim().to_owned())
                    .filter(|at| !at.is_empty()),
            });
        }
        let file = LineupFile::replace(&self.data_dir, games)
            .map_err(|e| PartyError::new(FailureCode::Io, e))?;
        {
            let mut state = self.state();
            state.file_stamp = None;
            state.file = Some(file);
        }
        self.publish_own();
        self.poke.notify_one();
        Ok(self
            .lineups()
            .into_iter()
            .find(|l| l.ours)
            .unwrap_or_else(|| self.empty_own_lineup()))
    }

    fn empty_own_lineup(&self) -> Lineup {
        Lineup {
            publisher: self.directory.our_id().clone(),
            publisher_name: self.display_name.clone(),
            ours: true,
            organizer: self.organizer,
            present: true,
            version: 0,
            entries: Vec::new(),
        }
    }

    /// Ask everyone to get `version_id` (a game of our lineup) ready.
    pub fn ready_check(&self, version_id: VersionId) -> Result<(), PartyError> {
        self.may_publish()?;
        let mut state = self.state();
        let in_lineup = state
            .published
            .as_ref()
            .is_some_and(|l| l.entries.iter().any(|e| e.version_id == version_id));
        let Some(file) = state.file.as_mut().filter(|_| in_lineup) else {
            return Err(PartyError::new(
                FailureCode::BadLineup,
                "a ready check is for a game of the lineup this peer publishes",
            ));
        };
        let last = file.ready_check.as_ref().map_or(0, |c| c.id);
        file.ready_check = Some(LineupFileCheck {
            version_id: version_id.to_hex(),
            id: next_version(last),
        });
        file.version = next_version(file.version);
        let saved = file.save(&self.data_dir);
        state.file_stamp = None;
        drop(state);
        saved.map_err(|e| PartyError::new(FailureCode::Io, e))?;
        self.publish_own();
        self.poke.notify_one();
        Ok(())
    }

    /// Every lineup we know: ours first, then organizers', present ones,
    /// newest first.
    pub fn lineups(&self) -> Vec<Lineup> {
        let catalog = self.directory.catalog();
        let ours = self.ours();
        let mut wire: Vec<(PeerId, String, bool, bool, WireLineup)> = Vec::new();
        if let Some(published) = self.state().published.clone() {
            wire.push((
                self.directory.our_id().clone(),
                self.display_name.clone(),
                true,
                true,
                published,
            ));
        }
        self.directory.party_view(|peers| {
            for (id, p) in peers {
                if let Some(lineup) = p.lineup.as_ref().filter(|l| self.accepts(l)) {
                    let present = p.present();
                    let name = p.info.display_name.clone();
                    wire.push((id.clone(), name, false, present, lineup.clone()));
                }
            }
        });
        let mut lineups: Vec<Lineup> = wire
            .into_iter()
            .filter(|(.., l)| !l.entries.is_empty())
            .map(|(publisher, publisher_name, is_ours, present, wire)| {
                let entries = wire
                    .entries
                    .iter()
                    .map(|e| {
                        let listed = catalog.iter().find(|c| c.version_id == e.version_id);
                        let entry = board_entry(e, &catalog);
                        LineupEntry {
                            version_id: e.version_id,
                            game_id: e.game_id.clone(),
                            title: entry.title.clone(),
                            at: e.at.clone(),
                            total_size: listed.map_or(0, |c| c.total_size),
                            state: own_state(&ours, self.directory.our_id(), &entry),
                        }
                    })
                    .collect();
                Lineup {
                    publisher,
                    publisher_name,
                    ours: is_ours,
                    organizer: wire.organizer,
                    present,
                    version: wire.version,
                    entries,
                }
            })
            .collect();
        lineups.sort_by(|a, b| {
            b.ours
                .cmp(&a.ours)
                .then(b.organizer.cmp(&a.organizer))
                .then(b.present.cmp(&a.present))
                .then(b.version.cmp(&a.version))
        });
        lineups
    }

    /// The board of the lineup shown first (see [`Self::lineups`]).
    pub fn ready_board(&self) -> ReadyBoard {
        let lineups = self.lineups();
        self.board_of(lineups.first())
    }

    fn board_of(&self, lineup: Option<&Lineup>) -> ReadyBoard {
        let Some(lineup) = lineup else {
            return ReadyBoard {
                publisher: None,
                games: Vec::new(),
            };
        };
        let entries: Vec<BoardEntry> = lineup
            .entries
            .iter()
            .map(|e| BoardEntry {
                version_id: e.version_id,
                game_id: e.game_id.clone(),
                title: e.title.clone(),
                at: e.at.clone(),
            })
            .collect();
        let ours = self.ours();
        let our_id = self.directory.our_id().clone();
        self.directory.party_view(|peers| {
            let mut facts = present_facts(peers);
            facts.push(PeerFacts {
                peer_id: &our_id,
                name: &self.display_name,
                us: true,
                games: &ours.games,
                status: Some(&ours.status),
            });
            board::board(Some(lineup.publisher.clone()), &entries, &facts)
        })
    }

    /// Our complete games that only we have while present peers fetch them.
    pub fn last_copies(&self) -> Vec<LastCopy> {
        let ours = self.offer.summaries();
        self.directory
            .party_view(|peers| board::last_copies(&ours, &present_facts(peers)))
    }

    pub fn game_mode(&self) -> GameMode {
        self.current_game_mode()
    }

    /// Queue every game of `publisher`'s lineup (or the one shown first)
    /// that we neither have nor fetch.
    pub async fn fetch_lineup(
        &self,
        publisher: Option<&PeerId>,
    ) -> Result<LineupFetch, PartyError> {
        let lineups = self.lineups();
        let lineup = match publisher {
            Some(id) => lineups.iter().find(|l| l.publisher == *id),
            None => lineups.first(),
        }
        .ok_or_else(|| PartyError::new(FailureCode::NotFound, "no such lineup on the LAN"))?;
        let mut fetch = LineupFetch {
            queued: Vec::new(),
            already: 0,
            unavailable: Vec::new(),
            failed: Vec::new(),
        };
        let downloading: HashSet<VersionId> = self
            .engine
            .downloads()
            .iter()
            .map(|d| d.version_id)
            .collect();
        for entry in &lineup.entries {
            let have = matches!(entry.state, ReadyState::Ready | ReadyState::Playing);
            if have || downloading.contains(&entry.version_id) {
                fetch.already += 1;
                continue;
            }
            match self.engine.start(&entry.version_id.to_hex()).await {
                Ok(version_id) => fetch.queued.push(version_id),
                Err(e) if e.code == FailureCode::AlreadyInstalled => fetch.already += 1,
                Err(e) if e.code == FailureCode::NotFound => {
                    fetch.unavailable.push(entry.game_id.clone())
                }
                Err(e) => fetch.failed.push(format!("{}: {}", entry.title, e.message)),
            }
        }
        Ok(fetch)
    }

    /// Ours, as the board sees it.
    fn ours(&self) -> Ours {
        Ours {
            games: self.offer.summaries(),
            status: self.directory.own_status(),
        }
    }

    fn current_game_mode(&self) -> GameMode {
        let games = self.engine.running().running();
        let base = self.base_upload.load(Ordering::SeqCst);
        let of = if base == 0 {
            GAME_MODE_NOMINAL_UPLOAD
        } else {
            base
        };
        let percent = u64::from(self.game_mode_percent.load(Ordering::SeqCst));
        GameMode {
            active: !games.is_empty(),
            games,
            upload_cap: (of * percent / 100).max(1),
        }
    }

    /// Set the limiter for game mode (or back to the player's limit), and
    /// tell the front ends when it changed.
    fn apply_game_mode(&self) {
        let mode = self.current_game_mode();
        let mut state = self.state();
        if state.game_mode.as_ref() == Some(&mode) {
            return;
        }
        let base = self.base_upload.load(Ordering::SeqCst);
        let rate = if mode.active { mode.upload_cap } else { base };
        self.limiter.set_rate(rate);
        let was_active = state.game_mode.as_ref().is_some_and(|m| m.active);
        state.game_mode = Some(mode.clone());
        drop(state);
        if mode.active || was_active {
            tracing::info!(active = mode.active, games = ?mode.games, cap = mode.upload_cap, "game mode");
            self.events
                .emit(PeerEvent::GameModeChanged { game_mode: mode });
        }
    }

    /// Read `lineup.toml` again when it changed on disk.
    fn reload_file(&self) {
        let path = self.data_dir.join(LINEUP_FILE);
        let stamp = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp == self.state().file_stamp {
            return;
        }
        let file = match LineupFile::load(&self.data_dir) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!("lineup not published: {e}");
                None
            }
        };
        let mut state = self.state();
        state.file_stamp = stamp;
        state.file = file;
    }

    /// Resolve the file into what we publish; a game not yet known is
    /// published once it is. A change raises the lineup's version.
    fn publish_own(&self) {
        let file = self.state().file.clone();
        let resolved = match file {
            Some(file) if !file.games.is_empty() => {
                if let Err(e) = self.may_publish() {
                    tracing::warn!("{LINEUP_FILE} not published: {e}");
                    None
                } else {
                    Some(self.resolve(&file))
                }
            }
            _ => None,
        };
        let mut state = self.state();
        let published = match (resolved, state.published.take()) {
            (None, _) => None,
            (Some(mut new), Some(old)) => {
                let same = old.entries == new.entries && old.ready_check == new.ready_check;
                new.version = if same {
                    old.version
                } else {
                    new.version.max(old.version + 1)
                };
                Some(new)
            }
            (Some(new), None) => Some(new),
        };
        state.published = published.clone();
        drop(state);
        if self.directory.own_lineup() != published {
            self.directory.set_own_lineup(published);
        }
    }

    fn resolve(&self, file: &LineupFile) -> WireLineup {
        let catalog = self.directory.catalog();
        let ours = self.offer.summaries();
        let entries = file
            .games
            .iter()
            .filter_map(|entry| {
                let (version_id, game_id) = match Hash::from_hex(&entry.game) {
                    Some(version_id) => {
                        (version_id, game_of_version(&version_id, &ours, &catalog)?)
                    }
                    None => (
                        newest_version(&entry.game, &ours, &catalog)?,
                        entry.game.clone(),
                    ),
                };
                Some(WireLineupEntry {
                    version_id,
                    game_id,
                    at: entry.at.clone(),
                })
            })
            .collect();
        let ready_check = file.ready_check.as_ref().and_then(|check| {
            Some(WireReadyCheck {
                version_id: Hash::from_hex(&check.version_id)?,
                id: check.id,
            })
        });
        WireLineup {
            version: file.version,
            organizer: self.organizer,
            entries,
            ready_check,
        }
    }

    /// Our status as it should be told now.
    fn own_status(&self, lineups: &[Lineup]) -> PeerStatus {
        let in_lineups: HashSet<VersionId> = lineups
            .iter()
            .flat_map(|l| l.entries.iter().map(|e| e.version_id))
            .collect();
        let state = self.state();
        let mut downloads: Vec<DownloadStatus> = self
            .engine
            .downloads()
            .into_iter()
            .filter(|d| in_lineups.contains(&d.version_id))
            .map(|d| {
                let progress = state.progress.get(&d.version_id).copied();
                let (done, total, eta) = progress.unwrap_or((0, 0, None));
                DownloadStatus {
                    version_id: d.version_id,
                    permille: if d.state == DownloadState::Queued {
                        0
                    } else {
                        board::status_permille(done, total)
                    },
                    eta_secs: eta.map(|e| e.min(u64::from(u32::MAX)) as u32),
                }
            })
            .collect();
        downloads.truncate(MAX_STATUS_DOWNLOADS);
        let mut playing = self.engine.running().running();
        playing.truncate(MAX_STATUS_PLAYING);
        PeerStatus {
            lineup: state.published.as_ref().map_or(0, |l| l.version),
            organizer: self.organizer,
            playing,
            downloads,
        }
    }

    /// Tell the party our status when it changed: at once when it is more
    /// than progress, else at most every [`STATUS_MIN_GAP`].
    fn tell_status(&self, status: PeerStatus, now: Instant) {
        let told = self.directory.own_status();
        if told == status {
            return;
        }
        let only_progress = told.lineup == status.lineup
            && told.playing == status.playing
            && told.organizer == status.organizer
            && told.downloads.len() == status.downloads.len()
            && told
                .downloads
                .iter()
                .zip(&status.downloads)
                .all(|(a, b)| a.version_id == b.version_id);
        let mut state = self.state();
        if only_progress
            && state
                .status_told
                .is_some_and(|at| now - at < STATUS_MIN_GAP)
        {
            return;
        }
        state.status_told = Some(now);
        drop(state);
        self.directory.set_own_status(status);
    }

    /// Ready checks in the lineups we take that we have not told yet.
    fn new_ready_checks(&self, lineups: &[Lineup]) -> Vec<ReadyCheck> {
        let mut checks = Vec::new();
        let wire: Vec<(PeerId, String, WireReadyCheck)> = self.directory.party_view(|peers| {
            peers
                .filter_map(|(id, p)| {
                    let lineup = p.lineup.as_ref().filter(|l| self.accepts(l))?;
                    Some((
                        id.clone(),
                        p.info.display_name.clone(),
                        lineup.ready_check.clone()?,
                    ))
                })
                .collect()
        });
        let rate = {
            let state = self.state();
            if state.best_rate > 0.0 {
                state.best_rate
            } else {
                TYPICAL_LAN_RATE as f64
            }
        };
        for (publisher, publisher_name, check) in wire {
            if !self
                .state()
                .seen_checks
                .insert((publisher.clone(), check.id))
            {
                continue;
            }
            let entry = lineups
                .iter()
                .filter(|l| l.publisher == publisher)
                .flat_map(|l| &l.entries)
                .find(|e| e.version_id == check.version_id);
            let Some(entry) = entry else { continue };
            let bytes_needed = match entry.state {
                ReadyState::Ready | ReadyState::Playing => 0,
                _ => {
                    let done = self
                        .state()
                        .progress
                        .get(&entry.version_id)
                        .map_or(0, |p| p.0);
                    entry.total_size.saturating_sub(done)
                }
            };
            checks.push(ReadyCheck {
                publisher,
                publisher_name,
                version_id: entry.version_id,
                game_id: entry.game_id.clone(),
                title: entry.title.clone(),
                bytes_needed,
                eta_secs: (bytes_needed as f64 / rate).ceil() as u64,
                state: entry.state,
            });
        }
        checks
    }

    /// Take what an event says about our own downloads.
    fn handle_event(&self, event: &PeerEvent) {
        let mut state = self.state();
        match event {
            PeerEvent::DownloadProgress {
                version_id,
                bytes_done,
                bytes_total,
                bytes_per_sec,
                eta_secs,
                ..
            } => {
                state
                    .progress
                    .insert(*version_id, (*bytes_done, *bytes_total, *eta_secs));
                state.best_rate = state.best_rate.max(*bytes_per_sec);
            }
            PeerEvent::DownloadCompleted { version_id, .. }
            | PeerEvent::DownloadFailed { version_id, .. }
            | PeerEvent::DownloadCancelled { version_id, .. }
            | PeerEvent::DownloadPeersGone { version_id, .. } => {
                state.progress.remove(version_id);
                state.fetch_due = true;
            }
            PeerEvent::CatalogChanged { .. } | PeerEvent::LibraryChanged { .. } => {
                state.fetch_due = true;
            }
            _ => {}
        }
    }

    /// One look at everything: our lineup, game mode, our status, the
    /// lineups, the board, ready checks, and "keep me ready".
    pub(crate) async fn step(&self, now: Instant) {
        self.reload_file();
        self.publish_own();
        self.apply_game_mode();
        let lineups = self.lineups();
        self.tell_status(self.own_status(&lineups), now);
        let board = self.board_of(lineups.first());
        let checks = self.new_ready_checks(&lineups);
        let (lineups_changed, board_changed, fetch) = {
            let mut state = self.state();
            let lineups_changed = state.lineups != lineups;
            if lineups_changed {
                state.lineups = lineups.clone();
                state.fetch_due = true;
            }
            let board_changed = state.board.as_ref() != Some(&board);
            if board_changed {
                state.board = Some(board.clone());
            }
            let keep = self.keep_ready.load(Ordering::SeqCst);
            let fetch = keep && (std::mem::take(&mut state.fetch_due) || !checks.is_empty());
            (lineups_changed, board_changed, fetch)
        };
        if lineups_changed {
            self.events.emit(PeerEvent::LineupChanged {
                lineups: lineups.clone(),
            });
        }
        if board_changed {
            self.events.emit(PeerEvent::ReadyBoardChanged { board });
        }
        for check in checks {
            tracing::info!(game = %check.game_id, by = %check.publisher_name, "ready check");
            self.events.emit(PeerEvent::ReadyCheck { check });
        }
        let followed = lineups.first().filter(|l| !l.ours);
        if let (true, Some(lineup)) = (fetch, followed) {
            match self.fetch_lineup(Some(&lineup.publisher)).await {
                Ok(fetch) if !fetch.queued.is_empty() => {
                    tracing::info!(
                        queued = fetch.queued.len(),
                        "keeping ready: lineup games queued"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("keeping ready: {e}"),
            }
        }
    }
}

/// What the board needs of each present peer.
fn present_facts<'c, 'a: 'c, 'b: 'c>(
    peers: &mut dyn Iterator<Item = (&'a PeerId, &'b crate::peers::RemotePeer)>,
) -> Vec<PeerFacts<'c>> {
    peers
        .filter(|(_, p)| p.present())
        .map(|(id, p)| PeerFacts {
            peer_id: id,
            name: &p.info.display_name,
            us: false,
            games: &p.games,
            status: p.status.as_ref(),
        })
        .collect()
}

/// The game id of `version_id`: ours, or as the LAN lists it.
fn game_of_version(
    version_id: &VersionId,
    ours: &[GameSummary],
    catalog: &[CatalogEntry],
) -> Option<String> {
    ours.iter()
        .find(|g| g.version_id == *version_id)
        .map(|g| g.game_id.clone())
        .or_else(|| {
            catalog
                .iter()
                .find(|c| c.version_id == *version_id)
                .map(|c| c.game_id.clone())
        })
}

/// The version a game id names in a lineup: the one we have complete,
/// else the LAN's most shared.
fn newest_version(
    game_id: &str,
    ours: &[GameSummary],
    catalog: &[CatalogEntry],
) -> Option<VersionId> {
    ours.iter()
        .find(|g| g.game_id == game_id && g.complete)
        .map(|g| g.version_id)
        .or_else(|| {
            catalog
                .iter()
                .filter(|c| c.game_id == game_id && !c.sources.is_empty())
                .max_by_key(|c| c.sources.len())
                .map(|c| c.version_id)
        })
}

fn board_entry(entry: &WireLineupEntry, catalog: &[CatalogEntry]) -> BoardEntry {
    let title = catalog
        .iter()
        .find(|c| c.version_id == entry.version_id)
        .map_or_else(|| entry.game_id.clone(), |c| c.title.clone());
    BoardEntry {
        version_id: entry.version_id,
        game_id: entry.game_id.clone(),
        title,
        at: entry.at.clone(),
    }
}

fn own_state(ours: &Ours, our_id: &PeerId, entry: &BoardEntry) -> ReadyState {
    let facts = PeerFacts {
        peer_id: our_id,
        name: "",
        us: true,
        games: &ours.games,
        status: Some(&ours.status),
    };
    board::state_of(&facts, entry).0
}

/// The party service: a step every [`TICK`] after news (every
/// [`IDLE_TICK`] without), and events folded in between.
pub async fn run(ctx: ServiceContext, party: Arc<Party>) -> anyhow::Result<()> {
    let mut events = party.events.subscribe();
    let mut next_step = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = ctx.token().cancelled() => return Ok(()),
            event = events.recv() => {
                match event {
                    Ok(event) => party.handle_event(&event),
                    Err(RecvError::Lagged(_)) => party.state().fetch_due = true,
                    Err(RecvError::Closed) => anyhow::bail!("the event channel closed"),
                }
                next_step = next_step.min(Instant::now() + TICK);
            }
            () = tokio::time::sleep_until(next_step) => {
                ctx.heartbeat();
                party.step(Instant::now()).await;
                next_step = Instant::now() + IDLE_TICK;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineup_args_take_an_optional_time() {
        assert_eq!(
            parse_lineup_arg("quake3@21:00"),
            LineupFileEntry {
                game: "quake3".into(),
                at: Some("21:00".into())
            }
        );
        assert_eq!(
            parse_lineup_arg("openarena"),
            LineupFileEntry {
                game: "openarena".into(),
                at: None
            }
        );
        assert_eq!(parse_lineup_arg("ut@").at, None);
    }

    #[test]
    fn a_lineup_file_replaced_gets_a_newer_version_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LineupFile::load(dir.path()).unwrap(), None);
        let first = LineupFile::replace(dir.path(), vec![parse_lineup_arg("q3@21:00")]).unwrap();
        let second = LineupFile::replace(dir.path(), vec![parse_lineup_arg("ut")]).unwrap();
        assert!(second.version > first.version);
        assert_eq!(LineupFile::load(dir.path()).unwrap(), Some(second));
        let long = "x".repeat(MAX_LINEUP_AT_BYTES + 1);
        let refused =
            LineupFile::replace(dir.path(), vec![parse_lineup_arg(&format!("q3@{long}"))]);
        assert!(refused.is_err());
        std::fs::write(dir.path().join(LINEUP_FILE), "games = 3").unwrap();
        assert!(LineupFile::load(dir.path()).is_err());
    }
}
