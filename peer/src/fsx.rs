//! Positional file IO on every platform: `FileExt::read_at`/`write_at` on
//! unix, `seek_read`/`seek_write` on Windows. Neither moves a shared cursor,
//! so several threads can use one file at once. Also: where a manifest's
//! `/`-separated path lives on this platform.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Absolute path of a manifest (or metadata) path below `root`. The path
/// must have been validated (relative, no `..`; see `proto::path`).
pub fn manifest_path(root: &Path, rel: &str) -> PathBuf {
    let mut path = root.to_path_buf();
    path.extend(rel.split('/'));
    path
}

/// Which file a path held when indexed: its modification time and, on unix,
/// its inode. A file replaced (renamed over, or rewritten) since has
/// another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub mtime_ns: i64,
    /// 0 where the platform's std does not tell (Windows).
    pub ino: u64,
}

impl FileIdentity {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let ino = 0;
        Self {
            mtime_ns: mtime_ns(metadata),
            ino,
        }
    }
}

/// Open the manifest file `rel` below `root` for reading, never following a
/// link below `root` (`root` itself may be one: a host shares a folder by
/// linking it), and check it is still the file indexed: a regular file of
/// `size` bytes, with the `indexed` identity when one was recorded. A file or folder swapped for a link after indexing, or
/// anything but a regular file, is refused (`InvalidData`). `rel` must be a
/// validated manifest path.
///
/// Unix: every folder is opened relative to the one above it with
/// `O_NOFOLLOW | O_DIRECTORY` and the file with `O_NOFOLLOW` (`openat`), so
/// no swap at any moment can redirect the open. Windows: each folder is
/// checked with `symlink_metadata` (refused if a reparse point) and the file
/// is opened with `FILE_FLAG_OPEN_REPARSE_POINT` and refused if it is one;
/// Windows' std offers no handle-relative open, so a folder swapped between
/// its check and the open is the one window left there.
pub fn open_below(
    root: &Path,
    rel: &str,
    size: u64,
    indexed: Option<FileIdentity>,
) -> io::Result<File> {
    BelowOpener::new(root).open(rel, size, indexed)
}

/// Opens files below one root in turn, each exactly as [`open_below`] does,
/// keeping the folder of the last one open (unix): the files of a piece that
/// spans many small files of one folder cost one `openat` each, not one per
/// component of their path. The folder is held by its descriptor, so a swap
/// after it was opened cannot redirect a later open, as within one walk.
pub struct BelowOpener<'a> {
    root: &'a Path,
    /// The last file's folder: its path below `root` and its descriptor.
    #[cfg(unix)]
    folder: Option<(String, rustix::fd::OwnedFd)>,
}

impl<'a> BelowOpener<'a> {
    pub fn new(root: &'a Path) -> Self {
        Self {
            root,
            #[cfg(unix)]
            folder: None,
        }
    }

    /// [`open_below`] for `rel` below this opener's root.
    pub fn open(
        &mut self,
        rel: &str,
        size: u64,
        indexed: Option<FileIdentity>,
    ) -> io::Result<File> {
        let file = self.open_no_follow(rel)?;
        let metadata = file.metadata()?;
        if !metadata.is_file()
            || metadata.len() != size
            || indexed.is_some_and(|id| id != FileIdentity::of(&metadata))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`{rel}` is no longer the file that was indexed"),
            ));
        }
        #[cfg(windows)]
        {
            use std::os::windows::fs::MetadataExt;
            if metadata.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
                return Err(swapped(rel));
            }
        }
        Ok(file)
    }

    #[cfg(unix)]
    fn open_no_follow(&mut self, rel: &str) -> io::Result<File> {
        use rustix::fs::{open, openat, Mode, OFlags};
        let map = |e: rustix::io::Errno| {
            // ELOOP (a link as the last part) and ENOTDIR (a link as a folder)
            // are what a swapped link looks like.
            if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                swapped(rel)
            } else {
                io::Error::from(e)
            }
        };
        if rel.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        }
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if self.folder.as_ref().is_none_or(|(p, _)| p != parent) {
            self.folder = None;
            let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let mut dir = open(self.root, dir_flags, Mode::empty())?;
            for part in parent.split('/').filter(|p| !p.is_empty()) {
                dir =
                    openat(&dir, part, dir_flags | OFlags::NOFOLLOW, Mode::empty()).map_err(map)?;
            }
            self.folder = Some((parent.to_owned(), dir));
        }
        let (_, dir) = self.folder.as_ref().expect("set above");
        // NONBLOCK: a FIFO swapped in must not hang the reader; the type
        // check after the open refuses it.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = openat(dir, name, flags, Mode::empty()).map_err(map)?;
        Ok(File::from(fd))
    }

    #[cfg(windows)]
    fn open_no_follow(&mut self, rel: &str) -> io::Result<File> {
        open_no_follow(self.root, rel)
    }
}

fn swapped(rel: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("`{rel}` goes through a link made after indexing; not followed"),
    )
}

#[cfg(windows)]
const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;

#[cfg(windows)]
fn open_no_follow(root: &Path, rel: &str) -> io::Result<File> {
    use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    let mut path = root.to_path_buf();
    let mut parts = rel.split('/').peekable();
    while let Some(part) = parts.next() {
        path.push(part);
        if parts.peek().is_some() {
            let metadata = std::fs::symlink_metadata(&path)?;
            if metadata.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0 || !metadata.is_dir()
            {
                return Err(swapped(rel));
            }
        }
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(&path)
}

/// Make a file readable and writable by its owner only (mode 0600) if it
/// is open to anyone else. On Windows nothing to do: files in the user's
/// profile inherit an owner-only ACL.
pub fn restrict_to_owner(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Options that create a file readable by its owner only (mode 0600 on
/// unix, set at creation so it is never readable by others meanwhile).
pub fn owner_only_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Fill `buf` from `offset`, or fail with `UnexpectedEof` if the file is shorter.
pub fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match read_at(file, buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended early",
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write all of `buf` at `offset`.
pub fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match write_at(file, buf, offset) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Start writing `len` bytes at `offset` back to disk without waiting for
/// it, and without a device flush (Linux `sync_file_range`; elsewhere
/// nothing, and the caller's periodic flush does the work).
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range(2) on a descriptor we own for the call.
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
    Ok(())
}

/// Whether this platform's writes can bypass the page cache here (Linux
/// `O_DIRECT`, switched on and off per handle with `fcntl`). Windows would
/// need `FILE_FLAG_NO_BUFFERING`, which only `CreateFile` can set (a second
/// handle per file) and which wants the volume's sector size: there, and on
/// macOS, every write stays buffered.
pub const DIRECT_IO: bool = cfg!(target_os = "linux");

/// Alignment of a direct write: its file offset, its length and its memory.
/// A page at least, so that a page of the page cache never holds both bytes
/// written directly and bytes written through the cache (the kernel would
/// write the cached page back over the direct bytes). Asked of the system
/// once.
pub fn direct_io_align() -> usize {
    const MIN_ALIGN: usize = 4096;
    static ALIGN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ALIGN.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf(3) reads a constant of the system.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            usize::try_from(page)
                .ok()
                .filter(|p| p.is_power_of_two())
                .map_or(MIN_ALIGN, |p| p.max(MIN_ALIGN))
        }
        // Elsewhere nothing is written directly (`DIRECT_IO`); receive
        // buffers are still page-aligned.
        #[cfg(not(target_os = "linux"))]
        MIN_ALIGN
    })
}

/// Switch direct IO (no page-cache copy: Linux `O_DIRECT`) on or off for
/// the open file `file`. `Err` where the file system refuses it (`EINVAL`)
/// or the platform has none (`Unsupported`).
pub fn set_direct_io(file: &File, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        let flags = fcntl_getfl(file)?;
        let wanted = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        if wanted != flags {
            fcntl_setfl(file, wanted)?;
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no direct IO on this platform",
        ))
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, buf, offset)
}

#[cfg(windows)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, buf, offset)
}

/// Whether the file has an executable bit set (never, on Windows).
pub fn is_executable(metadata: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        false
    }
}

/// Modification time in nanoseconds since the Unix epoch (0 if unknown).
pub fn mtime_ns(metadata: &std::fs::Metadata) -> i64 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        write_all_at(&file, b"world", 6).unwrap();
        write_all_at(&file, b"hello ", 0).unwrap();
        let mut buf = [0u8; 5];
        read_exact_at(&file, &mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        let err = read_exact_at(&file, &mut buf, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// One opener across files: the files of one folder share its descriptor,
    /// a folder swapped for a link is refused when first walked, and a swap
    /// after the walk never redirects a later open (the held folder is used).
    #[cfg(unix)]
    #[test]
    fn one_opener_keeps_each_folder_and_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("game"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(root.join("sub").join(name), b"game").unwrap();
            std::fs::write(outside.join(name), b"SECR").unwrap();
        }
        std::fs::write(root.join("top"), b"top!").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let read = |file: File| {
            let mut buf = [0u8; 4];
            read_exact_at(&file, &mut buf, 0).unwrap();
            buf
        };
        let mut opener = BelowOpener::new(&root);
        assert_eq!(read(opener.open("sub/a", 4, None).unwrap()), *b"game");
        assert_eq!(read(opener.open("sub/b", 4, None).unwrap()), *b"game");
        assert_eq!(read(opener.open("top", 4, None).unwrap()), *b"top!");
        assert!(opener.open("link/a", 4, None).is_err());
        assert_eq!(read(opener.open("sub/a", 4, None).unwrap()), *b"game");
        // The held folder swapped for a link: the next open still reads the
        // folder walked, never the link's target.
        std::fs::rename(root.join("sub"), root.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
        assert_eq!(read(opener.open("sub/c", 4, None).unwrap()), *b"game");
        assert!(BelowOpener::new(&root).open("sub/c", 4, None).is_err());
    }

    /// Pins issue 13: a file or folder of a game swapped for a link after
    /// indexing was followed when served.
    #[cfg(unix)]
    #[test]
    fn open_below_never_follows_a_link_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("game"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("sub/a"), b"game").unwrap();
        std::fs::write(outside.join("a"), b"SECR").unwrap();
        assert!(open_below(&root, "sub/a", 4, None).is_ok());
        assert_eq!(
            open_below(&root, "sub/a", 5, None).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Replaced by another file of the same size since it was indexed.
        let indexed = FileIdentity::of(&std::fs::metadata(root.join("sub/a")).unwrap());
        assert!(open_below(&root, "sub/a", 4, Some(indexed)).is_ok());
        std::fs::write(root.join("new"), b"othr").unwrap();
        std::fs::rename(root.join("new"), root.join("sub/a")).unwrap();
        assert_eq!(
            open_below(&root, "sub/a", 4, Some(indexed))
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::write(root.join("sub/a"), b"game").unwrap();
        // The file swapped for a link.
        std::fs::remove_file(root.join("sub/a")).unwrap();
        std::os::unix::fs::symlink(outside.join("a"), root.join("sub/a")).unwrap();
        assert_eq!(
            open_below(&root, "sub/a", 4, None).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // The folder above it swapped for a link.
        std::fs::remove_dir_all(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
        assert_eq!(
            open_below(&root, "sub/a", 4, None).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // The root itself may be a link (a shared folder).
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&outside, &linked).unwrap();
        assert!(open_below(&linked, "a", 4, None).is_ok());
    }
}
