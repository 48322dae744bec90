//! Walking a game folder into a sorted file list.
//!
//! Policy for awkward content (docs/ARCHITECTURE.md, "Games on disk"):
//! - names that are not UTF-8, or that Windows cannot create, are skipped
//!   and reported: a manifest must be installable on every platform;
//! - symbolic links inside a game are never followed (skipped, reported):
//!   they could point out of the game folder, and Windows peers could not
//!   recreate them anyway;
//! - anything that is neither a file nor a folder (sockets, devices) is
//!   skipped and reported.

use std::fs;
use std::path::{Path, PathBuf};

use lanspread_proto::path::validate_component;

use crate::fsx;
use crate::store::FileStamp;

/// A problem with one game or one file that does not stop the scan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanError {
    pub game: String,
    /// The file or folder concerned, relative to the game folder.
    pub path: Option<String>,
    pub message: String,
}

/// One regular file found in a game folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile {
    /// Relative, `/`-separated.
    pub rel_path: String,
    pub abs_path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub executable: bool,
    /// Which file it was when walked (see `fsx::open_below`).
    pub identity: fsx::FileIdentity,
}

impl ScannedFile {
    pub fn stamp(&self) -> FileStamp {
        FileStamp {
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

/// A walked game folder.
#[derive(Debug, Default)]
pub struct FileList {
    /// Sorted by `rel_path` (byte order), the manifest's order.
    pub files: Vec<ScannedFile>,
    pub empty_dirs: Vec<String>,
    pub errors: Vec<ScanError>,
    /// The newest modification time of any file or folder seen (ns since
    /// the epoch): a game still being copied in has a recent one.
    pub newest_mtime_ns: i64,
}

/// Walk `root` (a game folder). Never follows symbolic links.
pub fn walk_game(game: &str, root: &Path) -> FileList {
    let mut list = FileList::default();
    if let Ok(meta) = fs::metadata(root) {
        list.newest_mtime_ns = fsx::mtime_ns(&meta);
    }
    walk_dir(game, root, "", &mut list);
    list.files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    list.empty_dirs.sort();
    list
}

/// Returns whether anything was kept below `dir`.
fn walk_dir(game: &str, dir: &Path, rel: &str, list: &mut FileList) -> bool {
    let error = |path: &str, message: String| list_error(game, path, message);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let err = error(rel, format!("cannot read folder: {e}"));
            list.errors.push(err);
            // Not kept: an unreadable folder is not an empty one.
            return true;
        }
    };
    let mut kept_any = false;
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let err = error(rel, format!("cannot list folder: {e}"));
                list.errors.push(err);
                continue;
            }
        };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            let shown = entry.file_name().to_string_lossy().into_owned();
            let err = error(
                &join(rel, &shown),
                "name is not valid UTF-8; skipped".into(),
            );
            list.errors.push(err);
            continue;
        };
        let rel_path = join(rel, &name);
        if let Err(e) = validate_component(&name) {
            let err = error(
                &rel_path,
                format!("name cannot exist on Windows ({e}); skipped"),
            );
            list.errors.push(err);
            continue;
        }
        let metadata = match entry.path().symlink_metadata() {
            Ok(m) => m,
            Err(e) => {
                let err = error(&rel_path, format!("cannot read: {e}"));
                list.errors.push(err);
                continue;
            }
        };
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            let err = error(&rel_path, "symbolic link not followed; skipped".into());
            list.errors.push(err);
        } else if file_type.is_dir() {
            list.newest_mtime_ns = list.newest_mtime_ns.max(fsx::mtime_ns(&metadata));
            if !walk_dir(game, &entry.path(), &rel_path, list) {
                list.empty_dirs.push(rel_path);
            }
            kept_any = true;
        } else if file_type.is_file() {
            list.newest_mtime_ns = list.newest_mtime_ns.max(fsx::mtime_ns(&metadata));
            list.files.push(ScannedFile {
                rel_path,
                abs_path: entry.path(),
                size: metadata.len(),
                mtime_ns: fsx::mtime_ns(&metadata),
                executable: fsx::is_executable(&metadata),
                identity: fsx::FileIdentity::of(&metadata),
            });
            kept_any = true;
        } else {
            let err = error(&rel_path, "not a regular file or folder; skipped".into());
            list.errors.push(err);
        }
    }
    kept_any
}

fn list_error(game: &str, path: &str, message: String) -> ScanError {
    ScanError {
        game: game.to_owned(),
        path: (!path.is_empty()).then(|| path.to_owned()),
        message,
    }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}
