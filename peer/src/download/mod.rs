//! The download engine: many sources at once, every piece verified before it
//! counts, progress persisted as pieces land, cancellable between pieces, and
//! installed by one rename only when every piece verified.

pub mod scheduler;
pub mod staging;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanspread_proto::wire::{ErrorCode, Request, Response};
use lanspread_proto::{Hash, Layout, Manifest, VersionId};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::PeerEvent;
use crate::library::metadata::GameMetadata;
use crate::library::monitor::Library;
use crate::library::LocalGame;
use crate::net::client::{PeerConnection, RequestError};
use crate::net::identity::PeerId;
use crate::peers::PeerDirectory;
use crate::store::{FileStamp, Store};
use scheduler::{PieceScheduler, PieceSet, Verdict};
use staging::staging_root;

/// Request streams per source: one, and a second for a source measured
/// faster than [`FAST_SOURCE`] (while one stream's pieces are read off the
/// wire the next request is on its way). A slow, rate-capped source gets one:
/// more would only spread its upload over more pieces at once, and a party
/// swarms faster when each piece finishes sooner.
const MAX_STREAMS_PER_SOURCE: usize = 2;
const FAST_SOURCE: f64 = 32.0 * 1024.0 * 1024.0;
/// Pieces per request: about half a second of data at the source's measured
/// rate, within these bounds.
const MIN_BATCH: usize = 1;
const START_BATCH: usize = 2;
const MAX_BATCH: usize = lanspread_proto::wire::MAX_PIECES_PER_REQUEST;
/// Pieces received and waiting to be verified and written, at most. With
/// pieces of at most 16 MiB this bounds a download's buffers whatever the
/// game's size.
const MAX_PENDING_WRITES: usize = 4;
/// How long a download waits for a first source before giving up.
const FIRST_SOURCE_WAIT: Duration = Duration::from_secs(15);
/// How long a download goes on with no source at all before it ends with
/// `DownloadPeersGone`. Liveness has declared them lost already; this covers
/// a peer that is dialled again at once (a blip, not a departure).
const NO_SOURCE_GRACE: Duration = Duration::from_secs(4);
/// Progress events per download, at most one per this interval (4 per second).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Source set and have-sets are refreshed this often.
const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// Written data is flushed to disk in the background this often, so the
/// final flush before install has little left to do (large writes also
/// start their own writeback at once: see [`staging::write_piece`]).
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Error codes of `DownloadFailed`, for the UI to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub enum DownloadCode {
    NotFound,
    AlreadyInstalled,
    NoSpace,
    PermissionDenied,
    GamesDirMissing,
    DestinationExists,
    BadManifest,
    Io,
}

/// Why a download could not start or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DownloadError {
    pub code: DownloadCode,
    pub message: String,
}

impl DownloadError {
    fn new(code: DownloadCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn io(what: &str, e: std::io::Error) -> Self {
        let code = match e.kind() {
            std::io::ErrorKind::StorageFull => DownloadCode::NoSpace,
            std::io::ErrorKind::PermissionDenied => DownloadCode::PermissionDenied,
            std::io::ErrorKind::NotFound => DownloadCode::GamesDirMissing,
            _ => DownloadCode::Io,
        };
        let hint = match code {
            DownloadCode::NoSpace => "; free some space, the download resumes where it stopped",
            DownloadCode::PermissionDenied => "; check the games folder's permissions",
            DownloadCode::GamesDirMissing => "; the games folder is gone",
            _ => "",
        };
        Self::new(code, format!("{what}: {e}{hint}"))
    }
}

/// One source's share of a download's progress.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct SourceRate {
    pub peer_id: String,
    pub bytes_per_sec: f64,
}

/// A download as the UI lists it.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct DownloadInfo {
    pub version_id: String,
    pub game_id: String,
    pub title: String,
    pub state: DownloadState,
}

/// Whether a listed download runs or waits for a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub enum DownloadState {
    Queued,
    Running,
}

/// A download in progress whose verified pieces other peers may fetch.
pub struct Partial {
    /// The staging folder dressed as a game: `root` is the staging root.
    pub game: LocalGame,
    // A std Mutex: set/test one bit under it.
    have: Mutex<PieceSet>,
    /// The pieces this download is fetching now, kept by its scheduler.
    fetching: Arc<Mutex<PieceSet>>,
}

impl Partial {
    pub fn has(&self, piece: usize) -> bool {
        self.have
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(piece)
    }

    pub fn have_set(&self) -> PieceSet {
        self.have.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn fetching_set(&self) -> PieceSet {
        self.fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The downloads in progress, by version, for the server to serve from.
#[derive(Default)]
pub struct DownloadRegistry {
    // A std Mutex: map lookups only.
    partials: Mutex<HashMap<VersionId, Arc<Partial>>>,
}

impl DownloadRegistry {
    pub fn get(&self, version_id: &VersionId) -> Option<Arc<Partial>> {
        self.lock().get(version_id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partial>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VersionId, Arc<Partial>>> {
        self.partials.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Job {
    version_id: VersionId,
    game_id: String,
    title: String,
    manifest: Option<Manifest>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Job>,
    running: HashMap<VersionId, (CancellationToken, DownloadInfo)>,
    delete_on_cancel: HashSet<VersionId>,
}

/// The download engine, shared by the runtime.
pub struct Engine {
    pub games_dir: PathBuf,
    pub store: Arc<Store>,
    pub library: Arc<Library>,
    pub directory: Arc<PeerDirectory>,
    pub events: broadcast::Sender<PeerEvent>,
    pub registry: Arc<DownloadRegistry>,
    pub tasks: TaskTracker,
    pub token: CancellationToken,
    pub parallel: usize,
    queue: Mutex<Queue>,
}

enum End {
    Completed,
    Cancelled,
    PeersGone,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        games_dir: PathBuf,
        store: Arc<Store>,
        library: Arc<Library>,
        directory: Arc<PeerDirectory>,
        events: broadcast::Sender<PeerEvent>,
        tasks: TaskTracker,
        token: CancellationToken,
        parallel: usize,
        registry: Arc<DownloadRegistry>,
    ) -> Self {
        Self {
            games_dir,
            store,
            library,
            directory,
            events,
            registry,
            tasks,
            token,
            parallel: parallel.max(1),
            queue: Mutex::default(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue the download of `target`: a game id or a version id (hex).
    pub fn start(self: &Arc<Self>, target: &str) -> Result<VersionId, DownloadError> {
        let catalog = self.directory.catalog();
        let by_version = catalog.iter().find(|e| e.version_id == target);
        let entry = by_version.or_else(|| {
            catalog
                .iter()
                .filter(|e| e.game_id == target && !e.sources.is_empty() && !e.installed)
                .max_by_key(|e| e.sources.len())
        });
        let Some(entry) = entry else {
            let installed = catalog.iter().any(|e| e.game_id == target && e.installed);
            return Err(if installed {
                DownloadError::new(
                    DownloadCode::AlreadyInstalled,
                    format!("`{target}` is installed and no other version is on the LAN"),
                )
            } else {
                DownloadError::new(
                    DownloadCode::NotFound,
                    format!("no game `{target}` on the LAN"),
                )
            });
        };
        if entry.installed {
            return Err(DownloadError::new(
                DownloadCode::AlreadyInstalled,
                format!("{} is installed already", entry.title),
            ));
        }
        let version_id = Hash::from_hex(&entry.version_id).expect("catalog holds hex ids");
        self.enqueue(Job {
            version_id,
            game_id: entry.game_id.clone(),
            title: entry.title.clone(),
            manifest: None,
        });
        Ok(version_id)
    }

    /// Queue the downloads that were running or queued when we stopped.
    pub fn resume_saved(self: &Arc<Self>) {
        match self.store.downloads_in(&["running", "queued"]) {
            Ok(saved) => {
                for (version_id, game_id, manifest) in saved {
                    tracing::info!(game = %game_id, "resuming download");
                    self.enqueue(Job {
                        version_id,
                        title: game_id.clone(),
                        game_id,
                        manifest: Some(manifest),
                    });
                }
            }
            Err(e) => tracing::warn!("cannot read saved downloads: {e}"),
        }
    }

    fn enqueue(self: &Arc<Self>, job: Job) {
        {
            let mut queue = self.queue();
            // A download still winding down after a cancel may be queued
            // again; it starts once the old run has let go (see `pump`).
            let running = queue
                .running
                .get(&job.version_id)
                .is_some_and(|(token, _)| !token.is_cancelled());
            let waiting = queue.waiting.iter().any(|j| j.version_id == job.version_id);
            if running || waiting {
                return;
            }
            queue.delete_on_cancel.remove(&job.version_id);
            self.emit(PeerEvent::DownloadQueued {
                version_id: job.version_id.to_hex(),
                game_id: job.game_id.clone(),
                title: job.title.clone(),
            });
            queue.waiting.push_back(job);
        }
        self.pump();
    }

    /// Start waiting downloads while there are free slots.
    fn pump(self: &Arc<Self>) {
        loop {
            let (job, token) = {
                let mut queue = self.queue();
                if queue.running.len() >= self.parallel || self.token.is_cancelled() {
                    return;
                }
                // The first waiting job whose version is not still running.
                let Some(at) = queue
                    .waiting
                    .iter()
                    .position(|j| !queue.running.contains_key(&j.version_id))
                else {
                    return;
                };
                let job = queue.waiting.remove(at).expect("index from position");
                let token = self.token.child_token();
                let info = DownloadInfo {
                    version_id: job.version_id.to_hex(),
                    game_id: job.game_id.clone(),
                    title: job.title.clone(),
                    state: DownloadState::Running,
                };
                queue.running.insert(job.version_id, (token.clone(), info));
                (job, token)
            };
            let guard = RunningGuard {
                engine: self.clone(),
                version_id: job.version_id,
            };
            let engine = self.clone();
            self.tasks.spawn(async move {
                engine.run(job, token).await;
                drop(guard);
            });
        }
    }

    /// Cancel a download (running or queued). With `delete`, its staging data
    /// goes too, also of a paused download; otherwise it stays for a later
    /// resume.
    pub fn cancel(self: &Arc<Self>, version_id: &VersionId, delete: bool) -> bool {
        let mut queue = self.queue();
        if delete {
            queue.delete_on_cancel.insert(*version_id);
        }
        if let Some((token, _)) = queue.running.get(version_id) {
            token.cancel();
            return true;
        }
        let Some(at) = queue
            .waiting
            .iter()
            .position(|j| j.version_id == *version_id)
        else {
            // Neither running nor waiting: a paused download. Discarding it
            // removes what it had downloaded.
            queue.delete_on_cancel.remove(version_id);
            drop(queue);
            if !delete {
                return false;
            }
            let had_staging = staging_root(&self.games_dir, version_id).exists();
            self.delete_staging(version_id);
            return had_staging;
        };
        let job = queue.waiting.remove(at).expect("index from position");
        drop(queue);
        self.emit(PeerEvent::DownloadCancelled {
            version_id: version_id.to_hex(),
            game_id: job.game_id,
        });
        let _ = self.store.set_download_state(version_id, "cancelled");
        if delete {
            self.delete_staging(version_id);
        }
        true
    }

    fn delete_staging(&self, version_id: &VersionId) {
        let _ = self.store.forget_download(version_id);
        let root = staging_root(&self.games_dir, version_id);
        if let Err(e) = std::fs::remove_dir_all(&root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot delete {}: {e}", root.display());
            }
        }
    }

    pub fn downloads(&self) -> Vec<DownloadInfo> {
        let queue = self.queue();
        let mut list: Vec<DownloadInfo> = queue.running.values().map(|(_, i)| i.clone()).collect();
        list.extend(queue.waiting.iter().map(|j| DownloadInfo {
            version_id: j.version_id.to_hex(),
            game_id: j.game_id.clone(),
            title: j.title.clone(),
            state: DownloadState::Queued,
        }));
        list
    }

    fn emit(&self, event: PeerEvent) {
        let _ = self.events.send(event);
    }

    async fn run(self: &Arc<Self>, job: Job, token: CancellationToken) {
        let (version_id, game_id) = (job.version_id.to_hex(), job.game_id.clone());
        let outcome = self.download(job, &token).await;
        let vid = Hash::from_hex(&version_id).expect("hex");
        match outcome {
            Ok(End::Completed) => {
                let _ = self.store.forget_download(&vid);
                self.emit(PeerEvent::DownloadCompleted {
                    version_id,
                    game_id,
                });
            }
            Ok(End::Cancelled) => {
                let delete = self.queue().delete_on_cancel.remove(&vid);
                if delete {
                    self.registry.lock().remove(&vid);
                    self.delete_staging(&vid);
                } else {
                    let _ = self.store.set_download_state(&vid, "cancelled");
                }
                self.emit(PeerEvent::DownloadCancelled {
                    version_id,
                    game_id,
                });
            }
            Ok(End::PeersGone) => {
                let _ = self.store.set_download_state(&vid, "stalled");
                self.emit(PeerEvent::DownloadPeersGone {
                    version_id,
                    game_id,
                });
            }
            Err(e) => {
                let _ = self.store.set_download_state(&vid, "failed");
                tracing::warn!(game = %game_id, "download failed: {e}");
                self.emit(PeerEvent::DownloadFailed {
                    version_id,
                    game_id,
                    code: e.code,
                    message: e.message,
                });
            }
        }
    }

    async fn download(
        self: &Arc<Self>,
        job: Job,
        token: &CancellationToken,
    ) -> Result<End, DownloadError> {
        let vid = job.version_id;
        let manifest = match job.manifest {
            Some(m) => m,
            None => match self.fetch_manifest(&vid, token).await? {
                Some(m) => m,
                None if token.is_cancelled() => return Ok(End::Cancelled),
                None => return Ok(End::PeersGone),
            },
        };
        manifest.validate().map_err(|e| {
            DownloadError::new(DownloadCode::BadManifest, format!("bad manifest: {e}"))
        })?;
        if !self.games_dir.is_dir() {
            return Err(DownloadError::new(
                DownloadCode::GamesDirMissing,
                format!("the games folder {} is gone", self.games_dir.display()),
            ));
        }
        self.store
            .save_download(&vid, &job.game_id, &manifest, "running")
            .map_err(|e| DownloadError::new(DownloadCode::Io, e.to_string()))?;
        let manifest = Arc::new(manifest);
        let layout = Arc::new(manifest.layout());
        let root = staging_root(&self.games_dir, &vid);
        let old = self
            .library
            .snapshot()
            .get(&job.game_id)
            .filter(|g| g.version_id != vid)
            .cloned();
        let have = {
            let (engine, manifest, layout, root) =
                (self.clone(), manifest.clone(), layout.clone(), root.clone());
            tokio::task::spawn_blocking(move || {
                engine.prepare(&vid, &root, &manifest, &layout, old)
            })
            .await
            .map_err(|e| DownloadError::new(DownloadCode::Io, e.to_string()))??
        };
        let total = manifest.total_size();
        self.emit(PeerEvent::DownloadStarted {
            version_id: vid.to_hex(),
            game_id: job.game_id.clone(),
            title: job.title.clone(),
            bytes_total: total,
        });
        let partial = Arc::new(Partial {
            game: LocalGame {
                id: job.game_id.clone(),
                root: root.clone(),
                metadata: GameMetadata::fallback(&job.game_id),
                manifest: manifest.clone(),
                version_id: vid,
                total_size: total,
                thumbnail: None,
            },
            have: Mutex::new(have.clone()),
            fetching: Arc::new(Mutex::new(PieceSet::empty(have.len()))),
        });
        self.registry.lock().insert(vid, partial.clone());
        self.library.offer_changed();

        let end = self
            .swarm(
                &job.game_id,
                vid,
                &manifest,
                &layout,
                &root,
                have,
                &partial,
                token,
            )
            .await?;
        if !matches!(end, End::Completed) {
            return Ok(end);
        }
        let engine = self.clone();
        let (manifest, game_id) = (manifest.clone(), job.game_id.clone());
        let installed =
            tokio::task::spawn_blocking(move || engine.install(&game_id, vid, &root, manifest))
                .await
                .map_err(|e| DownloadError::new(DownloadCode::Io, e.to_string()))??;
        self.registry.lock().remove(&vid);
        self.library.publish_game(installed);
        Ok(End::Completed)
    }

    /// Ask sources for the manifest until one gives the right one.
    async fn fetch_manifest(
        &self,
        vid: &VersionId,
        token: &CancellationToken,
    ) -> Result<Option<Manifest>, DownloadError> {
        let deadline = Instant::now() + FIRST_SOURCE_WAIT;
        while Instant::now() < deadline && !token.is_cancelled() {
            for (_, conn, _) in self.directory.sources_of(vid) {
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    conn.request(&Request::GetManifest { version_id: *vid }),
                )
                .await;
                if let Ok(Ok(Response::Manifest(m))) = answer {
                    if m.version_id() == *vid {
                        return Ok(Some(*m));
                    }
                    tracing::warn!(peer = %conn.peer_id, "sent a manifest that is not the version asked for");
                }
            }
            tokio::select! {
                biased;
                _ = token.cancelled() => return Ok(None),
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
            }
        }
        Ok(None)
    }

    /// Blocking: check space, create the staging files, re-verify pieces
    /// recorded earlier, and copy pieces an older installed version has.
    fn prepare(
        &self,
        vid: &VersionId,
        root: &std::path::Path,
        manifest: &Manifest,
        layout: &Layout,
        old: Option<Arc<LocalGame>>,
    ) -> Result<PieceSet, DownloadError> {
        let total = manifest.total_size();
        if !root.exists() {
            let available = fs4::statvfs(&self.games_dir)
                .map_err(|e| DownloadError::io("cannot read free space", e))?
                .available_space();
            if available < total {
                return Err(DownloadError::new(
                    DownloadCode::NoSpace,
                    format!(
                        "needs {} MiB, {} MiB free in {}",
                        total >> 20,
                        available >> 20,
                        self.games_dir.display()
                    ),
                ));
            }
        }
        staging::prepare(root, manifest)
            .map_err(|e| DownloadError::io("cannot prepare the download", e))?;
        let mut have = PieceSet::empty(manifest.n_pieces());
        let mut buf = Vec::new();
        // Pieces recorded before: read back and verify, so neither a killed
        // process nor a power cut can make a bad piece count.
        for piece in self.store.pieces(vid).unwrap_or_default() {
            if piece < manifest.n_pieces()
                && staging::read_piece(root, manifest, layout, piece, &mut buf).is_ok()
                && staging::verify(manifest, piece, &buf)
            {
                have.insert(piece);
            }
        }
        // An older version: copy every piece whose hash it has.
        if let Some(old) = old {
            let old_layout = old.manifest.layout();
            let by_hash: HashMap<Hash, usize> = old
                .manifest
                .pieces
                .iter()
                .enumerate()
                .map(|(i, h)| (*h, i))
                .collect();
            let mut reused = 0;
            for piece in 0..manifest.n_pieces() {
                if have.contains(piece) {
                    continue;
                }
                let Some(&old_piece) = by_hash.get(&manifest.pieces[piece]) else {
                    continue;
                };
                let read =
                    staging::read_piece(&old.root, &old.manifest, &old_layout, old_piece, &mut buf);
                if read.is_ok() && staging::verify(manifest, piece, &buf) {
                    staging::write_piece(root, manifest, layout, piece, &buf)
                        .map_err(|e| DownloadError::io("cannot write a reused piece", e))?;
                    let _ = self.store.add_piece(vid, piece);
                    have.insert(piece);
                    reused += 1;
                }
            }
            tracing::info!(game = %old.id, reused, "pieces reused from the installed version");
        }
        Ok(have)
    }

    #[allow(clippy::too_many_arguments)]
    async fn swarm(
        self: &Arc<Self>,
        game_id: &str,
        vid: VersionId,
        manifest: &Arc<Manifest>,
        layout: &Arc<Layout>,
        root: &std::path::Path,
        have: PieceSet,
        partial: &Arc<Partial>,
        token: &CancellationToken,
    ) -> Result<End, DownloadError> {
        let total = manifest.total_size();
        let piece_size = manifest.piece_size as f64;
        let mut bytes_done: u64 = have.iter().map(|p| layout.piece_len(p)).sum();
        // Each peer orders equally rare pieces its own way (see the scheduler).
        let tie = Hash::of(format!("{}{vid}", self.directory.our_id()).as_bytes());
        let tie_seed = u64::from_le_bytes(tie.0[..8].try_into().expect("8 bytes"));
        let scheduler = Arc::new(Mutex::new(
            PieceScheduler::with_tie_seed(have, tie_seed)
                .publish_in_flight_to(partial.fetching.clone()),
        ));
        let mut haves: JoinSet<(PeerId, PeerConnection, Option<Availability>)> = JoinSet::new();
        let mut haves_in_flight: HashSet<PeerId> = HashSet::new();
        let mut ready: Vec<(PeerId, PeerConnection, Option<Availability>)> = Vec::new();
        let lock = |s: &Arc<Mutex<PieceScheduler>>| {
            // Held for bookkeeping only, never across an await.
            s.lock().unwrap_or_else(|e| e.into_inner()).is_complete()
        };
        if lock(&scheduler) {
            return Ok(End::Completed);
        }
        let (arrivals_tx, mut arrivals) = mpsc::channel::<Arrival>(MAX_PENDING_WRITES);
        let mut workers: JoinSet<()> = JoinSet::new();
        let mut worker_handles: HashMap<PeerId, Vec<AbortHandle>> = HashMap::new();
        let mut writes: JoinSet<WriteResult> = JoinSet::new();
        let mut window: HashMap<PeerId, u64> = HashMap::new();
        let mut rates: HashMap<PeerId, f64> = HashMap::new();
        let mut rate_total = 0.0f64;
        let mut window_bytes = 0u64;
        let mut window_start = Instant::now();
        let mut last_source_seen = Instant::now();
        let mut ever_had_source = false;
        let mut refresh = tokio::time::interval(REFRESH_EVERY);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut flushing: Option<tokio::task::JoinHandle<()>> = None;
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let result = loop {
            tokio::select! {
                biased;
                _ = token.cancelled() => break Ok(End::Cancelled),
                Some(done) = writes.join_next() => {
                    let Ok(done) = done else { continue };
                    let mut s = scheduler.lock().unwrap_or_else(|e| e.into_inner());
                    match done.outcome {
                        Ok(true) => {
                            if !s.have().contains(done.piece) {
                                bytes_done += done.len;
                                *window.entry(done.peer.clone()).or_default() += done.len;
                                window_bytes += done.len;
                            }
                            s.handle_piece_done(done.piece);
                            partial.have.lock().unwrap_or_else(|e| e.into_inner()).insert(done.piece);
                            if s.is_complete() {
                                break Ok(End::Completed);
                            }
                        }
                        Ok(false) => {
                            tracing::warn!(peer = %done.peer, piece = done.piece, "piece failed verification");
                            if s.handle_bad_piece(done.piece, &done.peer) == Verdict::Banned {
                                for handle in worker_handles.remove(&done.peer).unwrap_or_default() {
                                    handle.abort();
                                }
                                self.emit(PeerEvent::SourceBanned {
                                    version_id: vid.to_hex(),
                                    peer_id: done.peer.to_string(),
                                    reason: format!("sent {} pieces that failed verification", scheduler::MAX_BAD_PIECES),
                                });
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
                Some(arrival) = arrivals.recv(), if writes.len() < MAX_PENDING_WRITES => {
                    let (engine, manifest, layout, root) =
                        (self.clone(), manifest.clone(), layout.clone(), root.to_path_buf());
                    writes.spawn_blocking(move || engine.verify_and_write(vid, &root, &manifest, &layout, arrival));
                }
                Some(_) = workers.join_next() => {}
                _ = flush.tick() => {
                    if flushing.as_ref().is_none_or(|f| f.is_finished()) {
                        let root = root.to_path_buf();
                        flushing = Some(tokio::task::spawn_blocking(move || {
                            let _ = staging::sync_file_system(&root);
                        }));
                    }
                }
                Some(Ok((id, conn, have))) = haves.join_next() => {
                    haves_in_flight.remove(&id);
                    if let Some(have) = have {
                        ready.push((id, conn, Some(have)));
                    }
                }
                _ = refresh.tick() => {
                    let sources = self.directory.sources_of(&vid);
                    let current: HashSet<PeerId> = sources.iter().map(|(id, _, _)| id.clone()).collect();
                    // Sources gone, and sources whose workers all ended (their
                    // stream failed): drop now; still-present ones come back below.
                    for handles in worker_handles.values_mut() {
                        handles.retain(|h| !h.is_finished());
                    }
                    let gone: Vec<PeerId> = worker_handles
                        .iter()
                        .filter(|(id, handles)| !current.contains(*id) || handles.is_empty())
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in gone {
                        for handle in worker_handles.remove(&id).unwrap_or_default() {
                            handle.abort();
                        }
                        if !current.contains(&id) {
                            scheduler.lock().unwrap_or_else(|e| e.into_inner()).handle_source_gone(&id);
                        }
                    }
                    for (id, conn, complete) in sources {
                        if complete {
                            ready.push((id, conn, None));
                        } else if haves_in_flight.insert(id.clone()) {
                            // Have-sets are fetched off the loop: a slow peer
                            // never holds up the pieces arriving from others.
                            let n_pieces = manifest.n_pieces();
                            haves.spawn(async move {
                                let have = have_set(&conn, &vid, n_pieces).await;
                                (id, conn, have)
                            });
                        }
                    }
                    let any = scheduler.lock().unwrap_or_else(|e| e.into_inner()).active_sources().next().is_some()
                        && !worker_handles.is_empty();
                    if any {
                        ever_had_source = true;
                        last_source_seen = Instant::now();
                    } else {
                        let grace = if ever_had_source { NO_SOURCE_GRACE } else { FIRST_SOURCE_WAIT };
                        if last_source_seen.elapsed() > grace {
                            break Ok(End::PeersGone);
                        }
                    }
                }
                _ = progress.tick() => {
                    let elapsed = window_start.elapsed().as_secs_f64().max(0.001);
                    rate_total = 0.7 * rate_total + 0.3 * (window_bytes as f64 / elapsed);
                    for (peer, bytes) in window.drain() {
                        let rate = rates.entry(peer).or_default();
                        *rate = 0.7 * *rate + 0.3 * (bytes as f64 / elapsed);
                    }
                    rates.retain(|peer, _| worker_handles.contains_key(peer));
                    window_bytes = 0;
                    window_start = Instant::now();
                    let left = total.saturating_sub(bytes_done);
                    self.emit(PeerEvent::DownloadProgress {
                        version_id: vid.to_hex(),
                        game_id: game_id.to_owned(),
                        bytes_done,
                        bytes_total: total,
                        bytes_per_sec: rate_total,
                        eta_secs: (rate_total > 1.0).then(|| (left as f64 / rate_total).ceil() as u64),
                        sources: rates
                            .iter()
                            .map(|(peer, rate)| SourceRate { peer_id: peer.to_string(), bytes_per_sec: *rate })
                            .collect(),
                    });
                }
            }
            // Sources ready to use: update what they have, start workers.
            for (id, conn, have) in ready.drain(..) {
                let mut s = scheduler.lock().unwrap_or_else(|e| e.into_inner());
                if s.is_banned(&id) {
                    continue;
                }
                match have {
                    Some(Availability { have, fetching }) => {
                        s.handle_source(id.clone(), Some(have));
                        s.handle_source_fetching(&id, fetching);
                    }
                    None => s.handle_source(id.clone(), None),
                }
                drop(s);
                let rate = rates.get(&id).copied().unwrap_or(0.0);
                let wanted = if rate >= FAST_SOURCE {
                    MAX_STREAMS_PER_SOURCE
                } else {
                    1
                };
                let running = worker_handles.get(&id).map_or(0, Vec::len);
                if running >= wanted {
                    continue;
                }
                // Until a source is measured, start small: a slow source then
                // holds few pieces, a fast one grows within a request or two.
                let batch = ((rate * 0.5 / piece_size) as usize).clamp(START_BATCH, MAX_BATCH);
                let handles: Vec<AbortHandle> = (running..wanted)
                    .map(|_| {
                        let worker = Worker {
                            conn: conn.clone(),
                            peer: id.clone(),
                            vid,
                            scheduler: scheduler.clone(),
                            arrivals: arrivals_tx.clone(),
                            batch,
                            piece_size: piece_size as u64,
                        };
                        workers.spawn(worker.run())
                    })
                    .collect();
                worker_handles.entry(id).or_default().extend(handles);
            }
        };
        workers.abort_all();
        drop(arrivals);
        if let Some(flushing) = flushing {
            let _ = flushing.await;
        }
        // Writes in progress finish (a write is never interrupted half-way).
        while writes.join_next().await.is_some() {}
        if matches!(result, Ok(End::Completed)) {
            self.emit(PeerEvent::DownloadProgress {
                version_id: vid.to_hex(),
                game_id: game_id.to_owned(),
                bytes_done: total,
                bytes_total: total,
                bytes_per_sec: rate_total,
                eta_secs: Some(0),
                sources: Vec::new(),
            });
        }
        result
    }

    /// Blocking: verify an arrived piece, write it, and record it.
    fn verify_and_write(
        &self,
        vid: VersionId,
        root: &std::path::Path,
        manifest: &Manifest,
        layout: &Layout,
        arrival: Arrival,
    ) -> WriteResult {
        let len = arrival.data.len() as u64;
        let outcome = if layout.piece_len(arrival.piece) != len
            || !staging::verify(manifest, arrival.piece, &arrival.data)
        {
            Ok(false)
        } else {
            staging::write_piece(root, manifest, layout, arrival.piece, &arrival.data)
                .map_err(|e| DownloadError::io("cannot write a piece", e))
                .and_then(|()| {
                    self.store
                        .add_piece(&vid, arrival.piece)
                        .map_err(|e| DownloadError::new(DownloadCode::Io, e.to_string()))
                })
                .map(|()| true)
        };
        WriteResult {
            piece: arrival.piece,
            peer: arrival.peer,
            len,
            outcome,
        }
    }

    /// Blocking: make the staging copy durable and move it into the games
    /// folder in one rename; an older version is replaced only now.
    fn install(
        &self,
        game_id: &str,
        vid: VersionId,
        root: &std::path::Path,
        manifest: Arc<Manifest>,
    ) -> Result<LocalGame, DownloadError> {
        staging::sync_all(root, &manifest)
            .map_err(|e| DownloadError::io("cannot flush the download", e))?;
        let dest = self.games_dir.join(game_id);
        let installed = self.library.snapshot().get(game_id).cloned();
        let mut replaced = None;
        if dest.exists() {
            match &installed {
                Some(old) if old.version_id != vid => {
                    let aside = root.with_extension("replaced");
                    std::fs::rename(&dest, &aside)
                        .map_err(|e| DownloadError::io("cannot move the old version aside", e))?;
                    replaced = Some(aside);
                }
                _ => {
                    return Err(DownloadError::new(
                        DownloadCode::DestinationExists,
                        format!(
                        "{} exists and is not an older version of this game; rename or remove it, \
                             the download stays ready to install",
                        dest.display()
                    ),
                    ))
                }
            }
        }
        if let Err(e) = std::fs::rename(root, &dest) {
            if let Some(aside) = &replaced {
                let _ = std::fs::rename(aside, &dest);
            }
            return Err(DownloadError::io("cannot move the game into place", e));
        }
        let _ = staging::sync_dir(&self.games_dir);
        if let Some(aside) = replaced {
            if let Err(e) = std::fs::remove_dir_all(&aside) {
                tracing::warn!("cannot remove the old version {}: {e}", aside.display());
            }
        }
        // The library takes our verified hashes: nothing is hashed again.
        let stamps: Vec<(String, FileStamp)> = manifest
            .files
            .iter()
            .filter_map(|f| {
                let meta = std::fs::metadata(crate::fsx::manifest_path(&dest, &f.path)).ok()?;
                Some((
                    f.path.clone(),
                    FileStamp {
                        size: meta.len(),
                        mtime_ns: crate::fsx::mtime_ns(&meta),
                    },
                ))
            })
            .collect();
        let _ = self.store.save_game(game_id, &manifest, &vid, &stamps);
        let metadata = std::fs::read_to_string(dest.join(crate::library::metadata::METADATA_FILE))
            .ok()
            .and_then(|text| GameMetadata::parse(&text, game_id).ok())
            .unwrap_or_else(|| GameMetadata::fallback(game_id));
        let thumbnail = crate::library::manifest_thumbnail(game_id, &dest, &metadata, &manifest);
        Ok(LocalGame {
            id: game_id.to_owned(),
            root: dest,
            metadata,
            total_size: manifest.total_size(),
            manifest,
            version_id: vid,
            thumbnail,
        })
    }
}

/// Removes a finished download from the running set on every exit path
/// (completion, error, cancellation, abort) and starts the next one.
struct RunningGuard {
    engine: Arc<Engine>,
    version_id: VersionId,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.engine.queue().running.remove(&self.version_id);
        self.engine.registry.lock().remove(&self.version_id);
        self.engine.pump();
    }
}

struct Arrival {
    peer: PeerId,
    piece: usize,
    data: Vec<u8>,
}

struct WriteResult {
    piece: usize,
    peer: PeerId,
    len: u64,
    outcome: Result<bool, DownloadError>,
}

/// What a partial source has, and what it is fetching now.
struct Availability {
    have: PieceSet,
    fetching: PieceSet,
}

async fn have_set(conn: &PeerConnection, vid: &VersionId, n_pieces: usize) -> Option<Availability> {
    match tokio::time::timeout(
        Duration::from_secs(2),
        conn.request(&Request::GetHaveSet { version_id: *vid }),
    )
    .await
    {
        Ok(Ok(Response::HaveSet {
            n_pieces: n,
            bits,
            fetching,
        })) if n as usize == n_pieces => Some(Availability {
            have: PieceSet::from_bits(n_pieces, bits)?,
            fetching: PieceSet::from_bits(n_pieces, fetching)?,
        }),
        _ => None,
    }
}

/// Fetches pieces from one source, batch after batch, until the scheduler
/// has nothing for it or the connection fails.
struct Worker {
    conn: PeerConnection,
    peer: PeerId,
    vid: VersionId,
    scheduler: Arc<Mutex<PieceScheduler>>,
    arrivals: mpsc::Sender<Arrival>,
    /// Pieces per request, resized after each request to about half a
    /// second of this source's measured rate.
    batch: usize,
    piece_size: u64,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let pieces = {
                let mut s = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
                if s.is_complete() || s.is_banned(&self.peer) {
                    return;
                }
                s.poll_request(&self.peer, self.batch)
            };
            let asked_at = Instant::now();
            if pieces.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let mut pending: VecDeque<usize> = pieces.iter().copied().collect();
            let failed = self.fetch(&pieces, &mut pending).await.err();
            let received = (pieces.len() - pending.len()) as f64 * self.piece_size as f64;
            let rate = received / asked_at.elapsed().as_secs_f64().max(0.001);
            self.batch =
                ((rate * 0.5 / self.piece_size as f64) as usize).clamp(MIN_BATCH, MAX_BATCH);
            if !pending.is_empty() {
                let mut s = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
                for piece in pending {
                    s.handle_piece_dropped(piece, &self.peer);
                }
            }
            match failed {
                None => {}
                // The source lacks a piece (its have-set is stale): ask later.
                Some(RequestError::Remote {
                    code: ErrorCode::NotFound | ErrorCode::Busy,
                    ..
                }) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(e) => {
                    tracing::debug!(peer = %self.peer, "source failed: {e}");
                    return;
                }
            }
        }
    }

    async fn fetch(
        &self,
        pieces: &[usize],
        pending: &mut VecDeque<usize>,
    ) -> Result<(), RequestError> {
        let ids = pieces.iter().map(|&p| p as u32).collect();
        let mut reader = self.conn.request_pieces(self.vid, ids).await?;
        while let Some((piece, data)) = reader.next().await? {
            pending.pop_front();
            let arrival = Arrival {
                peer: self.peer.clone(),
                piece: piece as usize,
                data,
            };
            if self.arrivals.send(arrival).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}
