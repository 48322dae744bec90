//! The open files of one download's staging folder, and their closing.
//!
//! A piece of a big file is one span of it, and a piece of small files spans
//! many: opening and closing a file for every span costs a path lookup each
//! time, and on Windows closing a written file is where Defender scans it
//! (milliseconds per file). So [`OpenFiles`] keeps the last
//! [`OPEN_FILES_PER_DOWNLOAD`] files written open across pieces, and every
//! handle it lets go (evicted, or all of them when the download ends) goes to
//! a [`Closer`]: a loop on a thread of its own closes them, never the thread
//! writing pieces. The loop ends once every sender is gone; waiting for it
//! before the install means no handle is open when the folder is renamed
//! (Windows refuses to rename a folder with open files).
//!
//! A big file's spans are written with direct IO where it can be had
//! ([`StagingFile::write_span`]): the page-aligned middle of a span goes from
//! the received piece's buffer to the disk without the kernel copying it
//! into the page cache; its unaligned ends, small files, and every file where
//! the file system or platform refuses direct IO go through the page cache.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use lanspread_proto::Manifest;

use crate::fsx;

/// Files of one download kept open across pieces, at most. A piece of small
/// files touches many, in order: beyond this the least recently written is
/// closed (off the write path). Each is one descriptor (a process may open
/// 1024 by default on Linux, 256 on macOS).
pub const OPEN_FILES_PER_DOWNLOAD: usize = 32;

/// Handles go to the closing loop in batches of this many (one wake-up of
/// its thread per batch, not per file).
pub const CLOSE_BATCH: usize = 16;

/// Batches waiting to be closed, at most; a writer waits beyond this (a disk
/// or scanner slower than the download holds it back, with bounded handles).
pub const CLOSE_BACKLOG: usize = 16;

/// A written span at least this long is a big file's: its page-aligned
/// middle is written directly where the platform and file system allow it
/// (no page-cache copy; see [`StagingFile::write_span`]), and what goes
/// through the page cache starts its own writeback at once, so the disk is
/// busy from the first piece of a big file on and dirty memory stays small.
/// Shorter spans (small files) go through the page cache and are left to the
/// periodic flush, which writes many of them in one go.
pub const BIG_SPAN: u64 = 256 << 10;

/// Hands files to the closing loop. Cloned freely; the loop ends when every
/// clone is dropped.
#[derive(Clone)]
pub struct Closer {
    tx: mpsc::SyncSender<Vec<File>>,
    closed: Arc<AtomicU64>,
}

/// The closing loop: run it on a thread of its own ([`CloseLoop::run`]).
pub struct CloseLoop {
    rx: mpsc::Receiver<Vec<File>>,
    closed: Arc<AtomicU64>,
}

/// A closer and its loop.
pub fn closer() -> (Closer, CloseLoop) {
    let (tx, rx) = mpsc::sync_channel(CLOSE_BACKLOG);
    let closed = Arc::new(AtomicU64::new(0));
    (
        Closer {
            tx,
            closed: closed.clone(),
        },
        CloseLoop { rx, closed },
    )
}

impl Closer {
    /// Close `files` on the closing loop.
    pub fn close(&self, files: Vec<File>) {
        if files.is_empty() {
            return;
        }
        // The loop is gone only if its thread panicked: then close here.
        let _ = self.tx.send(files);
    }

    /// Add `file` to `batch`, and send the batch once it is full.
    pub fn close_batched(&self, batch: &mut Vec<File>, file: File) {
        batch.push(file);
        if batch.len() >= CLOSE_BATCH {
            self.close(std::mem::take(batch));
        }
    }

    /// Files the loop has closed so far.
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }
}

impl CloseLoop {
    /// Close every file sent, until every [`Closer`] is dropped. Where the
    /// platform has no flush of a whole file system (all but Linux), each
    /// file is flushed before it is closed, here too, off the write path
    /// and mostly while the download runs: returns whether every file was
    /// (then the install has nothing left to flush file by file; on
    /// Windows, reopening and closing every file there is where Defender
    /// scanned them all again).
    pub fn run(self) -> bool {
        let mut flushed = !cfg!(target_os = "linux");
        for files in self.rx {
            let n = files.len() as u64;
            for file in files {
                if flushed {
                    if let Err(e) = file.sync_all() {
                        tracing::debug!("cannot flush a staging file: {e}");
                        flushed = false;
                    }
                }
                drop(file);
            }
            self.closed.fetch_add(n, Ordering::Relaxed);
        }
        flushed
    }
}

/// The files below one staging root open for writing, least recently used
/// closed first. Shared by the threads writing pieces: a handle is taken out
/// while written (concurrent writes never share one) and put back after.
pub struct OpenFiles {
    root: PathBuf,
    manifest: Arc<Manifest>,
    closer: Closer,
    open: Mutex<Lru>,
    opened: AtomicU64,
    /// Direct IO may be tried: cleared at the first refusal, so a file
    /// system without it costs one failed attempt per download.
    direct_ok: AtomicBool,
}

#[derive(Default)]
struct Lru {
    /// File index in the manifest: the handle and when it was last used.
    files: HashMap<usize, (StagingFile, u64)>,
    tick: u64,
    /// Handles let go, waiting to make a batch for the closer.
    spare: Vec<File>,
    /// The folder of the last file opened, by its path below the root
    /// (unix): files are opened relative to it, so the files of one folder
    /// cost no walk of their whole path each.
    #[cfg(unix)]
    folder: Option<(String, Arc<rustix::fd::OwnedFd>)>,
}

impl Lru {
    /// Put `file` back; returns a handle to close (the one over the bound,
    /// or this one if another writer already put one back for this file).
    fn put(&mut self, file_idx: usize, file: StagingFile) -> Option<File> {
        self.tick += 1;
        if self.files.contains_key(&file_idx) {
            return Some(file.file);
        }
        self.files.insert(file_idx, (file, self.tick));
        if self.files.len() <= OPEN_FILES_PER_DOWNLOAD {
            return None;
        }
        let oldest = self
            .files
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(idx, _)| *idx)?;
        self.files.remove(&oldest).map(|(file, _)| file.file)
    }
}

/// A staging file open for writing, and whether direct IO is on for it.
pub struct StagingFile {
    file: File,
    /// `O_DIRECT` is set on the handle now.
    direct: bool,
}

impl StagingFile {
    fn new(file: File) -> Self {
        Self {
            file,
            direct: false,
        }
    }

    /// Write all of `data` at `offset`. A span of at least [`BIG_SPAN`]
    /// whose middle is aligned (to `align`: `fsx::direct_io_align`) alike in
    /// memory and in the file (see `piece_buf::direct_shift`) has that
    /// middle written directly while `direct_ok` holds; a refusal (the file
    /// system does not do direct IO, or wants a larger alignment) clears
    /// `direct_ok` and writes the span through the page cache instead.
    /// Either way every byte is written when this returns `Ok`.
    pub fn write_span(
        &mut self,
        data: &[u8],
        offset: u64,
        direct_ok: &AtomicBool,
        align: usize,
    ) -> io::Result<()> {
        let middle = direct_ok
            .load(Ordering::Relaxed)
            .then(|| direct_middle(data.as_ptr() as usize, offset, data.len(), align))
            .flatten();
        let Some(middle) = middle else {
            return self.write_buffered(data, offset);
        };
        self.write_buffered(&data[..middle.start], offset)?;
        let at = offset + middle.start as u64;
        match self.write_direct(&data[middle.clone()], at) {
            Ok(()) => {}
            Err(e) if refused(&e) => {
                if direct_ok.swap(false, Ordering::Relaxed) {
                    tracing::info!("direct IO refused here ({e}); writing through the page cache");
                }
                self.write_buffered(&data[middle.clone()], at)?;
            }
            Err(e) => return Err(e),
        }
        self.write_buffered(&data[middle.end..], offset + middle.end as u64)
    }

    fn write_direct(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if !self.direct {
            fsx::set_direct_io(&self.file, true)?;
            self.direct = true;
        }
        fsx::write_all_at(&self.file, data, offset)
    }

    fn write_buffered(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.direct {
            fsx::set_direct_io(&self.file, false)?;
            self.direct = false;
        }
        fsx::write_all_at(&self.file, data, offset)?;
        if data.len() as u64 >= BIG_SPAN {
            fsx::start_writeback(&self.file, offset, data.len() as u64)?;
        }
        Ok(())
    }
}

/// The part of a span of `len` bytes at memory address `addr` and file
/// offset `offset` to write directly: its `align`-aligned middle, as a range
/// of the span, when direct IO is had on this platform, the span is big
/// ([`BIG_SPAN`]), memory and file are aligned alike, and the middle is
/// still big. `None`: write it all through the page cache.
fn direct_middle(addr: usize, offset: u64, len: usize, align: usize) -> Option<Range<usize>> {
    if !fsx::DIRECT_IO || (len as u64) < BIG_SPAN {
        return None;
    }
    let mask = align as u64 - 1;
    if (addr as u64) & mask != offset & mask {
        return None;
    }
    let head = ((align as u64 - (offset & mask)) & mask) as usize;
    let end = ((offset + len as u64) & !mask).checked_sub(offset)? as usize;
    (end > head && (end - head) as u64 >= BIG_SPAN).then_some(head..end)
}

/// Whether a direct write failed because direct IO is not had here (the
/// file system refuses the flag or the alignment, `EINVAL`, or the platform
/// has none), not for want of space or a broken disk: then the bytes go
/// through the page cache.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    )
}

impl OpenFiles {
    pub fn new(root: PathBuf, manifest: Arc<Manifest>, closer: Closer) -> Self {
        Self {
            root,
            manifest,
            closer,
            open: Mutex::default(),
            opened: AtomicU64::new(0),
            direct_ok: AtomicBool::new(fsx::DIRECT_IO),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `work` on file `file_idx` of the manifest, open for writing: the
    /// handle kept from an earlier piece, or opened now and kept after.
    pub fn with_file<T>(
        &self,
        file_idx: usize,
        work: impl FnOnce(&mut StagingFile) -> io::Result<T>,
    ) -> io::Result<T> {
        let kept = self.lock().files.remove(&file_idx).map(|(file, _)| file);
        let mut file = match kept {
            Some(file) => file,
            None => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                StagingFile::new(self.open_for_writing(&self.manifest.files[file_idx].path)?)
            }
        };
        let result = work(&mut file);
        let batch = {
            let mut lru = self.lock();
            match lru.put(file_idx, file) {
                Some(spare) => {
                    lru.spare.push(spare);
                    (lru.spare.len() >= CLOSE_BATCH).then(|| std::mem::take(&mut lru.spare))
                }
                None => None,
            }
        };
        if let Some(batch) = batch {
            self.closer.close(batch);
        }
        result
    }

    #[cfg(unix)]
    fn open_for_writing(&self, rel: &str) -> io::Result<File> {
        use rustix::fs::{open, openat, Mode, OFlags};
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let kept = self
            .lock()
            .folder
            .as_ref()
            .filter(|(p, _)| p == parent)
            .map(|(_, dir)| dir.clone());
        let dir = match kept {
            Some(dir) => dir,
            None => {
                let path = if parent.is_empty() {
                    self.root.clone()
                } else {
                    fsx::manifest_path(&self.root, parent)
                };
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let dir = Arc::new(open(&path, flags, Mode::empty())?);
                self.lock().folder = Some((parent.to_owned(), dir.clone()));
                dir
            }
        };
        let fd = openat(&*dir, name, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(File::from(fd))
    }

    #[cfg(not(unix))]
    fn open_for_writing(&self, rel: &str) -> io::Result<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(fsx::manifest_path(&self.root, rel))
    }

    /// Write `data` at `offset` of file `file_idx` (see
    /// [`StagingFile::write_span`]).
    pub fn write(&self, file_idx: usize, data: &[u8], offset: u64) -> io::Result<()> {
        self.with_file(file_idx, |file| {
            file.write_span(data, offset, &self.direct_ok, fsx::direct_io_align())
        })
    }

    /// Whether direct IO is still tried for this download's big files.
    pub fn direct_io(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    /// Hand every open handle to the closer.
    pub fn close_all(&self) {
        let files: Vec<File> = {
            let mut lru = self.lock();
            let mut files = std::mem::take(&mut lru.spare);
            files.extend(lru.files.drain().map(|(_, (f, _))| f.file));
            files
        };
        self.closer.close(files);
    }

    /// The staging root the files are below.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Files opened so far (each open is a path lookup, and a close later).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for OpenFiles {
    fn drop(&mut self) {
        self.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::staging;
    use lanspread_proto::{FileEntry, Hash};

    /// A game of one file spanning four pieces and 100 small files in a
    /// folder, with its bytes.
    fn game() -> (Manifest, Vec<u8>) {
        let piece_size = 1usize << 20;
        let mut files = vec![FileEntry {
            path: "big.bin".into(),
            size: (3 << 20) + 1000,
            executable: false,
        }];
        for i in 0..100 {
            files.push(FileEntry {
                path: format!("small/f{i:03}"),
                size: 100,
                executable: false,
            });
        }
        let total: u64 = files.iter().map(|f| f.size).sum();
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let pieces = data.chunks(piece_size).map(Hash::of).collect();
        let manifest = Manifest {
            piece_size: piece_size as u32,
            files,
            empty_dirs: Vec::new(),
            pieces,
        };
        (manifest, data)
    }

    /// Pins the Windows pitfall "Defender makes closing many small files
    /// slow": a file was opened and closed for every span of every piece,
    /// on the thread writing pieces. Now each file is opened once however
    /// many pieces it spans, at most `OPEN_FILES_PER_DOWNLOAD` stay open,
    /// and every handle, from preparing the folder and from writing, is
    /// closed by the closing loop: its count equals every file opened.
    #[test]
    fn files_stay_open_across_pieces_and_only_the_closer_closes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, data) = game();
        let manifest = Arc::new(manifest);
        let layout = manifest.layout();
        let (closer, close_loop) = closer();
        let closed = closer.closed.clone();
        let closing = std::thread::spawn(move || close_loop.run());
        let root = dir.path().join("staging");
        staging::prepare(&root, &manifest, &closer).unwrap();
        let files = OpenFiles::new(root.clone(), manifest.clone(), closer);
        let piece_size = manifest.piece_size as usize;
        for piece in 0..layout.n_pieces() {
            let end = ((piece + 1) * piece_size).min(data.len());
            staging::write_piece(&files, &layout, piece, &data[piece * piece_size..end]).unwrap();
        }
        let n_files = manifest.files.len() as u64;
        assert_eq!(files.opened(), n_files, "each file opened once");
        assert!(files.lock().files.len() <= OPEN_FILES_PER_DOWNLOAD);
        drop(files);
        closing.join().unwrap();
        assert_eq!(
            closed.load(Ordering::Relaxed),
            2 * n_files,
            "every handle (prepare's and the writes') closed by the closing loop"
        );
        let mut written = Vec::new();
        for entry in &manifest.files {
            written.extend(std::fs::read(fsx::manifest_path(&root, &entry.path)).unwrap());
        }
        assert!(written == data, "the files hold the game's bytes");
    }

    /// Where a span is written directly: its aligned middle, only when
    /// memory and file are aligned alike and the middle is big.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_direct_part_of_a_span_is_its_aligned_middle() {
        let a = 4096usize;
        let big = BIG_SPAN as usize;
        let check = |addr: usize, offset: u64, len: usize, expected: Option<Range<usize>>| {
            assert_eq!(
                direct_middle(addr, offset, len, a),
                expected,
                "{addr} {offset} {len}"
            );
        };
        // All aligned: all of it.
        check(8 * a, 0, big, Some(0..big));
        // An unaligned tail stays out.
        check(8 * a, 4 * a as u64, big + 100, Some(0..big));
        // Memory and file shifted alike: the head stays out too.
        check(8 * a + 100, 100, big + a, Some(a - 100..big + a - 100));
        // Shifted differently: none of it.
        check(8 * a + 100, 200, 4 * big, None);
        // Too short, or too short once its ends are cut.
        check(8 * a, 0, big - a, None);
        check(8 * a + 1, 1, big, None);
    }

    /// A direct write the kernel refuses (here: aligned to 256 bytes on a
    /// device of 512-byte blocks, `EINVAL`) goes through the page cache
    /// instead: every byte lands, and the download stops trying.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_refused_direct_write_goes_through_the_page_cache() {
        use crate::net::client::PieceBuffer;
        // A disk folder: /dev/shm takes any direct write on newer kernels.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        if rustix::fs::statfs(dir.path()).unwrap().f_type as i64 == TMPFS_MAGIC {
            eprintln!("skipped: /var/tmp is tmpfs here, which takes any direct write");
            return;
        }
        let path = dir.path().join("big");
        let len = BIG_SPAN as usize + 256;
        std::fs::write(&path, vec![0u8; len + 256]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut buf = crate::download::piece_buf::PieceBuf::default();
        buf.set_shift(256);
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        buf.sized(len).copy_from_slice(&data);
        let direct_ok = AtomicBool::new(true);
        let mut staging_file = StagingFile::new(file);
        staging_file.write_span(&buf, 256, &direct_ok, 256).unwrap();
        assert!(!direct_ok.load(Ordering::Relaxed), "the refusal was seen");
        assert!(
            !staging_file.direct,
            "the handle writes through the cache again"
        );
        let written = std::fs::read(&path).unwrap();
        assert!(written[256..] == data[..], "every byte landed");
    }

    /// Two writers of one file at once each get a handle; the spare one
    /// goes to the closer, and the bound holds.
    #[test]
    fn a_spare_handle_and_the_least_recently_used_go_to_the_closer() {
        let dir = tempfile::tempdir().unwrap();
        let mut lru = Lru::default();
        let open = |i: usize| {
            StagingFile::new(std::fs::File::create(dir.path().join(i.to_string())).unwrap())
        };
        assert!(lru.put(0, open(0)).is_none());
        assert!(lru.put(0, open(0)).is_some(), "the second handle is spare");
        for i in 1..OPEN_FILES_PER_DOWNLOAD {
            assert!(lru.put(i, open(i)).is_none());
        }
        // File 0 is the least recently put back: it goes when one more comes.
        assert!(lru.put(OPEN_FILES_PER_DOWNLOAD, open(0)).is_some());
        assert!(!lru.files.contains_key(&0));
        assert_eq!(lru.files.len(), OPEN_FILES_PER_DOWNLOAD);
    }
}
