//! Piece scheduling for one download: which piece to ask which source for.
//! Pure: no IO, no clock. Rarest first among the pieces a source has (a
//! piece another downloader is fetching counts as held by it); a complete
//! source is asked only for pieces no partial source has while it is the
//! only one (super-seeding);
//! once every missing piece is in flight and at most [`ENDGAME_PIECES`] are
//! missing, those are asked of a second source too (endgame), so one slow
//! source cannot hold the finish; the copy that arrives second is cut off
//! by the swarm.

use std::collections::{BTreeMap, HashMap};

use lanspread_proto::PeerId;
pub use lanspread_proto::PieceSet;

/// A source sending this many bad pieces is not used again.
pub const MAX_BAD_PIECES: u32 = 3;
/// Copies of one piece in flight at most during the endgame.
const ENDGAME_COPIES: usize = 2;
/// The endgame starts when this few pieces are missing. Earlier, a second
/// copy spends a busy party's upload twice: at a rush, where every source
/// is shared by many and every missing piece is in flight long before the
/// end, starting as soon as everything was in flight sent 35 % of the
/// pieces twice.
pub const ENDGAME_PIECES: usize = 4;

#[derive(Debug)]
struct Source {
    /// `None`: it has every piece.
    have: Option<PieceSet>,
    /// Pieces it is fetching itself (a downloader serving what it has):
    /// soon available there, so not worth asking anyone else for first.
    fetching: Option<PieceSet>,
    bad_pieces: u32,
    banned: bool,
}

impl Source {
    fn has(&self, piece: usize) -> bool {
        self.have.as_ref().is_none_or(|h| h.contains(piece))
    }

    fn fetches(&self, piece: usize) -> bool {
        self.fetching.as_ref().is_some_and(|f| f.contains(piece))
    }
}

/// What the scheduler says after a bad piece.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Try the piece again elsewhere.
    Retry,
    /// The source sent too many bad pieces and is no longer used.
    Banned,
}

#[derive(Debug)]
pub struct PieceScheduler {
    have: PieceSet,
    in_flight: HashMap<usize, Vec<PeerId>>,
    sources: BTreeMap<PeerId, Source>,
    /// Raised whenever the pieces present or in flight may have changed
    /// (see [`Self::generation`]).
    generation: u64,
    /// Orders pieces of equal rarity. Each downloader uses its own, so a
    /// party that starts together does not ask the seed for the same pieces
    /// in the same order (it would serve them eight times over).
    tie_seed: u64,
}

impl PieceScheduler {
    pub fn new(have: PieceSet) -> Self {
        Self::with_tie_seed(have, 0)
    }

    pub fn with_tie_seed(have: PieceSet, tie_seed: u64) -> Self {
        Self {
            have,
            in_flight: HashMap::new(),
            sources: BTreeMap::new(),
            generation: 0,
            tie_seed,
        }
    }

    /// The pieces in flight: what this download is fetching now, served
    /// with our have-set so other downloaders ask the seed for them last.
    pub fn fetching(&self) -> PieceSet {
        let mut set = PieceSet::empty(self.have.len());
        for &piece in self.in_flight.keys() {
            set.insert(piece);
        }
        set
    }

    /// A pseudo-random but stable position for `piece` among equals.
    fn tie_break(&self, piece: usize) -> u64 {
        // SplitMix64 of the piece index mixed with the seed.
        let mut z = (piece as u64) ^ self.tie_seed;
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number that changes whenever [`Self::have`] or [`Self::fetching`]
    /// may have: what is served to watchers is sent again only then.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn have(&self) -> &PieceSet {
        &self.have
    }

    pub fn is_complete(&self) -> bool {
        self.have.count() == self.have.len()
    }

    pub fn is_banned(&self, source: &PeerId) -> bool {
        self.sources.get(source).is_some_and(|s| s.banned)
    }

    /// Add a source, or update what it has (`None`: everything).
    pub fn handle_source(&mut self, source: PeerId, have: Option<PieceSet>) {
        let entry = self.sources.entry(source).or_insert(Source {
            have: None,
            fetching: None,
            bad_pieces: 0,
            banned: false,
        });
        entry.have = have;
    }

    /// What a partial source is fetching now (see [`Source::fetching`]).
    pub fn handle_source_fetching(&mut self, source: &PeerId, fetching: PieceSet) {
        if let Some(entry) = self.sources.get_mut(source) {
            entry.fetching = (fetching.len() == self.have.len()).then_some(fetching);
        }
    }

    /// A source left: its pieces in flight are free again.
    pub fn handle_source_gone(&mut self, source: &PeerId) {
        if let Some(s) = self.sources.get(source) {
            if s.banned {
                return; // remembered, so it is not used again
            }
        }
        self.sources.remove(source);
        self.forget_in_flight(source);
        self.generation += 1;
    }

    fn forget_in_flight(&mut self, source: &PeerId) {
        self.in_flight.retain(|_, holders| {
            holders.retain(|h| h != source);
            !holders.is_empty()
        });
    }

    /// Usable sources (known, not banned).
    pub fn active_sources(&self) -> impl Iterator<Item = &PeerId> {
        self.sources
            .iter()
            .filter(|(_, s)| !s.banned)
            .map(|(id, _)| id)
    }

    /// The sources that have part of the game (other downloaders), banned
    /// ones left out.
    fn partial_sources(&self) -> impl Iterator<Item = &Source> {
        self.sources
            .values()
            .filter(|s| !s.banned && s.have.is_some())
    }

    /// Sources known to have every piece, banned ones left out.
    fn complete_sources(&self) -> usize {
        self.sources
            .values()
            .filter(|s| !s.banned && s.have.is_none())
            .count()
    }

    /// Whether `source` is known to have every piece.
    pub fn is_complete_source(&self, source: &PeerId) -> bool {
        self.sources.get(source).is_some_and(|s| s.have.is_none())
    }

    /// Up to `max` pieces to ask `source` for now.
    pub fn poll_request(&mut self, source: &PeerId, max: usize) -> Vec<usize> {
        let Some(src) = self.sources.get(source) else {
            return Vec::new();
        };
        if src.banned || max == 0 {
            return Vec::new();
        }
        let missing: Vec<usize> = (0..self.have.len())
            .filter(|&p| !self.have.contains(p) && src.has(p))
            .collect();
        // Pieces another downloader is fetching count as held: asking the
        // seed for one of those spends its upload on a piece the party is
        // about to have anyway.
        let rarity = |p: usize| {
            self.sources
                .values()
                .filter(|s| !s.banned && (s.has(p) || s.fetches(p)))
                .count()
        };
        let mut fresh: Vec<usize> = missing
            .iter()
            .copied()
            .filter(|p| !self.in_flight.contains_key(p))
            .collect();
        let any_fresh = !fresh.is_empty();
        let super_seeding = src.have.is_none()
            && self.partial_sources().next().is_some()
            && self.complete_sources() == 1;
        if super_seeding {
            // Super-seeding: once other downloaders serve pieces, the only
            // complete source (the seed) is asked only for pieces none of
            // them has or is fetching, so its upload makes new copies for
            // the party, not more of what it already spreads. Pieces they
            // have are theirs to give; the seed waits meanwhile. Once a
            // second complete copy exists, every upload counts alike.
            let in_swarm = |p: usize| self.partial_sources().any(|s| s.has(p) || s.fetches(p));
            fresh.retain(|&p| !in_swarm(p));
        }
        fresh.sort_by_key(|&p| (rarity(p), self.tie_break(p)));
        let mut picked: Vec<usize> = fresh.into_iter().take(max).collect();
        let left = self.have.len() - self.have.count();
        if picked.is_empty() && !any_fresh && left <= ENDGAME_PIECES {
            // Endgame: everything missing is in flight somewhere; help out
            // with the pieces fewest others are fetching. A seed that
            // super-seeds helps only with pieces no partial source has: the
            // others are the swarm's to give, and the seed's upload is what
            // the party has least of.
            let partial_has = |p: usize| self.partial_sources().any(|s| s.has(p));
            let mut shared: Vec<usize> = missing
                .into_iter()
                .filter(|&p| {
                    self.in_flight.get(&p).is_some_and(|holders| {
                        holders.len() < ENDGAME_COPIES && !holders.contains(source)
                    }) && !(super_seeding && partial_has(p))
                })
                .collect();
            shared.sort_by_key(|&p| (self.in_flight[&p].len(), p));
            picked = shared.into_iter().take(max).collect();
        }
        for &p in &picked {
            self.in_flight.entry(p).or_default().push(source.clone());
        }
        if !picked.is_empty() {
            self.generation += 1;
        }
        picked
    }

    /// The piece verified and was written.
    pub fn handle_piece_done(&mut self, piece: usize) {
        self.have.insert(piece);
        self.in_flight.remove(&piece);
        self.generation += 1;
    }

    /// The request for `piece` from `source` failed without bad data
    /// (connection lost, busy): the piece is free again.
    pub fn handle_piece_dropped(&mut self, piece: usize, source: &PeerId) {
        if let Some(holders) = self.in_flight.get_mut(&piece) {
            holders.retain(|h| h != source);
            if holders.is_empty() {
                self.in_flight.remove(&piece);
                self.generation += 1;
            }
        }
    }

    /// `source` sent bytes that do not match the piece's hash.
    pub fn handle_bad_piece(&mut self, piece: usize, source: &PeerId) -> Verdict {
        self.handle_piece_dropped(piece, source);
        let Some(src) = self.sources.get_mut(source) else {
            return Verdict::Retry;
        };
        src.bad_pieces += 1;
        if src.bad_pieces >= MAX_BAD_PIECES && !src.banned {
            src.banned = true;
            self.forget_in_flight(source);
            self.generation += 1;
            return Verdict::Banned;
        }
        Verdict::Retry
    }

    /// Pieces asked of `source` and not yet answered.
    pub fn in_flight_of(&self, source: &PeerId) -> usize {
        self.in_flight
            .values()
            .filter(|holders| holders.contains(source))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::identity::Identity;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|_| Identity::ephemeral().peer_id().clone())
            .collect()
    }

    /// Super-seeding is for a lone seed: with a second complete source (a
    /// downloader that finished, or two seeds), complete sources are asked
    /// for any piece, so their upload is not left idle at the end.
    #[test]
    fn complete_sources_serve_anything_once_there_are_two() {
        let [seed, finished, partial] = <[PeerId; 3]>::try_from(ids(3)).unwrap();
        let mut s = PieceScheduler::new(PieceSet::empty(4));
        s.handle_source(seed.clone(), None);
        let mut half = PieceSet::empty(4);
        half.insert(0);
        half.insert(1);
        s.handle_source(partial, Some(half));
        let mut alone = s.poll_request(&seed, 4);
        alone.sort();
        assert_eq!(alone, vec![2, 3], "a lone seed super-seeds");
        for p in alone {
            s.handle_piece_dropped(p, &seed);
        }
        s.handle_source(finished.clone(), None);
        let mut asked = s.poll_request(&finished, 4);
        asked.sort();
        assert_eq!(asked, vec![0, 1, 2, 3], "two complete sources: anything");
    }

    /// Once partial sources serve pieces, the seed is asked only for
    /// pieces none of them has or fetches; for the rest it waits, and the
    /// endgame's second copies of pieces they have come from them too.
    #[test]
    fn the_seed_makes_new_copies_once_the_swarm_has_started() {
        let [seed, partial] = <[PeerId; 2]>::try_from(ids(2)).unwrap();
        let mut s = PieceScheduler::new(PieceSet::empty(8));
        s.handle_source(seed.clone(), None);
        // Alone, the seed serves anything.
        let first = s.poll_request(&seed, 1);
        assert_eq!(first.len(), 1);
        s.handle_piece_done(first[0]);
        let set = |pieces: std::ops::Range<usize>| {
            let mut set = PieceSet::empty(8);
            pieces.for_each(|p| set.insert(p));
            set
        };
        s.handle_source(partial.clone(), Some(set(0..4)));
        s.handle_source_fetching(&partial, set(4..5));
        let asked = s.poll_request(&seed, 8);
        assert!(!asked.is_empty());
        assert!(
            asked.iter().all(|&p| p >= 5),
            "only pieces the partial source neither has nor fetches: {asked:?}"
        );
        for p in asked {
            s.handle_piece_done(p);
        }
        s.handle_source(partial.clone(), Some(set(0..5)));
        s.handle_source_fetching(&partial, set(0..0));
        assert!(s.poll_request(&seed, 8).is_empty(), "the seed waits");
        // The partial source gives what it has; the seed helps only at the end.
        let from_partial = s.poll_request(&partial, 8);
        assert!(!from_partial.is_empty());
        for p in from_partial.iter().skip(1) {
            s.handle_piece_done(*p);
        }
        assert!(
            s.poll_request(&seed, 8).is_empty(),
            "no endgame copy from the seed of a piece a partial source has"
        );
        let other = ids(1).remove(0);
        s.handle_source(other.clone(), Some(set(0..5)));
        assert_eq!(s.poll_request(&other, 8), vec![from_partial[0]], "endgame");
    }

    #[test]
    fn rarest_pieces_first() {
        let [a, b] = <[PeerId; 2]>::try_from(ids(2)).unwrap();
        let mut s = PieceScheduler::new(PieceSet::empty(4));
        // Two partial sources (a complete one would be super-seeding).
        let mut a_has = PieceSet::empty(4);
        (0..4).for_each(|p| a_has.insert(p));
        s.handle_source(a.clone(), Some(a_has));
        let mut b_has = PieceSet::empty(4);
        // (Ties between equally rare pieces are broken by the tie seed, so
        // only the split between rare and common pieces is asserted.)
        b_has.insert(0);
        b_has.insert(1);
        s.handle_source(b, Some(b_has));
        // Pieces 2 and 3 only a has: rarest, so a is asked for them first.
        let mut first = s.poll_request(&a, 2);
        first.sort();
        assert_eq!(first, vec![2, 3]);
        let mut then = s.poll_request(&a, 2);
        then.sort();
        assert_eq!(then, vec![0, 1]);
    }

    #[test]
    fn downloaders_start_on_different_pieces() {
        let seed = ids(1).remove(0);
        let firsts: Vec<Vec<usize>> = (1..=4u64)
            .map(|tie_seed| {
                let mut s = PieceScheduler::with_tie_seed(PieceSet::empty(64), tie_seed);
                s.handle_source(seed.clone(), None);
                s.poll_request(&seed, 4)
            })
            .collect();
        for (i, a) in firsts.iter().enumerate() {
            for b in &firsts[i + 1..] {
                assert_ne!(a, b, "two downloaders asked for the same first pieces");
            }
        }
    }

    #[test]
    fn pieces_others_are_fetching_are_asked_of_the_seed_last() {
        let [seed, other] = <[PeerId; 2]>::try_from(ids(2)).unwrap();
        let mut s = PieceScheduler::new(PieceSet::empty(4));
        s.handle_source(seed.clone(), None);
        s.handle_source(other.clone(), Some(PieceSet::empty(4)));
        let mut fetching = PieceSet::empty(4);
        fetching.insert(0);
        fetching.insert(1);
        s.handle_source_fetching(&other, fetching);
        let mut first = s.poll_request(&seed, 2);
        first.sort();
        assert_eq!(first, vec![2, 3], "the pieces nobody has or fetches");
        // What we fetch is served to the others, and cleared on arrival.
        let mut expected = PieceSet::empty(4);
        expected.insert(2);
        expected.insert(3);
        assert_eq!(s.fetching(), expected);
        s.handle_piece_done(2);
        s.handle_piece_dropped(3, &seed);
        assert_eq!(s.fetching(), PieceSet::empty(4));
    }

    #[test]
    fn endgame_duplicates_the_last_pieces_once() {
        let [a, b, c] = <[PeerId; 3]>::try_from(ids(3)).unwrap();
        let mut s = PieceScheduler::new(PieceSet::empty(2));
        for id in [&a, &b, &c] {
            s.handle_source(id.clone(), None);
        }
        let mut got = s.poll_request(&a, 8);
        got.sort();
        assert_eq!(got, vec![0, 1]);
        let mut copy = s.poll_request(&b, 8);
        copy.sort();
        assert_eq!(copy, vec![0, 1], "endgame copy");
        assert!(s.poll_request(&c, 8).is_empty(), "at most two copies");
        s.handle_piece_done(0);
        s.handle_piece_done(1);
        assert!(s.is_complete());
    }

    #[test]
    fn no_second_copy_before_the_last_pieces() {
        let [a, b] = <[PeerId; 2]>::try_from(ids(2)).unwrap();
        let n = ENDGAME_PIECES + 2;
        let mut s = PieceScheduler::new(PieceSet::empty(n));
        s.handle_source(a.clone(), None);
        s.handle_source(b.clone(), None);
        assert_eq!(s.poll_request(&a, n).len(), n, "all in flight from a");
        assert!(
            s.poll_request(&b, n).is_empty(),
            "no copy while many are missing"
        );
        s.handle_piece_done(0);
        s.handle_piece_done(1);
        assert_eq!(s.poll_request(&b, n).len(), ENDGAME_PIECES, "the last ones");
    }

    #[test]
    fn a_lost_source_frees_its_pieces() {
        let [a, b] = <[PeerId; 2]>::try_from(ids(2)).unwrap();
        let mut s = PieceScheduler::new(PieceSet::empty(3));
        s.handle_source(a.clone(), None);
        assert_eq!(s.poll_request(&a, 3).len(), 3);
        s.handle_source_gone(&a);
        s.handle_source(b.clone(), None);
        assert_eq!(s.poll_request(&b, 3).len(), 3, "all free again");
    }

    #[test]
    fn a_lying_source_is_banned_after_repeated_bad_pieces() {
        let [liar, honest] = <[PeerId; 2]>::try_from(ids(2)).unwrap();
        let mut s = PieceScheduler::new(PieceSet::empty(8));
        s.handle_source(liar.clone(), None);
        s.handle_source(honest.clone(), None);
        for round in 1..=MAX_BAD_PIECES {
            let got = s.poll_request(&liar, 1);
            let verdict = s.handle_bad_piece(got[0], &liar);
            let expected = if round == MAX_BAD_PIECES {
                Verdict::Banned
            } else {
                Verdict::Retry
            };
            assert_eq!(verdict, expected);
        }
        assert!(s.is_banned(&liar));
        assert!(s.poll_request(&liar, 8).is_empty());
        s.handle_source_gone(&liar);
        assert!(
            s.is_banned(&liar),
            "a banned source stays banned when it reconnects"
        );
        assert_eq!(s.poll_request(&honest, 8).len(), 8);
    }

    proptest! {
        /// Whatever sources come, go and fail, every piece is eventually
        /// fetched exactly when some source has it, and no piece is asked
        /// of a source that does not have it.
        #[test]
        fn every_piece_gets_fetched(
            n_pieces in 1usize..40,
            masks in proptest::collection::vec(any::<u64>(), 1..4),
            drops in proptest::collection::vec(any::<bool>(), 0..64),
        ) {
            let peers = ids(masks.len());
            let mut s = PieceScheduler::new(PieceSet::empty(n_pieces));
            let mut union = PieceSet::empty(n_pieces);
            for (peer, mask) in peers.iter().zip(&masks) {
                let mut have = PieceSet::empty(n_pieces);
                for p in 0..n_pieces {
                    if mask & (1 << (p % 64)) != 0 {
                        have.insert(p);
                        union.insert(p);
                    }
                }
                s.handle_source(peer.clone(), Some(have));
            }
            let mut drops = drops.into_iter();
            for _ in 0..10_000 {
                let mut progressed = false;
                for (peer, mask) in peers.iter().zip(&masks) {
                    for p in s.poll_request(peer, 3) {
                        prop_assert!(mask & (1 << (p % 64)) != 0);
                        progressed = true;
                        if drops.next().unwrap_or(false) {
                            s.handle_piece_dropped(p, peer);
                        } else {
                            s.handle_piece_done(p);
                        }
                    }
                }
                if !progressed {
                    break;
                }
            }
            prop_assert_eq!(s.have().clone(), union);
        }
    }
}
