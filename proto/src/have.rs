//! The have-set: which pieces of a version a peer holds, as it travels in
//! `HaveSet` answers (a bitmap, least significant bit first).

/// A set of piece indexes, as the wire's have-set bitmap (LSB first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceSet {
    bits: Vec<u8>,
    len: usize,
}

impl PieceSet {
    pub fn empty(len: usize) -> Self {
        Self {
            bits: vec![0; len.div_ceil(8)],
            len,
        }
    }

    pub fn full(len: usize) -> Self {
        let mut set = Self::empty(len);
        for i in 0..len {
            set.insert(i);
        }
        set
    }

    /// From wire bits; `None` when the sizes disagree.
    pub fn from_bits(len: usize, bits: Vec<u8>) -> Option<Self> {
        (bits.len() == len.div_ceil(8)).then_some(Self { bits, len })
    }

    pub fn bits(&self) -> &[u8] {
        &self.bits
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, i: usize) -> bool {
        i < self.len && self.bits[i / 8] & (1 << (i % 8)) != 0
    }

    pub fn insert(&mut self, i: usize) {
        if i < self.len {
            self.bits[i / 8] |= 1 << (i % 8);
        }
    }

    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.contains(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_sets_match_the_wire_bitmap() {
        let mut set = PieceSet::empty(10);
        set.insert(0);
        set.insert(9);
        assert_eq!(set.bits(), &[0b0000_0001, 0b0000_0010]);
        assert_eq!(
            PieceSet::from_bits(10, set.bits().to_vec()),
            Some(set.clone())
        );
        assert_eq!(PieceSet::from_bits(17, vec![0; 2]), None);
        assert_eq!(PieceSet::full(10).count(), 10);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 9]);
    }
}
