//! Receive buffers aligned for direct writes.
//!
//! A piece of a big file is written to the disk straight from the buffer it
//! was received into, without the kernel copying it into the page cache
//! (Linux `O_DIRECT`; see `files::StagingFile`). That wants the memory, the
//! file offset and the length aligned (`fsx::direct_io_align`). A
//! [`PieceBuf`] is a page-aligned allocation in which the piece starts at a
//! chosen shift: [`direct_shift`] picks it so that the piece's largest span
//! lies aligned in memory exactly where it is aligned in its file, also
//! when the file does not start on a page of the game's byte stream.

use std::alloc::{self, Layout as MemLayout};
use std::ptr::NonNull;

use lanspread_proto::Layout;

use crate::fsx;
use crate::net::client::PieceBuffer;

/// Bytes of a received piece, in memory aligned to `fsx::direct_io_align()`
/// plus a shift. Owns its allocation like a `Vec<u8>`; every byte of it is
/// initialised (allocated zeroed), so reusing it zeroes nothing.
pub struct PieceBuf {
    ptr: NonNull<u8>,
    cap: usize,
    align: usize,
    /// Where the piece starts in the allocation (below `align`).
    start: usize,
    len: usize,
}

// SAFETY: `PieceBuf` owns its allocation exclusively, as a `Vec<u8>` does.
unsafe impl Send for PieceBuf {}
// SAFETY: shared access only reads, through `Deref`.
unsafe impl Sync for PieceBuf {}

impl Default for PieceBuf {
    fn default() -> Self {
        Self {
            ptr: NonNull::dangling(),
            cap: 0,
            align: fsx::direct_io_align(),
            start: 0,
            len: 0,
        }
    }
}

impl PieceBuf {
    /// Place the next piece `shift` bytes (modulo the alignment) past an
    /// aligned address. Empties the buffer.
    pub fn set_shift(&mut self, shift: usize) {
        self.start = shift % self.align;
        self.len = 0;
    }

    /// The capacity in use by the piece, from its start.
    pub fn capacity(&self) -> usize {
        self.cap.saturating_sub(self.start)
    }

    fn free(&mut self) {
        if self.cap > 0 {
            let layout = MemLayout::from_size_align(self.cap, self.align).expect("as allocated");
            // SAFETY: allocated in `sized` with this very layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
            self.cap = 0;
            self.ptr = NonNull::dangling();
        }
    }
}

impl PieceBuffer for PieceBuf {
    fn sized(&mut self, len: usize) -> &mut [u8] {
        let need = self.start + len;
        if need > self.cap {
            // Room for any shift: a reused buffer is not grown again when
            // the next piece wants another one.
            let cap = (len + self.align).next_multiple_of(self.align);
            let layout = MemLayout::from_size_align(cap, self.align).expect("piece buffer layout");
            // SAFETY: `cap` is at least `align`, non-zero.
            let ptr = unsafe { alloc::alloc_zeroed(layout) };
            let Some(ptr) = NonNull::new(ptr) else {
                alloc::handle_alloc_error(layout)
            };
            self.free();
            self.ptr = ptr;
            self.cap = cap;
        }
        self.len = len;
        // SAFETY: start + len <= cap, all of it allocated and initialised,
        // and borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.start), len) }
    }
}

impl std::ops::Deref for PieceBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: start + len <= cap, allocated and initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.start), self.len) }
    }
}

impl Drop for PieceBuf {
    fn drop(&mut self) {
        self.free();
    }
}

/// The shift (see [`PieceBuf::set_shift`]) that puts piece `piece_idx`'s
/// largest span at the same offset from an aligned address in memory as in
/// its file: its aligned middle can then be written directly.
pub fn direct_shift(layout: &Layout, piece_idx: usize, align: usize) -> usize {
    let mut at = 0u64;
    let mut best = (0u64, 0u64);
    for span in layout.piece_spans(piece_idx) {
        if span.len > best.0 {
            best = (span.len, span.offset.wrapping_sub(at));
        }
        at += span.len;
    }
    (best.1 & (align as u64 - 1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_piece_starts_at_its_shift_from_an_aligned_address() {
        let align = fsx::direct_io_align();
        let mut buf = PieceBuf::default();
        assert!(buf.is_empty());
        for (shift, len) in [(0, 5000), (100, 1 << 20), (align - 1, 3), (0, 1 << 21)] {
            buf.set_shift(shift);
            let data = buf.sized(len);
            assert_eq!(data.len(), len);
            assert_eq!(data.as_ptr() as usize % align, shift);
            data.fill(7);
            assert!(buf.iter().all(|&b| b == 7));
        }
    }

    /// A file starting 1000 bytes into the game's stream: the shift puts
    /// each piece's bytes of it at their file offset modulo the alignment.
    #[test]
    fn the_shift_aligns_the_largest_span_as_in_its_file() {
        let align = 4096;
        let piece = 1u64 << 20;
        let layout = Layout::new([1000, 3 * piece, 10], piece as u32);
        // Piece 0: 1000 bytes of file 0, then file 1 from offset 0 at 1000.
        assert_eq!(
            direct_shift(&layout, 0, align),
            (align as u64 - 1000) as usize
        );
        // Piece 1: file 1 from offset piece - 1000, at 0.
        let shift = direct_shift(&layout, 1, align);
        assert_eq!(shift as u64, (piece - 1000) % align as u64);
        // One file from the stream's start: no shift.
        let one = Layout::new([5 * piece], piece as u32);
        assert_eq!(direct_shift(&one, 3, align), 0);
    }
}
