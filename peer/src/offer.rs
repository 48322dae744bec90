//! What this peer offers other peers: the complete games of the library, and
//! the downloads in progress, whose verified pieces are served too.
//!
//! It sits below both the QUIC server, which answers from it, and the
//! download engine, which registers each download here through an
//! [`OfferGuard`]; neither of those two knows the other. A download is
//! described by the catalog entry being fetched (its real title, picture and
//! version label), and what it has is asked of the download's own piece
//! bookkeeping at each request ([`PieceStatus`]): there is one record of its
//! pieces, not a copy here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use lanspread_proto::wire::games_digest;
use lanspread_proto::{GameSummary, Hash, PieceSet, VersionId};
use tokio::sync::watch;

use crate::library::metadata::Thumbnail;
use crate::library::monitor::Library;
use crate::library::{thumbnail_with_hash, LocalGame};

/// What a download in progress has, asked when a peer asks.
pub trait PieceStatus: Send + Sync {
    /// The pieces verified and written (servable), and those being fetched
    /// now (soon servable), as of one moment.
    fn sets(&self) -> (PieceSet, PieceSet);
    /// Whether one piece is verified and written.
    fn has(&self, piece: usize) -> bool;
    /// Changes each time [`Self::sets`] may have; closed once this record is
    /// dropped.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// A download in progress, as offered.
pub struct Partial {
    /// Its catalog summary, `complete: false`.
    pub summary: GameSummary,
    /// The staging folder dressed as a game: `root` is the staging root.
    pub game: LocalGame,
    status: Arc<dyn PieceStatus>,
}

/// A version we can serve pieces of: installed, or being downloaded.
pub enum Served {
    Complete(Arc<LocalGame>),
    Partial(Arc<Partial>),
}

impl Served {
    pub fn game(&self) -> &LocalGame {
        match self {
            Served::Complete(game) => game,
            Served::Partial(partial) => &partial.game,
        }
    }

    pub fn has(&self, piece: usize) -> bool {
        match self {
            Served::Complete(game) => piece < game.manifest.n_pieces(),
            Served::Partial(partial) => partial.status.has(piece),
        }
    }

    /// The pieces here and those being fetched (see [`PieceStatus::sets`]);
    /// a complete game has every piece and fetches none.
    pub fn sets(&self) -> (PieceSet, PieceSet) {
        match self {
            Served::Complete(game) => {
                let n = game.manifest.n_pieces();
                (PieceSet::full(n), PieceSet::empty(n))
            }
            Served::Partial(partial) => partial.status.sets(),
        }
    }

    /// What tells of changes to [`Self::sets`]; `None` for a complete game,
    /// which has none.
    pub fn changes(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Served::Complete(_) => None,
            Served::Partial(partial) => Some(partial.status.changes()),
        }
    }
}

/// The table of what we offer.
pub struct Offer {
    library: Arc<Library>,
    // A std Mutex: map edits and lookups only, never an await.
    partials: Mutex<BTreeMap<VersionId, Arc<Partial>>>,
}

impl Offer {
    pub fn new(library: Arc<Library>) -> Self {
        Self {
            library,
            partials: Mutex::default(),
        }
    }

    pub fn library(&self) -> &Arc<Library> {
        &self.library
    }

    fn partials(&self) -> std::sync::MutexGuard<'_, BTreeMap<VersionId, Arc<Partial>>> {
        self.partials.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version `version_id`, complete or in progress.
    pub fn served(&self, version_id: &VersionId) -> Option<Served> {
        let complete = self
            .library
            .snapshot()
            .values()
            .find(|g| g.version_id == *version_id)
            .cloned();
        match complete {
            Some(game) => Some(Served::Complete(game)),
            None => self
                .partials()
                .get(version_id)
                .cloned()
                .map(Served::Partial),
        }
    }

    /// Whether `version_id` is still offered as `served` (the same download
    /// in progress, or complete as it was).
    pub fn serves_same(&self, version_id: &VersionId, served: &Served) -> bool {
        match (self.served(version_id), served) {
            (Some(Served::Partial(now)), Served::Partial(was)) => Arc::ptr_eq(&now, was),
            (Some(Served::Complete(_)), Served::Complete(_)) => true,
            _ => false,
        }
    }

    /// Our answer to `ListGames`: complete games, then downloads in progress.
    pub fn summaries(&self) -> Vec<GameSummary> {
        let mut games: Vec<GameSummary> = self
            .library
            .snapshot()
            .values()
            .map(|g| g.summary())
            .collect();
        games.extend(self.partials().values().map(|p| p.summary.clone()));
        games
    }

    /// The digest of [`Self::summaries`], announced to peers so they list us
    /// again only when it changed.
    pub fn digest(&self) -> Hash {
        games_digest(&self.summaries())
    }

    /// A picture of one of our complete games.
    pub fn thumbnail(&self, hash: &Hash) -> Option<Thumbnail> {
        thumbnail_with_hash(&self.library.snapshot(), hash)
    }

    /// Offer a download in progress until the guard is withdrawn or dropped.
    /// Peers are told our offer changed.
    pub fn register(
        self: &Arc<Self>,
        summary: GameSummary,
        game: LocalGame,
        status: Arc<dyn PieceStatus>,
    ) -> OfferGuard {
        let version_id = game.version_id;
        let partial = Partial {
            summary: GameSummary {
                complete: false,
                ..summary
            },
            game,
            status,
        };
        self.partials().insert(version_id, Arc::new(partial));
        self.library.offer_changed();
        OfferGuard {
            offer: self.clone(),
            version_id,
        }
    }

    fn withdraw(&self, version_id: &VersionId) {
        if self.partials().remove(version_id).is_some() {
            self.library.offer_changed();
        }
    }
}

/// Keeps a download offered; withdrawn on drop, on every exit path of the
/// download. Withdraw it explicitly before the staging folder moves (the
/// install rename), so no request reads a path that is going away.
pub struct OfferGuard {
    offer: Arc<Offer>,
    version_id: VersionId,
}

impl OfferGuard {
    pub fn withdraw(self) {
        // Drop does it.
    }
}

impl Drop for OfferGuard {
    fn drop(&mut self) {
        self.offer.withdraw(&self.version_id);
    }
}
