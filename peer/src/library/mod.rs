//! The local game library: scanning the games folder, building manifests,
//! caching hashes, and the monitor service that keeps it current.
//!
//! Each top-level folder of the games folder is a game, its name the game id.
//! Hidden folders (a leading `.`, which includes the download staging area)
//! are not games. A top-level symbolic link to a folder is followed: that is
//! the host's own choice to share it. Inside a game, see [`scan`].

pub mod metadata;
pub mod monitor;
pub mod scan;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanspread_proto::manifest::{piece_size_for, Layout};
use lanspread_proto::{FileEntry, GameSummary, Hash, Manifest, VersionId};
use tokio_util::sync::CancellationToken;

use crate::fsx;
use crate::store::{FileStamp, Store, StoreError};
use metadata::{image_mime, GameMetadata, Thumbnail, MAX_THUMBNAIL_BYTES, METADATA_FILE};
use scan::{walk_game, ScanError, ScannedFile};

/// A file modified less than this long before it was hashed may change again
/// within the same mtime tick; its stamp is not trusted next time.
const RACY_MTIME_WINDOW: Duration = Duration::from_secs(2);

/// One game of the local library with a complete manifest.
#[derive(Debug, Clone)]
pub struct LocalGame {
    /// The folder name.
    pub id: String,
    pub root: PathBuf,
    pub metadata: GameMetadata,
    pub manifest: Arc<Manifest>,
    pub version_id: VersionId,
    pub total_size: u64,
    pub thumbnail: Option<Thumbnail>,
    /// Which file each manifest path held when indexed or installed (by
    /// file index); the server serves only those. `None` while downloading
    /// (the staging files change as pieces land).
    pub identities: Option<Arc<Vec<fsx::FileIdentity>>>,
}

impl LocalGame {
    /// Absolute path of file `file_idx` of the manifest.
    pub fn file_path(&self, file_idx: usize) -> PathBuf {
        fsx::manifest_path(&self.root, &self.manifest.files[file_idx].path)
    }

    /// How peers see this game in a game list.
    pub fn summary(&self) -> GameSummary {
        GameSummary {
            game_id: self.id.clone(),
            version_id: self.version_id,
            title: self.metadata.title.clone(),
            description: self.metadata.description.clone(),
            genre: self.metadata.genre.clone(),
            min_players: self.metadata.min_players,
            max_players: self.metadata.max_players,
            version_label: self.metadata.version.clone(),
            total_size: self.total_size,
            n_files: self.manifest.files.len() as u64,
            thumbnail: self.thumbnail.as_ref().map(|t| t.hash),
            complete: true,
        }
    }
}

/// The games of the library, by id.
pub type LibrarySnapshot = BTreeMap<String, Arc<LocalGame>>;

/// The picture with `hash`, if a game of the library has it.
pub fn thumbnail_with_hash(snapshot: &LibrarySnapshot, hash: &Hash) -> Option<Thumbnail> {
    snapshot
        .values()
        .find_map(|g| g.thumbnail.clone().filter(|t| t.hash == *hash))
}

/// Why a game could not be indexed this time.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("changed while being hashed ({0}); will retry when it is quiet")]
    Changed(String),
    #[error("indexing cancelled")]
    Cancelled,
    #[error("cache: {0}")]
    Store(#[from] StoreError),
}

/// Builds manifests, reusing cached piece hashes where files are unchanged.
pub struct Indexer {
    games_dir: PathBuf,
    store: Arc<Store>,
    /// Total bytes read for hashing, ever. Tests assert the cache works by it.
    bytes_hashed: AtomicU64,
    /// A game with a file modified less than this long ago is not indexed
    /// yet (it may still be being copied in).
    settle: Duration,
}

impl Indexer {
    pub fn new(games_dir: PathBuf, store: Arc<Store>) -> Self {
        Self {
            games_dir,
            store,
            bytes_hashed: AtomicU64::new(0),
            settle: Duration::ZERO,
        }
    }

    /// Refuse to index games modified within `settle` (see the field).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    pub fn games_dir(&self) -> &Path {
        &self.games_dir
    }

    pub fn bytes_hashed(&self) -> u64 {
        self.bytes_hashed.load(Ordering::Relaxed)
    }

    /// The game ids in the games folder, sorted.
    pub fn list_games(&self) -> (Vec<String>, Vec<ScanError>) {
        let mut games = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(&self.games_dir) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(ScanError {
                    game: String::new(),
                    path: None,
                    message: format!("cannot read games folder {}: {e}", self.games_dir.display()),
                });
                return (games, errors);
            }
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                errors.push(ScanError {
                    game: entry.file_name().to_string_lossy().into_owned(),
                    path: None,
                    message: "game folder name is not valid UTF-8; skipped".into(),
                });
                continue;
            };
            if !is_game_folder_name(&name) {
                continue;
            }
            // `metadata` follows a top-level link on purpose (module docs).
            if !entry.path().metadata().map(|m| m.is_dir()).unwrap_or(false) {
                continue;
            }
            if let Err(e) = lanspread_proto::path::validate_game_id(&name) {
                errors.push(ScanError {
                    game: name,
                    path: None,
                    message: format!(
                        "game folder name cannot be a game id everywhere ({e}); skipped"
                    ),
                });
                continue;
            }
            games.push(name);
        }
        games.sort();
        // Two folders that are one name on Windows and macOS: the first
        // (byte order) is offered, the others reported.
        let mut keys = std::collections::HashMap::new();
        games.retain(
            |name| match keys.entry(lanspread_proto::path::collision_key(name)) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(name.clone());
                    true
                }
                std::collections::hash_map::Entry::Occupied(first) => {
                    errors.push(ScanError {
                        game: name.clone(),
                        path: None,
                        message: format!(
                            "same folder name as `{}` on Windows and macOS; skipped",
                            first.get()
                        ),
                    });
                    false
                }
            },
        );
        (games, errors)
    }

    /// Index one game. `Ok(None)` when the folder no longer exists.
    /// `progress(bytes_done, bytes_total)` is called from hashing threads.
    // Long on purpose: indexing is a sequence (walk, settle check, metadata,
    // layout, reuse cached hashes, hash, recheck, save) that must run in this
    // order; each step's arithmetic lives in its own function.
    pub fn index_game(
        &self,
        game: &str,
        cancel: &CancellationToken,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(Option<LocalGame>, Vec<ScanError>), IndexError> {
        let root = self.games_dir.join(game);
        if !root.is_dir() {
            self.store.forget_game(game)?;
            return Ok((None, Vec::new()));
        }
        let walked_at = SystemTime::now();
        let mut list = walk_game(game, &root);
        let mut errors = std::mem::take(&mut list.errors);
        let walked = listing(&list);
        if let Err(why) = check_listing(&list) {
            // Never offered: other peers could not install it as it is.
            errors.push(ScanError {
                game: game.into(),
                path: None,
                message: format!("not offered: {why}"),
            });
            return Ok((None, errors));
        }
        let cached = self.store.cached_game(game)?;
        // Exactly the files, sizes and trusted mtimes recorded when it was
        // last indexed or installed: it is not being copied in, so it need
        // not wait out the settle time (a restart offers it at once).
        let unchanged = cached.as_ref().is_some_and(|c| {
            c.stamps.len() == list.files.len()
                && list
                    .files
                    .iter()
                    .all(|f| c.stamps.get(&f.rel_path) == Some(&f.stamp()))
        });
        if !self.settle.is_zero() && !unchanged {
            let settled_before = walked_at
                .checked_sub(self.settle)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            if list.newest_mtime_ns > settled_before {
                return Err(IndexError::Changed(format!(
                    "modified in the last {:?}",
                    self.settle
                )));
            }
        }

        let metadata = match list.files.iter().find(|f| f.rel_path == METADATA_FILE) {
            None => GameMetadata::fallback(game),
            Some(file) => match std::fs::read_to_string(&file.abs_path)
                .map_err(|e| format!("{METADATA_FILE}: {e}"))
                .and_then(|text| GameMetadata::parse(&text, game))
            {
                Ok(mut m) => {
                    for note in m.cut_to_limits() {
                        errors.push(ScanError {
                            game: game.into(),
                            path: Some(METADATA_FILE.into()),
                            message: note,
                        });
                    }
                    m
                }
                Err(message) => {
                    errors.push(ScanError {
                        game: game.into(),
                        path: Some(METADATA_FILE.into()),
                        message: format!("{message}; using defaults"),
                    });
                    GameMetadata::fallback(game)
                }
            },
        };

        let is_dirty = |file: &ScannedFile| {
            cached
                .as_ref()
                .and_then(|c| c.stamps.get(&file.rel_path))
                .is_none_or(|stamp| *stamp != file.stamp())
        };
        // A file we cannot open is reported and left out, before the layout
        // is fixed.
        list.files.retain(|file| {
            if !is_dirty(file) {
                return true;
            }
            match File::open(&file.abs_path) {
                Ok(_) => true,
                Err(e) => {
                    errors.push(ScanError {
                        game: game.into(),
                        path: Some(file.rel_path.clone()),
                        message: format!("cannot read: {e}; skipped"),
                    });
                    false
                }
            }
        });
        let files = list.files;
        let total: u64 = files.iter().map(|f| f.size).sum();
        let piece_size = piece_size_for(total);
        let layout = Layout::new(files.iter().map(|f| f.size), piece_size);
        let n_pieces = layout.n_pieces();

        let same_layout = cached.as_ref().is_some_and(|c| {
            c.manifest.piece_size == piece_size
                && c.manifest.files.len() == files.len()
                && c.manifest
                    .files
                    .iter()
                    .zip(&files)
                    .all(|(a, b)| a.path == b.rel_path && a.size == b.size)
        });
        let (mut pieces, to_hash): (Vec<Hash>, Vec<usize>) = match &cached {
            Some(c) if same_layout => {
                let mut dirty = HashSet::new();
                for (file_idx, file) in files.iter().enumerate() {
                    if is_dirty(file) {
                        dirty.extend(layout.pieces_of_file(file_idx));
                    }
                }
                let mut dirty: Vec<usize> = dirty.into_iter().collect();
                dirty.sort_unstable();
                (c.manifest.pieces.clone(), dirty)
            }
            _ => (vec![Hash([0; 32]); n_pieces], (0..n_pieces).collect()),
        };

        let hashed = self.hash_pieces(&files, &layout, &to_hash, cancel, progress)?;
        for (piece_idx, hash) in hashed {
            pieces[piece_idx] = hash;
        }
        // The walk's stamps must still hold for every file we read: a game
        // being copied in is not indexed half-way.
        let mut read_files: Vec<usize> = to_hash
            .iter()
            .flat_map(|&p| layout.piece_spans(p).into_iter().map(|s| s.file_idx))
            .collect();
        read_files.dedup();
        for file_idx in read_files {
            let file = &files[file_idx];
            let now = std::fs::symlink_metadata(&file.abs_path)
                .map(|m| FileStamp {
                    size: m.len(),
                    mtime_ns: fsx::mtime_ns(&m),
                })
                .map_err(|e| IndexError::Changed(format!("{}: {e}", file.rel_path)))?;
            if now != file.stamp() {
                return Err(IndexError::Changed(file.rel_path.clone()));
            }
        }

        // Nothing may have appeared, gone or changed since the walk.
        if listing(&walk_game(game, &root)) != walked {
            return Err(IndexError::Changed("files changed while indexing".into()));
        }
        let manifest = Manifest {
            piece_size,
            files: files
                .iter()
                .map(|f| FileEntry {
                    path: f.rel_path.clone(),
                    size: f.size,
                    executable: f.executable,
                })
                .collect(),
            empty_dirs: list.empty_dirs,
            pieces,
        };
        let version_id = manifest.version_id();
        let racy_after = walked_at
            .checked_sub(RACY_MTIME_WINDOW)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let stamps: Vec<(String, FileStamp)> = files
            .iter()
            .map(|f| {
                let mut stamp = f.stamp();
                if stamp.mtime_ns >= racy_after {
                    stamp.mtime_ns = FileStamp::UNTRUSTED;
                }
                (f.rel_path.clone(), stamp)
            })
            .collect();
        if cached.as_ref().map(|c| (&c.manifest, &c.stamps))
            != Some((&manifest, &stamps.iter().cloned().collect()))
        {
            self.store
                .save_game(game, &manifest, &version_id, &stamps)?;
        }
        let thumbnail = load_thumbnail(game, &metadata, &files, &mut errors);
        Ok((
            Some(LocalGame {
                id: game.to_owned(),
                root,
                metadata,
                total_size: total,
                manifest: Arc::new(manifest),
                version_id,
                thumbnail,
                identities: Some(Arc::new(files.iter().map(|f| f.identity).collect())),
            }),
            errors,
        ))
    }

    /// Hash `pieces` on worker threads (one per core, up to the work there
    /// is), each reading whole pieces positionally into its own buffer.
    fn hash_pieces(
        &self,
        files: &[ScannedFile],
        layout: &Layout,
        pieces: &[usize],
        cancel: &CancellationToken,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Vec<(usize, Hash)>, IndexError> {
        if pieces.is_empty() {
            return Ok(Vec::new());
        }
        let bytes_total: u64 = pieces.iter().map(|&p| layout.piece_len(p)).sum();
        let bytes_done = AtomicU64::new(0);
        let next = AtomicUsize::new(0);
        let results = Mutex::new(Vec::with_capacity(pieces.len()));
        let failure: Mutex<Option<IndexError>> = Mutex::new(None);
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(pieces.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let mut buf = vec![0u8; layout.piece_size() as usize];
                    let mut open: Option<(usize, File)> = None;
                    let mut mine = Vec::new();
                    let outcome = loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&piece_idx) = pieces.get(i) else {
                            break Ok(());
                        };
                        if cancel.is_cancelled() {
                            break Err(IndexError::Cancelled);
                        }
                        if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                            break Ok(());
                        }
                        let len = layout.piece_len(piece_idx) as usize;
                        match read_piece(files, layout, piece_idx, &mut buf[..len], &mut open) {
                            Ok(()) => {}
                            Err(e) => break Err(e),
                        }
                        mine.push((piece_idx, Hash::from(blake3::hash(&buf[..len]))));
                        self.bytes_hashed.fetch_add(len as u64, Ordering::Relaxed);
                        let done = bytes_done.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
                        progress(done, bytes_total);
                    };
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(mine);
                    if let Err(e) = outcome {
                        failure
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        Ok(results.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a walk saw, for comparing two walks.
fn listing(list: &scan::FileList) -> (Vec<(String, u64, i64)>, Vec<String>) {
    let files = list
        .files
        .iter()
        .map(|f| (f.rel_path.clone(), f.size, f.mtime_ns))
        .collect();
    (files, list.empty_dirs.clone())
}

fn read_piece(
    files: &[ScannedFile],
    layout: &Layout,
    piece_idx: usize,
    buf: &mut [u8],
    open: &mut Option<(usize, File)>,
) -> Result<(), IndexError> {
    let mut at = 0usize;
    for span in layout.piece_spans(piece_idx) {
        let file = &files[span.file_idx];
        if open.as_ref().map(|(idx, _)| *idx) != Some(span.file_idx) {
            let handle = File::open(&file.abs_path)
                .map_err(|e| IndexError::Changed(format!("{}: {e}", file.rel_path)))?;
            *open = Some((span.file_idx, handle));
        }
        let (_, handle) = open.as_ref().expect("opened above");
        let len = span.len as usize;
        fsx::read_exact_at(handle, &mut buf[at..at + len], span.offset)
            .map_err(|e| IndexError::Changed(format!("{}: {e}", file.rel_path)))?;
        at += len;
    }
    Ok(())
}

fn load_thumbnail(
    game: &str,
    metadata: &GameMetadata,
    files: &[ScannedFile],
    errors: &mut Vec<ScanError>,
) -> Option<Thumbnail> {
    let lookup = |rel: &str| {
        let file = files.iter().find(|f| f.rel_path == rel)?;
        Some((file.abs_path.clone(), file.size))
    };
    find_thumbnail(game, metadata, lookup, errors)
}

/// The thumbnail of a game whose files are those of `manifest` under `root`
/// (a game just installed, not scanned). Problems are logged.
pub(crate) fn manifest_thumbnail(
    game: &str,
    root: &Path,
    metadata: &GameMetadata,
    manifest: &Manifest,
) -> Option<Thumbnail> {
    let lookup = |rel: &str| {
        let file = manifest.files.iter().find(|f| f.path == rel)?;
        Some((fsx::manifest_path(root, rel), file.size))
    };
    let mut errors = Vec::new();
    let thumbnail = find_thumbnail(game, metadata, lookup, &mut errors);
    for e in errors {
        tracing::warn!(game, "{}", e.message);
    }
    thumbnail
}

/// The first thumbnail candidate that `lookup` finds (path and size), read
/// and checked.
fn find_thumbnail(
    game: &str,
    metadata: &GameMetadata,
    lookup: impl Fn(&str) -> Option<(PathBuf, u64)>,
    errors: &mut Vec<ScanError>,
) -> Option<Thumbnail> {
    let named = metadata.thumbnail.is_some();
    for candidate in metadata.thumbnail_candidates() {
        let Some((abs_path, size)) = lookup(candidate) else {
            continue;
        };
        let problem = if size > MAX_THUMBNAIL_BYTES {
            format!("larger than {} KiB", MAX_THUMBNAIL_BYTES >> 10)
        } else {
            match std::fs::read(&abs_path) {
                Ok(bytes) => match image_mime(&bytes) {
                    Some(mime) => {
                        return Some(Thumbnail {
                            hash: Hash::of(&bytes),
                            mime,
                            bytes: Arc::new(bytes),
                        })
                    }
                    None => "not a png, jpeg or webp image".to_owned(),
                },
                Err(e) => format!("cannot read: {e}"),
            }
        };
        errors.push(ScanError {
            game: game.into(),
            path: Some(candidate.into()),
            message: format!("thumbnail {problem}; none shown"),
        });
        return None;
    }
    if named {
        errors.push(ScanError {
            game: game.into(),
            path: metadata.thumbnail.clone(),
            message: "thumbnail file not found".into(),
        });
    }
    None
}

/// Whether a top-level name can be a game: not hidden (which also hides the
/// download staging area).
/// What every receiver checks of a manifest and the walk alone can tell:
/// the caps on files and empty folders, path lengths, and names that are
/// one on Windows and macOS (case, Unicode normalization).
fn check_listing(list: &scan::FileList) -> Result<(), String> {
    use lanspread_proto::manifest::{check_collisions, MAX_EMPTY_DIRS, MAX_FILES};
    if list.files.len() > MAX_FILES {
        return Err(format!(
            "{} files, more than the limit of {MAX_FILES}",
            list.files.len()
        ));
    }
    if list.empty_dirs.len() > MAX_EMPTY_DIRS {
        return Err(format!(
            "{} empty folders, more than the limit of {MAX_EMPTY_DIRS}",
            list.empty_dirs.len()
        ));
    }
    let paths = || {
        list.files
            .iter()
            .map(|f| f.rel_path.as_str())
            .chain(list.empty_dirs.iter().map(String::as_str))
    };
    for path in paths() {
        lanspread_proto::path::validate_relative_path(path)
            .map_err(|e| format!("`{path}`: {e}"))?;
    }
    check_collisions(paths()).map_err(|e| e.to_string())
}

pub fn is_game_folder_name(name: &str) -> bool {
    !name.starts_with('.')
}

#[cfg(test)]
mod tests;
