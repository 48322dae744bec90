//! The staging folder of a download and the disk work on it: preallocate,
//! read back, verify and write pieces, make durable, and move into place.
//! Everything here blocks: call it from a blocking thread.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use lanspread_proto::{Hash, Layout, Manifest};

pub use super::files::{closer, CloseLoop, Closer, OpenFiles};
use crate::fsx;

/// The staging area, a hidden folder of the games folder (so the library
/// never lists it) on the same file system (so the final rename is atomic).
pub const STAGING_DIR: &str = ".lanspread-staging";

/// Where the download of `version_id` is assembled.
pub fn staging_root(games_dir: &Path, version_id: &Hash) -> PathBuf {
    games_dir.join(STAGING_DIR).join(version_id.to_hex())
}

/// Create the folders and files of `manifest` below `root`, each file
/// reserved at its full size. Existing files of the right size are kept
/// (a resumed download). Each folder is created once, however many files it
/// holds, and each file is closed on `closer`'s thread, not here (on
/// Windows a close is where the virus scanner works).
pub fn prepare(root: &Path, manifest: &Manifest, closer: &Closer) -> io::Result<()> {
    // Checked where it arrived, and again here, where its paths touch the disk.
    manifest
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad manifest: {e}")))?;
    fs::create_dir_all(root)?;
    let mut made: HashSet<PathBuf> = HashSet::new();
    for dir in &manifest.empty_dirs {
        fs::create_dir_all(fsx::manifest_path(root, dir))?;
    }
    let mut unreserved = false;
    let mut to_close = Vec::new();
    for entry in &manifest.files {
        let path = fsx::manifest_path(root, &entry.path);
        if let Some(parent) = path.parent() {
            if parent != root && !made.contains(parent) {
                fs::create_dir_all(parent)?;
                made.insert(parent.to_path_buf());
            }
        }
        // A new file (the usual case) takes one call to size and reserve
        // where the platform has it; an existing one (a resumed download)
        // is checked and kept.
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                if entry.size > 0 {
                    if !unreserved && reserve_new(&file, entry.size)? {
                        closer.close_batched(&mut to_close, file);
                        continue;
                    }
                    file.set_len(entry.size)?;
                }
                file
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                if file.metadata()?.len() != entry.size {
                    file.set_len(entry.size)?;
                }
                file
            }
            Err(e) => return Err(e),
        };
        if entry.size > 0 && !unreserved {
            // Reserve the blocks now: a full disk fails here, not mid-way.
            // Some file systems cannot (older ZFS, some network shares, Wine):
            // the file already has its full length, so go on without.
            match fs4::FileExt::allocate(&file, entry.size) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => unreserved = true,
                other => other?,
            }
        }
        closer.close_batched(&mut to_close, file);
    }
    closer.close(to_close);
    if unreserved {
        tracing::warn!(
            root = %root.display(),
            "this file system cannot reserve space ahead: a full disk shows while writing"
        );
    }
    Ok(())
}

/// Give the new, empty `file` its length `size` with its blocks reserved,
/// in one call (Linux `fallocate`); `Ok(false)` where that cannot be done
/// (other platforms, or a file system without it): the caller sizes and
/// reserves it the portable way.
fn reserve_new(file: &File, size: u64) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(len) = libc::off_t::try_from(size) else {
            return Ok(false);
        };
        // SAFETY: fallocate(2) on a descriptor we own for the duration of the call.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(false),
            _ => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, size);
        Ok(false)
    }
}

/// Read piece `piece_idx` of the files below `root` into `buf`.
pub fn read_piece(
    root: &Path,
    manifest: &Manifest,
    layout: &Layout,
    piece_idx: usize,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.resize(layout.piece_len(piece_idx) as usize, 0);
    let mut at = 0usize;
    for span in layout.piece_spans(piece_idx) {
        let file = File::open(fsx::manifest_path(
            root,
            &manifest.files[span.file_idx].path,
        ))?;
        let len = span.len as usize;
        fsx::read_exact_at(&file, &mut buf[at..at + len], span.offset)?;
        at += len;
    }
    Ok(())
}

/// Whether `data` is piece `piece_idx` of `manifest`.
pub fn verify(manifest: &Manifest, piece_idx: usize, data: &[u8]) -> bool {
    manifest.pieces.get(piece_idx) == Some(&Hash::of(data))
}

/// Write a verified piece positionally into its files, through the
/// download's open files (kept open across pieces, closed off this thread;
/// big spans written directly where they can be: see `files::StagingFile`).
pub fn write_piece(
    files: &OpenFiles,
    layout: &Layout,
    piece_idx: usize,
    data: &[u8],
) -> io::Result<()> {
    let mut at = 0usize;
    for span in layout.piece_spans(piece_idx) {
        let len = span.len as usize;
        files.write(span.file_idx, &data[at..at + len], span.offset)?;
        at += len;
    }
    Ok(())
}

/// Flush every file and folder below `root` to disk: one durability step per
/// game, not per piece (on Linux one `syncfs` for the whole file system:
/// an fsync per file caps a game of small files at ~1.7k files/s).
/// `files_flushed`: every file was flushed when its last handle closed
/// (`files::CloseLoop::run`), so only the folder is left.
pub fn sync_all(root: &Path, manifest: &Manifest, files_flushed: bool) -> io::Result<()> {
    for entry in manifest.files.iter().filter(|e| e.executable) {
        set_executable(&fsx::manifest_path(root, &entry.path))?;
    }
    if sync_file_system(root)? {
        return Ok(());
    }
    if files_flushed {
        return sync_dir(root);
    }
    for entry in &manifest.files {
        OpenOptions::new()
            .write(true)
            .open(fsx::manifest_path(root, &entry.path))?
            .sync_all()?;
    }
    sync_dir(root)
}

/// Flush the whole file system holding `path`, if the platform can; returns
/// whether it did. Also used during a download to keep dirty pages few, so
/// the final flush is short.
pub fn sync_file_system(path: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let dir = File::open(path)?;
        // SAFETY: syncfs(2) on a descriptor we own for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok(false)
    }
}

#[cfg(unix)]
fn set_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut permissions = fs::metadata(path)?.permissions();
    permissions.set_mode(permissions.mode() | 0o111);
    fs::set_permissions(path, permissions)
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Make a folder's entries durable (unix); Windows has no folder fsync.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// Suffix given to a file of the player's that carries over to a path the
/// new version ships itself: both are kept.
pub const KEPT_SUFFIX: &str = ".lanspread-kept";

/// What [`carry_over`] moved: `(from, to)` paths relative to the two roots,
/// so a failed install can move them back.
pub type Carried = Vec<(String, String)>;

/// Move every entry below `old_root` that `shipped` does not list (saves,
/// configs, anything the player or the game made) to the same place below
/// `new_root`. Never overwrites: where the new version ships that path, the
/// player's file lands next to it with [`KEPT_SUFFIX`]. Links are moved as
/// links, never followed. Returns what moved; on an error, what moved so far
/// stays moved (the caller moves it back).
pub fn carry_over(
    old_root: &Path,
    new_root: &Path,
    shipped: &std::collections::HashSet<&str>,
    carried: &mut Carried,
) -> io::Result<()> {
    carry_dir(old_root, new_root, "", shipped, carried)
}

fn carry_dir(
    old_root: &Path,
    new_root: &Path,
    rel: &str,
    shipped: &std::collections::HashSet<&str>,
    carried: &mut Carried,
) -> io::Result<()> {
    let dir = if rel.is_empty() {
        old_root.to_path_buf()
    } else {
        fsx::manifest_path(old_root, rel)
    };
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            // Not UTF-8: cannot be named in a manifest, so never shipped.
            // Moved as it is, next to where it was.
            let to_dir = if rel.is_empty() {
                new_root.to_path_buf()
            } else {
                fsx::manifest_path(new_root, rel)
            };
            fs::create_dir_all(&to_dir)?;
            fs::rename(entry.path(), to_dir.join(entry.file_name()))?;
            continue;
        };
        let rel_path = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let file_type = entry.file_type()?;
        if file_type.is_dir() && !file_type.is_symlink() {
            carry_dir(old_root, new_root, &rel_path, shipped, carried)?;
            continue;
        }
        if shipped.contains(rel_path.as_str()) {
            continue;
        }
        let mut to = rel_path.clone();
        if fs::symlink_metadata(fsx::manifest_path(new_root, &to)).is_ok() {
            to = format!("{rel_path}{KEPT_SUFFIX}");
            if fs::symlink_metadata(fsx::manifest_path(new_root, &to)).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("cannot keep `{rel_path}`: `{to}` exists in the new version"),
                ));
            }
        }
        let target = fsx::manifest_path(new_root, &to);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(entry.path(), &target)?;
        carried.push((rel_path, to));
    }
    Ok(())
}

/// Undo [`carry_over`]: move each carried entry back (best effort).
pub fn carry_back(old_root: &Path, new_root: &Path, carried: &Carried) {
    for (from, to) in carried.iter().rev() {
        let back = fsx::manifest_path(old_root, from);
        if let Some(parent) = back.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if let Err(e) = fs::rename(fsx::manifest_path(new_root, to), &back) {
            tracing::warn!("cannot move `{to}` back to the installed game: {e}");
        }
    }
}
