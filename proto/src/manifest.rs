//! Game manifests: what a game version is, byte for byte.
//!
//! A manifest lists a game's files in a fixed order, the piece size, and one
//! BLAKE3 hash per piece. Pieces run over the files laid end to end, so a
//! piece may span several small files (a thousand tiny files cost a handful of
//! pieces, not a thousand round trips). The version id is the BLAKE3 hash of
//! the canonical encoding: equal ids mean byte-identical games.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::path::{validate_relative_path, PathError};

/// Smallest piece. Hashing and writing in units of at least 1 MiB keeps
/// BLAKE3 on its fast path and syscalls rare (docs/BENCHMARKS.md).
pub const MIN_PIECE_SIZE: u32 = 1 << 20;
/// Largest piece: a request for one piece never holds more than this in
/// memory on either side.
pub const MAX_PIECE_SIZE: u32 = 16 << 20;
/// The piece size grows (by powers of two) until a game has at most this many
/// pieces, which bounds the manifest to ~1 MiB of hashes (32 B each) and the
/// have-set of a download to 4 KiB of bits.
pub const TARGET_MAX_PIECES: u64 = 32 * 1024;
/// Most files one manifest may list (and so one game may hold): each costs
/// the receiver an inode whatever its size. Big games ship tens of
/// thousands of files; this leaves room for several times that.
pub const MAX_FILES: usize = 250_000;
/// Most folders with no files a manifest may list: each is an inode on the
/// receiver for no byte on the wire (a 2-byte game of 50,000 empty folders
/// was an attack). Games ship a handful.
pub const MAX_EMPTY_DIRS: usize = 10_000;

/// A BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn of(bytes: &[u8]) -> Self {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parse 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Hash(out))
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

/// The identity of one game version: the hash of its canonical manifest.
pub type VersionId = Hash;

/// One file of a game.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the game folder, `/`-separated; see [`crate::path`].
    pub path: String,
    pub size: u64,
    /// Set the executable bit when installing (on platforms that have one).
    pub executable: bool,
}

/// A game version, file by file and piece by piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub piece_size: u32,
    /// Sorted by `path` (byte order), unique.
    pub files: Vec<FileEntry>,
    /// Folders with no files below them, sorted; kept so a copy is exact.
    pub empty_dirs: Vec<String>,
    /// One hash per piece, in order.
    pub pieces: Vec<Hash>,
}

/// Why a manifest is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("piece size {0} is outside {MIN_PIECE_SIZE}..={MAX_PIECE_SIZE} or not a power of two")]
    PieceSize(u32),
    #[error("{0} files is more than the limit of {MAX_FILES}")]
    TooManyFiles(usize),
    #[error("{0} empty folders is more than the limit of {MAX_EMPTY_DIRS}")]
    TooManyEmptyDirs(usize),
    #[error("`{0}` and `{1}` are one name on Windows and macOS (case or Unicode normalization)")]
    Collision(String, String),
    #[error("file paths are not sorted and unique at `{0}`")]
    Unsorted(String),
    #[error("bad path `{path}`: {error}")]
    Path { path: String, error: PathError },
    #[error("`{0}` is both a file and a folder")]
    FileIsFolder(String),
    #[error("{got} piece hashes for a game of {expected} pieces")]
    PieceCount { expected: u64, got: usize },
    #[error("the total size overflows")]
    Overflow,
}

/// The piece size for a game of `total_size` bytes: the smallest power of two
/// of at least [`MIN_PIECE_SIZE`] that keeps the game within
/// [`TARGET_MAX_PIECES`] pieces, capped at [`MAX_PIECE_SIZE`].
pub fn piece_size_for(total_size: u64) -> u32 {
    let mut size = MIN_PIECE_SIZE;
    while size < MAX_PIECE_SIZE && total_size.div_ceil(size as u64) > TARGET_MAX_PIECES {
        size *= 2;
    }
    size
}

/// Number of pieces of `total_size` bytes cut in `piece_size` pieces.
pub fn piece_count(total_size: u64, piece_size: u32) -> u64 {
    total_size.div_ceil(piece_size as u64)
}

/// The bytes piece `piece_idx` covers of `total_size` bytes laid end to end
/// in pieces of `piece_size`; what [`Layout::piece_range`] says, without a
/// layout.
pub fn piece_range(total_size: u64, piece_size: u32, piece_idx: usize) -> Range<u64> {
    let start = piece_idx as u64 * piece_size as u64;
    start..(start + piece_size as u64).min(total_size)
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn n_pieces(&self) -> usize {
        self.pieces.len()
    }

    /// The canonical encoding (postcard): the bytes the version id hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a manifest always serializes")
    }

    pub fn version_id(&self) -> VersionId {
        Hash::of(&self.canonical_bytes())
    }

    /// Check everything a receiver relies on: paths harmless, order
    /// canonical, piece count consistent with the sizes.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !self.piece_size.is_power_of_two()
            || !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&self.piece_size)
        {
            return Err(ManifestError::PieceSize(self.piece_size));
        }
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles(self.files.len()));
        }
        if self.empty_dirs.len() > MAX_EMPTY_DIRS {
            return Err(ManifestError::TooManyEmptyDirs(self.empty_dirs.len()));
        }
        let mut total: u64 = 0;
        for (i, file) in self.files.iter().enumerate() {
            validate_relative_path(&file.path).map_err(|error| ManifestError::Path {
                path: file.path.clone(),
                error,
            })?;
            if i > 0 && self.files[i - 1].path >= file.path {
                return Err(ManifestError::Unsorted(file.path.clone()));
            }
            total = total
                .checked_add(file.size)
                .ok_or(ManifestError::Overflow)?;
        }
        // A file may not also be a folder holding other entries.
        for pair in self.files.windows(2) {
            let (a, b) = (&pair[0].path, &pair[1].path);
            if b.starts_with(a.as_str()) && b.as_bytes().get(a.len()) == Some(&b'/') {
                return Err(ManifestError::FileIsFolder(a.clone()));
            }
        }
        for (i, dir) in self.empty_dirs.iter().enumerate() {
            validate_relative_path(dir).map_err(|error| ManifestError::Path {
                path: dir.clone(),
                error,
            })?;
            if i > 0 && self.empty_dirs[i - 1] >= *dir {
                return Err(ManifestError::Unsorted(dir.clone()));
            }
        }
        check_collisions(
            self.files
                .iter()
                .map(|f| f.path.as_str())
                .chain(self.empty_dirs.iter().map(String::as_str)),
        )?;
        let expected = piece_count(total, self.piece_size);
        if expected != self.pieces.len() as u64 {
            return Err(ManifestError::PieceCount {
                expected,
                got: self.pieces.len(),
            });
        }
        Ok(())
    }

    /// Where each file starts in the end-to-end layout.
    pub fn layout(&self) -> Layout {
        Layout::new(self.files.iter().map(|f| f.size), self.piece_size)
    }
}

/// Refuse two entries that are one name on a case- or normalization-
/// insensitive file system: two files, two folders, or a file and a
/// folder (every folder a path goes through counts). Each entry and each
/// folder prefix is keyed by [`crate::path::collision_key`]; a key seen
/// before with other bytes is a collision.
pub fn check_collisions<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), ManifestError> {
    use std::collections::hash_map::Entry;
    let mut seen: std::collections::HashMap<String, &'a str> = std::collections::HashMap::new();
    for path in paths {
        let mut end = 0;
        // The path itself and every folder above it.
        let prefixes = path
            .match_indices('/')
            .map(|(i, _)| i)
            .chain(std::iter::once(path.len()));
        for cut in prefixes {
            let prefix = &path[..cut];
            end = cut;
            match seen.entry(crate::path::collision_key(prefix)) {
                Entry::Vacant(slot) => {
                    slot.insert(prefix);
                }
                Entry::Occupied(other) if *other.get() != prefix => {
                    return Err(ManifestError::Collision(
                        (*other.get()).to_owned(),
                        prefix.to_owned(),
                    ));
                }
                Entry::Occupied(_) => {}
            }
        }
        debug_assert_eq!(end, path.len());
    }
    Ok(())
}

/// A contiguous run of bytes inside one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpan {
    pub file_idx: usize,
    pub offset: u64,
    pub len: u64,
}

/// The files of a game laid end to end and cut into pieces.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `starts[i]` is where file `i` begins; one extra entry holds the total.
    starts: Vec<u64>,
    piece_size: u32,
}

impl Layout {
    pub fn new(sizes: impl IntoIterator<Item = u64>, piece_size: u32) -> Self {
        let mut starts = vec![0u64];
        let mut at = 0u64;
        for size in sizes {
            at += size;
            starts.push(at);
        }
        Self { starts, piece_size }
    }

    pub fn total_size(&self) -> u64 {
        *self.starts.last().expect("never empty")
    }

    pub fn piece_size(&self) -> u32 {
        self.piece_size
    }

    pub fn n_pieces(&self) -> usize {
        piece_count(self.total_size(), self.piece_size) as usize
    }

    pub fn file_range(&self, file_idx: usize) -> Range<u64> {
        self.starts[file_idx]..self.starts[file_idx + 1]
    }

    /// The bytes piece `piece_idx` covers in the end-to-end layout.
    pub fn piece_range(&self, piece_idx: usize) -> Range<u64> {
        piece_range(self.total_size(), self.piece_size, piece_idx)
    }

    pub fn piece_len(&self, piece_idx: usize) -> u64 {
        let r = self.piece_range(piece_idx);
        r.end - r.start
    }

    /// The file spans of a byte range, in order, skipping empty files.
    pub fn spans(&self, range: Range<u64>) -> Vec<FileSpan> {
        let mut spans = Vec::new();
        if range.start >= range.end {
            return spans;
        }
        // The first file whose end lies past range.start.
        let mut file_idx = self.starts[1..].partition_point(|&end| end <= range.start);
        let n_files = self.starts.len() - 1;
        while file_idx < n_files {
            let file = self.file_range(file_idx);
            if file.start >= range.end {
                break;
            }
            let start = range.start.max(file.start);
            let end = range.end.min(file.end);
            if end > start {
                spans.push(FileSpan {
                    file_idx,
                    offset: start - file.start,
                    len: end - start,
                });
            }
            file_idx += 1;
        }
        spans
    }

    /// The file spans piece `piece_idx` covers.
    pub fn piece_spans(&self, piece_idx: usize) -> Vec<FileSpan> {
        self.spans(self.piece_range(piece_idx))
    }

    /// The pieces that overlap file `file_idx` (none for an empty file).
    pub fn pieces_of_file(&self, file_idx: usize) -> Range<usize> {
        let file = self.file_range(file_idx);
        if file.is_empty() {
            return 0..0;
        }
        let ps = self.piece_size as u64;
        (file.start / ps) as usize..file.end.div_ceil(ps) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(files: &[(&str, u64)], piece_size: u32) -> Manifest {
        let total: u64 = files.iter().map(|f| f.1).sum();
        Manifest {
            piece_size,
            files: files
                .iter()
                .map(|(p, s)| FileEntry {
                    path: (*p).into(),
                    size: *s,
                    executable: false,
                })
                .collect(),
            empty_dirs: vec![],
            pieces: vec![Hash([7; 32]); piece_count(total, piece_size) as usize],
        }
    }

    #[test]
    fn piece_size_grows_with_the_game() {
        assert_eq!(piece_size_for(0), MIN_PIECE_SIZE);
        assert_eq!(piece_size_for(10 << 30), MIN_PIECE_SIZE); // 10 GiB: 10240 pieces
        assert_eq!(piece_size_for(50 << 30), 2 << 20); // 50 GiB: 25600 pieces of 2 MiB
        assert_eq!(piece_size_for(100 << 30), 4 << 20);
        assert_eq!(piece_size_for(u64::MAX / 2), MAX_PIECE_SIZE);
    }

    #[test]
    fn round_trips_and_validates() {
        let m = manifest(&[("a", 5), ("b/c", 3 << 20), ("d", 0)], MIN_PIECE_SIZE);
        let bytes = m.canonical_bytes();
        let back: Manifest = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.version_id(), m.version_id());
        m.validate().unwrap();
    }

    #[test]
    fn validation_refuses_bad_manifests() {
        let mut m = manifest(&[("b", 1), ("a", 1)], MIN_PIECE_SIZE);
        assert_eq!(m.validate(), Err(ManifestError::Unsorted("a".into())));
        m = manifest(&[("../x", 1)], MIN_PIECE_SIZE);
        assert!(matches!(m.validate(), Err(ManifestError::Path { .. })));
        m = manifest(&[("a", 1), ("a/b", 1)], MIN_PIECE_SIZE);
        assert_eq!(m.validate(), Err(ManifestError::FileIsFolder("a".into())));
        m = manifest(&[("a", 1)], MIN_PIECE_SIZE);
        m.pieces.push(Hash([0; 32]));
        assert!(matches!(
            m.validate(),
            Err(ManifestError::PieceCount { .. })
        ));
        m = manifest(&[("a", 1)], 3 << 20);
        assert_eq!(m.validate(), Err(ManifestError::PieceSize(3 << 20)));
        m = manifest(&[("a", 1), ("b", 2)], MIN_PIECE_SIZE);
        m.files[0].size = u64::MAX;
        assert_eq!(m.validate(), Err(ManifestError::Overflow));
    }

    /// Pins issue 13: names that are one file on Windows and macOS
    /// overwrote each other there.
    #[test]
    fn validation_refuses_case_and_normalization_collisions() {
        let m = manifest(&[("Save.dat", 1), ("save.dat", 1)], MIN_PIECE_SIZE);
        assert_eq!(
            m.validate(),
            Err(ManifestError::Collision(
                "Save.dat".into(),
                "save.dat".into()
            ))
        );
        let m = manifest(&[("cafe\u{301}/a", 1), ("caf\u{e9}/b", 1)], MIN_PIECE_SIZE);
        assert!(matches!(m.validate(), Err(ManifestError::Collision(..))));
        // A file and a folder prefix.
        let m = manifest(&[("Data", 1), ("data/x", 1)], MIN_PIECE_SIZE);
        assert!(matches!(m.validate(), Err(ManifestError::Collision(..))));
        // A file and an empty folder.
        let mut m = manifest(&[("levels/a", 1)], MIN_PIECE_SIZE);
        m.empty_dirs = vec!["LEVELS".into()];
        assert!(matches!(m.validate(), Err(ManifestError::Collision(..))));
        // Same folder, several files: fine.
        manifest(&[("data/a", 1), ("data/b", 1)], MIN_PIECE_SIZE)
            .validate()
            .unwrap();
    }

    /// Pins issue 13: a 2-byte game of 50,000 empty folders cost a
    /// victim 50,000 inodes.
    #[test]
    fn validation_caps_empty_folders() {
        let mut m = manifest(&[("a", 2)], MIN_PIECE_SIZE);
        let mut dirs: Vec<String> = (0..=MAX_EMPTY_DIRS).map(|i| format!("d{i:06}")).collect();
        dirs.sort();
        m.empty_dirs = dirs;
        assert_eq!(
            m.validate(),
            Err(ManifestError::TooManyEmptyDirs(MAX_EMPTY_DIRS + 1))
        );
    }

    #[test]
    fn a_piece_spans_small_files() {
        const MIB: u64 = 1 << 20;
        let layout = Layout::new([10, 0, MIB - 20, 15, 2 * MIB], MIB as u32);
        assert_eq!(layout.n_pieces(), 4); // 3 MiB + 5 bytes
        assert_eq!(
            layout.piece_spans(0),
            vec![
                FileSpan {
                    file_idx: 0,
                    offset: 0,
                    len: 10
                },
                FileSpan {
                    file_idx: 2,
                    offset: 0,
                    len: MIB - 20
                },
                FileSpan {
                    file_idx: 3,
                    offset: 0,
                    len: 10
                },
            ]
        );
        assert_eq!(
            layout.piece_spans(1),
            vec![
                FileSpan {
                    file_idx: 3,
                    offset: 10,
                    len: 5
                },
                FileSpan {
                    file_idx: 4,
                    offset: 0,
                    len: MIB - 5
                },
            ]
        );
        assert_eq!(
            layout.piece_spans(2),
            vec![FileSpan {
                file_idx: 4,
                offset: MIB - 5,
                len: MIB
            }]
        );
        assert_eq!(
            layout.piece_spans(3),
            vec![FileSpan {
                file_idx: 4,
                offset: 2 * MIB - 5,
                len: 5
            }]
        );
        assert_eq!(layout.pieces_of_file(1), 0..0);
        assert_eq!(layout.pieces_of_file(3), 0..2);
        assert_eq!(layout.pieces_of_file(4), 1..4);
    }

    #[test]
    fn hex_round_trips() {
        let h = Hash::of(b"lanspread");
        assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(Hash::from_hex("zz"), None);
    }

    proptest! {
        /// Pieces tile the layout exactly: their spans cover every byte of
        /// every file once, in order, and no span crosses a file boundary.
        #[test]
        fn pieces_tile_the_files(
            sizes in proptest::collection::vec(prop_oneof![Just(0u64), 0u64..5000, 0u64..3_000_000], 0..40),
        ) {
            let layout = Layout::new(sizes.iter().copied(), MIN_PIECE_SIZE);
            let mut expected_next = vec![0u64; sizes.len()];
            let mut covered = 0u64;
            for piece_idx in 0..layout.n_pieces() {
                let spans = layout.piece_spans(piece_idx);
                let len: u64 = spans.iter().map(|s| s.len).sum();
                prop_assert_eq!(len, layout.piece_len(piece_idx));
                prop_assert!(len <= MIN_PIECE_SIZE as u64 && len > 0);
                for span in spans {
                    prop_assert!(span.len > 0);
                    prop_assert_eq!(span.offset, expected_next[span.file_idx]);
                    prop_assert!(span.offset + span.len <= sizes[span.file_idx]);
                    expected_next[span.file_idx] += span.len;
                    covered += span.len;
                }
                for file_idx in 0..sizes.len() {
                    let range = layout.pieces_of_file(file_idx);
                    let touches = layout.piece_spans(piece_idx).iter().any(|s| s.file_idx == file_idx);
                    prop_assert_eq!(range.contains(&piece_idx), touches);
                }
            }
            prop_assert_eq!(expected_next, sizes.clone());
            prop_assert_eq!(covered, sizes.iter().sum::<u64>());
        }
    }
}
