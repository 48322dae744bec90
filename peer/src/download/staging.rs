//! The staging folder of a download and the disk work on it: preallocate,
//! read back, verify and write pieces, make durable, and move into place.
//! Everything here blocks: call it from a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use lanspread_proto::{Hash, Layout, Manifest};

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
/// (a resumed download).
pub fn prepare(root: &Path, manifest: &Manifest) -> io::Result<()> {
    fs::create_dir_all(root)?;
    for dir in &manifest.empty_dirs {
        fs::create_dir_all(fsx::manifest_path(root, dir))?;
    }
    for entry in &manifest.files {
        let path = fsx::manifest_path(root, &entry.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if file.metadata()?.len() != entry.size {
            file.set_len(entry.size)?;
        }
        if entry.size > 0 {
            // Reserve the blocks now: a full disk fails here, not mid-way.
            fs4::FileExt::allocate(&file, entry.size)?;
        }
    }
    Ok(())
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

/// A written span at least this long starts its own writeback: the disk is
/// busy from the first piece of a big file on, and dirty memory stays small.
/// Spans of small files are left to the periodic flush, which writes many of
/// them in one go.
const WRITEBACK_MIN_SPAN: u64 = 256 << 10;

/// Write a verified piece positionally into its files.
pub fn write_piece(
    root: &Path,
    manifest: &Manifest,
    layout: &Layout,
    piece_idx: usize,
    data: &[u8],
) -> io::Result<()> {
    let mut at = 0usize;
    for span in layout.piece_spans(piece_idx) {
        let file = OpenOptions::new().write(true).open(fsx::manifest_path(
            root,
            &manifest.files[span.file_idx].path,
        ))?;
        let len = span.len as usize;
        fsx::write_all_at(&file, &data[at..at + len], span.offset)?;
        if span.len >= WRITEBACK_MIN_SPAN {
            fsx::start_writeback(&file, span.offset, span.len)?;
        }
        at += len;
    }
    Ok(())
}

/// Flush every file and folder below `root` to disk: one durability step per
/// game, not per piece (on Linux one `syncfs` for the whole file system:
/// an fsync per file caps a game of small files at ~1.7k files/s).
pub fn sync_all(root: &Path, manifest: &Manifest) -> io::Result<()> {
    for entry in manifest.files.iter().filter(|e| e.executable) {
        set_executable(&fsx::manifest_path(root, &entry.path))?;
    }
    if sync_file_system(root)? {
        return Ok(());
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
