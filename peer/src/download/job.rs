//! One download, from its manifest to the install: fetch and check the
//! manifest, prepare the staging folder and what we have already, offer our
//! pieces while the swarm fetches the rest, then install by one rename.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lanspread_proto::wire::{Request, Response};
use lanspread_proto::{GameSummary, Hash, Layout, Manifest, PieceSet, VersionId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::RunningGuard;
use super::scheduler::PieceScheduler;
use super::staging::{self, staging_root};
use super::swarm::{SharedScheduler, Swarm, FIRST_SOURCE_WAIT, REFRESH_EVERY};
use super::{DownloadError, End, Engine, Job};
use crate::events::{FailureCode, PeerEvent};
use crate::library::metadata::GameMetadata;
use crate::library::LocalGame;
use crate::store::FileStamp;

/// How often an install blocked by files in use (a running game on
/// Windows) is tried again.
const IN_USE_RETRY: Duration = Duration::from_secs(5);

/// Whether a rename failed because a file in the folder is open elsewhere
/// (Windows: sharing violation, lock violation, or access denied on a
/// folder whose program runs). Never on unix, where renames ignore opens.
fn in_use(e: &std::io::Error) -> bool {
    #[cfg(windows)]
    {
        matches!(e.raw_os_error(), Some(5 | 32 | 33))
    }
    #[cfg(not(windows))]
    {
        let _ = e;
        false
    }
}

impl Engine {
    /// Run one download to its end and report it (event and stored state).
    pub(super) async fn run(
        self: &Arc<Self>,
        job: Job,
        guard: &RunningGuard,
        token: CancellationToken,
    ) {
        let (vid, game_id) = (job.version_id, job.game_id.clone());
        let outcome = self.download(job, &token).await;
        if matches!(outcome, Ok(End::Cancelled)) && self.parts.token.is_cancelled() {
            // The runtime stops: the download stays stored as it is (running,
            // or queued) and comes back at the next start.
            return;
        }
        let state = match &outcome {
            Ok(End::Completed) => None,
            Ok(End::Cancelled) => Some("cancelled"),
            Ok(End::PeersGone) => Some("stalled"),
            Err(_) => Some("failed"),
        };
        self.record(
            "cannot record the download's end",
            move |store| match state {
                None => store.forget_download(&vid),
                Some(state) => store.set_download_state(&vid, state),
            },
        )
        .await;
        self.leave_running(guard).await;
        self.remember_queue().await;
        let event = match outcome {
            Ok(End::Completed) => PeerEvent::DownloadCompleted {
                version_id: vid,
                game_id,
            },
            Ok(End::Cancelled) => PeerEvent::DownloadCancelled {
                version_id: vid,
                game_id,
            },
            Ok(End::PeersGone) => PeerEvent::DownloadPeersGone {
                version_id: vid,
                game_id,
            },
            Err(e) => {
                tracing::warn!(game = %game_id, "download failed: {e}");
                PeerEvent::DownloadFailed {
                    version_id: vid,
                    game_id,
                    code: e.code,
                    message: e.message,
                }
            }
        };
        self.emit(event);
    }

    // Long on purpose: the steps of one download in order (manifest, record,
    // prepare, offer, swarm, install); each step is its own function.
    async fn download(
        self: &Arc<Self>,
        mut job: Job,
        token: &CancellationToken,
    ) -> Result<End, DownloadError> {
        let vid = job.version_id;
        // Checked where the name entered (the catalog) and again before it
        // names anything on disk: a resumed download's stored id too.
        refuse_bad_game_id(&job.game_id)?;
        let manifest = match job.manifest.take() {
            Some(m) => m,
            None => match self.fetch_manifest(&vid, token).await? {
                Some(m) => m,
                None if token.is_cancelled() => return Ok(End::Cancelled),
                None => return Ok(End::PeersGone),
            },
        };
        manifest.validate().map_err(|e| {
            DownloadError::new(FailureCode::BadManifest, format!("bad manifest: {e}"))
        })?;
        let manifest = Arc::new(manifest);
        let (stored, game_id) = (manifest.clone(), job.game_id.clone());
        self.with_store("cannot record the download", move |store| {
            store.save_download(&vid, &game_id, &stored, "running")
        })
        .await?;
        let layout = Arc::new(manifest.layout());
        let root = staging_root(&self.parts.games_dir, &vid);
        let old = self
            .parts
            .library
            .snapshot()
            .get(&job.game_id)
            .filter(|g| g.version_id != vid)
            .cloned();
        // Staging files are closed on a thread of their own, never where
        // they are created or written (see `files.rs`).
        let (closer, close_loop) = staging::closer();
        let closing = self
            .parts
            .tasks
            .spawn_blocking(format!("close files of {}", job.game_id), move || {
                close_loop.run()
            });
        let prepared = self
            .prepare_on_pool(
                &job.game_id,
                vid,
                &root,
                &manifest,
                &layout,
                old,
                &closer,
                token,
            )
            .await;
        let have = match prepared {
            Ok(Some(have)) => have,
            other => {
                // Every file prepare opened is closed before the end is
                // handled (a discard deletes the folder).
                drop(closer);
                let _ = closing.await;
                return other.map(|_| End::Cancelled);
            }
        };
        let total = manifest.total_size();
        self.emit(PeerEvent::DownloadStarted {
            version_id: vid,
            game_id: job.game_id.clone(),
            title: job.title.clone(),
            bytes_total: total,
        });
        let scheduler = Arc::new(SharedScheduler::new(PieceScheduler::with_tie_seed(
            have,
            self.tie_seed(&vid),
        )));
        let offered = self.parts.offer.register(
            self.summary_of(&job, &manifest),
            LocalGame {
                id: job.game_id.clone(),
                root: root.clone(),
                metadata: GameMetadata::fallback(&job.game_id),
                manifest: manifest.clone(),
                version_id: vid,
                total_size: total,
                thumbnail: None,
                identities: None,
            },
            scheduler.clone(),
        );

        let files = staging::OpenFiles::new(root.clone(), manifest.clone(), closer);
        let swarm = Swarm::new(
            self.clone(),
            &job.game_id,
            manifest.clone(),
            layout,
            files,
            scheduler,
            token.clone(),
        );
        let end = swarm.run().await;
        // The swarm dropped the open files: once the loop has closed them
        // all, no handle is open below the staging folder (Windows renames
        // no folder with an open file, and a discard deletes it).
        let flushed = closing.await.unwrap_or(false);
        let end = end?;
        if !matches!(end, End::Completed) {
            return Ok(end);
        }
        // No request may read the staging folder once it starts moving.
        offered.withdraw();
        let installed = loop {
            // A game lanspread started is not changed under its player (and
            // on Windows its files are locked): the update stays staged.
            if self.parts.running.is_running(&job.game_id) {
                self.emit_waiting(&job, "is running");
                tokio::select! {
                    biased;
                    _ = token.cancelled() => return Ok(End::Cancelled),
                    _ = self.parts.running.wait_exit(&job.game_id) => continue,
                }
            }
            let (engine, game_id, root, manifest) = (
                self.clone(),
                job.game_id.clone(),
                root.clone(),
                manifest.clone(),
            );
            let attempt = self
                .blocking(format!("install {}", job.game_id), move || {
                    engine.install(&game_id, vid, &root, manifest, flushed)
                })
                .await;
            match attempt {
                Err(e) if e.code == FailureCode::GameInUse => {
                    self.emit_waiting(&job, "has files in use");
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => return Ok(End::Cancelled),
                        _ = tokio::time::sleep(IN_USE_RETRY) => {}
                    }
                }
                other => break other?,
            }
        };
        self.parts.library.publish_game(installed);
        Ok(End::Completed)
    }

    /// Say why a verified download is not installed yet.
    fn emit_waiting(&self, job: &Job, why: &str) {
        self.emit(PeerEvent::DownloadWaiting {
            version_id: job.version_id,
            game_id: job.game_id.clone(),
            message: format!(
                "{} {why}: the update is verified and installs when the game exits",
                job.title
            ),
        });
    }

    /// [`Self::prepare`] on the blocking pool.
    #[allow(clippy::too_many_arguments)]
    async fn prepare_on_pool(
        self: &Arc<Self>,
        game_id: &str,
        vid: VersionId,
        root: &Path,
        manifest: &Arc<Manifest>,
        layout: &Arc<Layout>,
        old: Option<Arc<LocalGame>>,
        closer: &staging::Closer,
        token: &CancellationToken,
    ) -> Result<Option<PieceSet>, DownloadError> {
        let (engine, manifest, layout, root, closer, token) = (
            self.clone(),
            manifest.clone(),
            layout.clone(),
            root.to_path_buf(),
            closer.clone(),
            token.clone(),
        );
        self.blocking(format!("prepare {game_id}"), move || {
            engine.prepare(&vid, &root, &manifest, &layout, old, &closer, &token)
        })
        .await
    }

    /// Run fallible disk work on the blocking pool (tracked).
    async fn blocking<T: Send + 'static>(
        &self,
        name: String,
        work: impl FnOnce() -> Result<T, DownloadError> + Send + 'static,
    ) -> Result<T, DownloadError> {
        self.parts
            .tasks
            .spawn_blocking(name, work)
            .await
            .map_err(|e| DownloadError::new(FailureCode::Io, e.to_string()))?
    }

    /// Each peer orders equally rare pieces its own way (see the scheduler).
    fn tie_seed(&self, vid: &VersionId) -> u64 {
        let tie = Hash::of(format!("{}{vid}", self.parts.directory.our_id()).as_bytes());
        u64::from_le_bytes(tie.0[..8].try_into().expect("8 bytes"))
    }

    /// How we describe the version while we download it: as the catalog
    /// does (title, picture, version label), so a downloader serving its
    /// pieces never renames the game or drops its cover.
    fn summary_of(&self, job: &Job, manifest: &Manifest) -> GameSummary {
        let entry = self
            .parts
            .directory
            .catalog()
            .into_iter()
            .find(|e| e.version_id == job.version_id);
        let (title, description, genre, min_players, max_players, version_label, thumbnail) =
            match entry {
                Some(e) => (
                    e.title,
                    e.description,
                    e.genre,
                    e.min_players,
                    e.max_players,
                    e.version_label,
                    e.thumbnail,
                ),
                None => (job.title.clone(), None, None, None, None, None, None),
            };
        GameSummary {
            game_id: job.game_id.clone(),
            version_id: job.version_id,
            title,
            description,
            genre,
            min_players,
            max_players,
            version_label,
            total_size: manifest.total_size(),
            n_files: manifest.files.len() as u64,
            thumbnail,
            complete: false,
        }
    }

    /// Ask sources for the manifest until one gives the right one.
    async fn fetch_manifest(
        &self,
        vid: &VersionId,
        token: &CancellationToken,
    ) -> Result<Option<Manifest>, DownloadError> {
        let deadline = Instant::now() + FIRST_SOURCE_WAIT;
        while Instant::now() < deadline && !token.is_cancelled() {
            for (_, conn, _) in self.parts.directory.sources_of(vid) {
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
    /// `Ok(None)` when cancelled meanwhile: re-verifying a big resumed
    /// download checks the token per piece, so shutdown keeps its deadline.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        vid: &VersionId,
        root: &Path,
        manifest: &Arc<Manifest>,
        layout: &Layout,
        old: Option<Arc<LocalGame>>,
        closer: &staging::Closer,
        token: &CancellationToken,
    ) -> Result<Option<PieceSet>, DownloadError> {
        let total = manifest.total_size();
        if !self.parts.games_dir.is_dir() {
            return Err(DownloadError::new(
                FailureCode::GamesDirMissing,
                format!(
                    "the games folder {} is gone",
                    self.parts.games_dir.display()
                ),
            ));
        }
        if !root.exists() {
            let available = fs4::statvfs(&self.parts.games_dir)
                .map_err(|e| DownloadError::io("cannot read free space", e))?
                .available_space();
            if available < total {
                return Err(DownloadError::new(
                    FailureCode::NoSpace,
                    format!(
                        "needs {} MiB, {} MiB free in {}",
                        total >> 20,
                        available >> 20,
                        self.parts.games_dir.display()
                    ),
                ));
            }
        }
        staging::prepare(root, manifest, closer)
            .map_err(|e| DownloadError::io("cannot prepare the download", e))?;
        let mut have = PieceSet::empty(manifest.n_pieces());
        let mut buf = Vec::new();
        // Pieces recorded before: read back and verify, so neither a killed
        // process nor a power cut can make a bad piece count.
        for piece in self.parts.store.pieces(vid).unwrap_or_default() {
            if token.is_cancelled() {
                return Ok(None);
            }
            if piece < manifest.n_pieces()
                && staging::read_piece(root, manifest, layout, piece, &mut buf).is_ok()
                && staging::verify(manifest, piece, &buf)
            {
                have.insert(piece);
            }
        }
        if let Some(old) = old {
            let files =
                staging::OpenFiles::new(root.to_path_buf(), manifest.clone(), closer.clone());
            if !self.reuse_pieces(vid, &files, manifest, layout, &old, &mut have, token)? {
                return Ok(None);
            }
        }
        Ok(Some(have))
    }

    /// Blocking: copy every piece whose hash the installed older version
    /// has. `Ok(false)` when cancelled meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn reuse_pieces(
        &self,
        vid: &VersionId,
        files: &staging::OpenFiles,
        manifest: &Manifest,
        layout: &Layout,
        old: &LocalGame,
        have: &mut PieceSet,
        token: &CancellationToken,
    ) -> Result<bool, DownloadError> {
        let old_layout = old.manifest.layout();
        let by_hash: HashMap<Hash, usize> = old
            .manifest
            .pieces
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i))
            .collect();
        let mut buf = Vec::new();
        let mut reused = Vec::new();
        for piece in 0..manifest.n_pieces() {
            if token.is_cancelled() {
                break;
            }
            if have.contains(piece) {
                continue;
            }
            let Some(&old_piece) = by_hash.get(&manifest.pieces[piece]) else {
                continue;
            };
            let read =
                staging::read_piece(&old.root, &old.manifest, &old_layout, old_piece, &mut buf);
            if read.is_ok() && staging::verify(manifest, piece, &buf) {
                staging::write_piece(files, layout, piece, &buf)
                    .map_err(|e| DownloadError::io("cannot write a reused piece", e))?;
                have.insert(piece);
                reused.push(piece);
            }
        }
        // Recorded once on disk, in one transaction (a resume re-verifies
        // them anyway).
        if !reused.is_empty() && staging::sync_file_system(files.root()).is_ok() {
            if let Err(e) = self.parts.store.add_pieces(vid, &reused) {
                tracing::warn!(game = %old.id, "cannot record the reused pieces: {e}");
            }
        }
        tracing::info!(game = %old.id, reused = reused.len(), "pieces reused from the installed version");
        Ok(!token.is_cancelled())
    }

    /// Blocking: make the staging copy durable and move it into the games
    /// folder in one rename; an older version is replaced only now.
    /// `flushed`: the closing loop flushed every file as it closed it.
    fn install(
        &self,
        game_id: &str,
        vid: VersionId,
        root: &Path,
        manifest: Arc<Manifest>,
        flushed: bool,
    ) -> Result<LocalGame, DownloadError> {
        refuse_bad_game_id(game_id)?;
        self.refuse_colliding_folder(game_id)?;
        staging::sync_all(root, &manifest, flushed)
            .map_err(|e| DownloadError::io("cannot flush the download", e))?;
        let dest = self.parts.games_dir.join(game_id);
        let replaced = self.move_into_place(game_id, vid, root, &dest)?;
        let _ = staging::sync_dir(&self.parts.games_dir);
        if let Some(aside) = replaced {
            if let Err(e) = std::fs::remove_dir_all(&aside) {
                tracing::warn!("cannot remove the old version {}: {e}", aside.display());
            }
        }
        // The library takes our verified hashes: nothing is hashed again.
        let metas: Vec<Option<std::fs::Metadata>> = manifest
            .files
            .iter()
            .map(|f| std::fs::symlink_metadata(crate::fsx::manifest_path(&dest, &f.path)).ok())
            .collect();
        let stamps: Vec<(String, FileStamp)> = manifest
            .files
            .iter()
            .zip(&metas)
            .filter_map(|(f, meta)| {
                let meta = meta.as_ref()?;
                Some((
                    f.path.clone(),
                    FileStamp {
                        size: meta.len(),
                        mtime_ns: crate::fsx::mtime_ns(meta),
                    },
                ))
            })
            .collect();
        let identities: Option<Vec<crate::fsx::FileIdentity>> = metas
            .iter()
            .map(|meta| meta.as_ref().map(crate::fsx::FileIdentity::of))
            .collect();
        let _ = self
            .parts
            .store
            .save_game(game_id, &manifest, &vid, &stamps);
        if let Err(e) = self.parts.store.save_installed(game_id, &vid, &manifest) {
            tracing::warn!(game = %game_id, "cannot record the install: {e}");
        }
        let metadata = read_metadata(&dest, game_id);
        let thumbnail = crate::library::manifest_thumbnail(game_id, &dest, &metadata, &manifest);
        Ok(LocalGame {
            id: game_id.to_owned(),
            root: dest,
            metadata,
            total_size: manifest.total_size(),
            manifest,
            version_id: vid,
            thumbnail,
            identities: identities.map(Arc::new),
        })
    }

    /// Blocking: refuse a game id that is another folder's name on Windows
    /// and macOS (case or Unicode normalization): there the install would
    /// land in that folder.
    fn refuse_colliding_folder(&self, game_id: &str) -> Result<(), DownloadError> {
        let key = lanspread_proto::path::collision_key(game_id);
        let entries = std::fs::read_dir(&self.parts.games_dir)
            .map_err(|e| DownloadError::io("cannot read the games folder", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name != game_id && lanspread_proto::path::collision_key(name) == key {
                return Err(DownloadError::new(
                    FailureCode::DestinationExists,
                    format!(
                        "`{game_id}` is the same folder name as `{name}` on Windows and macOS; \
                         not installed next to it"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Blocking: rename the staging folder to `dest`. A folder there is
    /// replaced only when the library says it holds another version of this
    /// same game (same id, same title in its own `lanspread.toml`): it is
    /// moved aside, every file of it that lanspread did not ship (saves,
    /// configs) is carried into the new version, and it is returned, to
    /// remove. Anything else there is never touched.
    fn move_into_place(
        &self,
        game_id: &str,
        vid: VersionId,
        root: &Path,
        dest: &Path,
    ) -> Result<Option<PathBuf>, DownloadError> {
        if std::fs::symlink_metadata(dest).is_err() {
            return std::fs::rename(root, dest)
                .map(|()| None)
                .map_err(|e| DownloadError::io("cannot move the game into place", e));
        }
        let installed = self.parts.library.snapshot().get(game_id).cloned();
        let refuse = |why: String| {
            Err(DownloadError::new(
                FailureCode::DestinationExists,
                format!(
                    "{} exists and {why}; it is left as it is, and the download stays ready to \
                     install once it is renamed or removed",
                    dest.display()
                ),
            ))
        };
        let Some(old) = installed.filter(|old| old.version_id != vid) else {
            return refuse("is not an older version of this game".into());
        };
        if std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink()) {
            return refuse("is a link the host made, not a folder lanspread installed".into());
        }
        let new_title = read_metadata(root, game_id).title;
        if !same_title(&new_title, &old.metadata.title) {
            return refuse(format!(
                "holds “{}”, while this download is “{new_title}”: another game",
                old.metadata.title
            ));
        }
        // What lanspread shipped there: its install record, else the
        // manifest the library indexed.
        let shipped_manifest = match self.parts.store.installed(game_id) {
            Ok(Some(m)) => m,
            _ => (*old.manifest).clone(),
        };
        let shipped: std::collections::HashSet<&str> = shipped_manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        let aside = root.with_extension("replaced");
        std::fs::rename(dest, &aside).map_err(|e| {
            if in_use(&e) {
                DownloadError::new(FailureCode::GameInUse, format!("{game_id} is in use: {e}"))
            } else {
                DownloadError::io("cannot move the old version aside", e)
            }
        })?;
        let mut carried = staging::Carried::new();
        let moved = staging::carry_over(&aside, root, &shipped, &mut carried)
            .map_err(|e| DownloadError::io("cannot carry over the game's saves", e))
            .and_then(|()| {
                std::fs::rename(root, dest)
                    .map_err(|e| DownloadError::io("cannot move the game into place", e))
            });
        if let Err(e) = moved {
            staging::carry_back(&aside, root, &carried);
            let _ = std::fs::rename(&aside, dest);
            return Err(e);
        }
        if !carried.is_empty() {
            tracing::info!(game = %game_id, files = carried.len(), "files of the player's carried over");
        }
        Ok(Some(aside))
    }
}

/// A game id that names anything but one plain folder of the games folder
/// is refused, in words.
fn refuse_bad_game_id(game_id: &str) -> Result<(), DownloadError> {
    lanspread_proto::path::validate_game_id(game_id).map_err(|e| {
        DownloadError::new(
            FailureCode::Refused,
            format!("refused: game id `{game_id}` is not a plain folder name ({e})"),
        )
    })
}

/// The metadata of the game below `root` (its own `lanspread.toml`), or the
/// fallback for `game_id`.
fn read_metadata(root: &Path, game_id: &str) -> GameMetadata {
    std::fs::read_to_string(root.join(crate::library::metadata::METADATA_FILE))
        .ok()
        .and_then(|text| GameMetadata::parse(&text, game_id).ok())
        .map(|mut metadata| {
            metadata.cut_to_limits();
            metadata
        })
        .unwrap_or_else(|| GameMetadata::fallback(game_id))
}

/// Titles name the same game when they match ignoring case and the spaces
/// around them.
fn same_title(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}
