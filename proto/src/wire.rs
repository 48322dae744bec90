//! Messages and their framing.
//!
//! Every message travels as one frame: a 4-byte big-endian length `n`, then
//! `n` bytes: one kind byte and the message body in postcard. postcard is
//! compact (varints, no field names), deterministic for our types, and needs
//! no schema compiler; the kind byte lets a receiver check the per-kind size
//! limit before it buffers a byte of the body. Piece data is not a frame: a
//! [`Response::Piece`] header is followed by exactly `len` raw bytes.

use serde::{Deserialize, Serialize};

use crate::manifest::{Hash, Manifest, VersionId};

/// Bytes before every frame body: the length.
pub const LEN_BYTES: usize = 4;
/// Requests are small: ids, indexes, a name. 64 KiB is far above any honest
/// request and small enough that garbage cannot make us buffer much.
pub const MAX_REQUEST_FRAME: u32 = 64 << 10;
/// A catalog of a big library (hundreds of games with descriptions).
pub const MAX_GAMES_FRAME: u32 = 4 << 20;
/// A manifest of [`crate::manifest::MAX_FILES`] files at ~100 bytes each
/// plus 32 bytes per piece.
pub const MAX_MANIFEST_FRAME: u32 = 32 << 20;
/// A peer exchange answer: [`MAX_EXCHANGED_PEERS`] records of at most
/// ~650 bytes each (id, address, version, digest and a full status).
pub const MAX_PEERS_FRAME: u32 = 256 << 10;
/// A thumbnail (2 MiB cap) and its header.
pub const MAX_THUMBNAIL_FRAME: u32 = (2 << 20) + 1024;
/// Everything else: handshakes, errors, acks, have-sets (32 Ki pieces = two
/// bitmaps of 4 KiB).
pub const MAX_SMALL_FRAME: u32 = 64 << 10;
/// Pieces one `GetPieces` may ask for. With 1-16 MiB pieces this is 32-512 MiB
/// of data per stream: enough to keep a stream busy, small enough that a
/// cancelled download wastes little.
pub const MAX_PIECES_PER_REQUEST: usize = 32;
/// A `WatchHaveSet` stream carries at most one frame per this many
/// milliseconds: changes that come faster are sent together.
pub const WATCH_GAP_MS: u64 = 250;
/// Longest display name, in bytes of UTF-8: 64 Latin letters, 32 Cyrillic
/// or Greek ones, 21 Chinese ones; plenty to tell people apart in a list.
/// Counted in bytes, not characters, because bytes are what a name costs in
/// every `Hello` and in the mDNS TXT record (at most 255 bytes per
/// `key=value` string); and counted here only, so a name the settings accept
/// is never one the wire refuses. Names from elsewhere (the CLI, a host
/// name) are cut to fit with [`truncate_display_name`].
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;

/// `name` cut to at most [`MAX_DISPLAY_NAME_BYTES`] bytes, at a character
/// boundary: the longest prefix of whole characters that fits.
pub fn truncate_display_name(name: &str) -> &str {
    if name.len() <= MAX_DISPLAY_NAME_BYTES {
        return name;
    }
    let mut end = MAX_DISPLAY_NAME_BYTES;
    // A UTF-8 character is at most 4 bytes: this steps back at most 3 times.
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Error codes carried by [`Response::Error`]. The receiver branches on these,
/// never on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request could not be decoded or breaks a limit.
    BadRequest,
    /// The first request of a connection must be `Hello`.
    HandshakeRequired,
    /// Protocol versions differ.
    IncompatibleVersion,
    /// The party key proof is missing or wrong.
    PartyKey,
    /// No such game version, thumbnail or download here.
    NotFound,
    /// A piece or file index outside the manifest.
    OutOfRange,
    /// Too many concurrent requests or uploads from this peer; retry later.
    Busy,
    /// Reading local data failed.
    Internal,
}

/// The first message on a connection, both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    /// The sender's peer id (the display form; it must match its certificate).
    pub peer_id: String,
    /// At most [`MAX_DISPLAY_NAME_BYTES`].
    pub display_name: String,
    /// [`games_digest`] of what the sender's `ListGames` answers now: a peer
    /// lists the sender's games again only when this differs from the digest
    /// of the list it holds.
    pub library_digest: Hash,
    /// With a party key: the sender's key exchange message, at most
    /// [`MAX_PARTY_MESSAGE_BYTES`] (docs/PROTOCOL.md "Party key").
    pub party_message: Option<Vec<u8>>,
    /// With a party key, in the server's answer only: its key confirmation.
    pub party_confirmation: Option<Hash>,
    /// The UDP port the sender's own server listens on, so the receiver can
    /// dial back and tell others (peer exchange).
    pub listen_port: u16,
    /// The version of the sender's own [`PeerRecord`]: set from the clock
    /// when it starts and raised whenever its library changes, so a newer
    /// record of it always wins.
    pub record_version: u64,
}

/// Longest party key exchange message a `Hello` may carry. SPAKE2 over
/// Ed25519 sends 33 bytes; the bound only keeps garbage small.
pub const MAX_PARTY_MESSAGE_BYTES: usize = 64;

/// What one peer says of another (or of itself): where it listens, its
/// library, and whether it is gone. Hearsay until the receiver checks it
/// with that peer (docs/PROTOCOL.md "Membership").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub peer_id: String,
    pub addr: std::net::SocketAddr,
    /// The subject's own record version ([`Hello::record_version`]); a
    /// record with a higher version replaces one with a lower.
    pub version: u64,
    /// [`games_digest`] of the subject's game list at `version`.
    pub library_digest: Hash,
    /// The sender found the subject gone (it left, or stopped answering).
    pub gone: bool,
    /// What the subject said of its party state at `version`; `None` when
    /// the sender does not know it (a record heard by mDNS).
    pub status: Option<PeerStatus>,
}

/// A peer's party state, carried in its record: what a ready board needs
/// of it beyond its game list, so that no one has to ask it. Small and
/// bounded; it changes when a lineup is published, a game starts or exits,
/// or a lineup download moves a step ([`STATUS_PERMILLE_STEP`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The version of the lineup the subject publishes (0: none); a
    /// receiver holding an older one asks it with `GetLineup`.
    pub lineup: u64,
    /// The subject was started as an organizer.
    pub organizer: bool,
    /// Game ids of the games it runs now (started from lanspread), at most
    /// [`MAX_STATUS_PLAYING`].
    pub playing: Vec<String>,
    /// Its downloads of lineup games, at most [`MAX_STATUS_DOWNLOADS`].
    pub downloads: Vec<DownloadStatus>,
}

/// How far one download is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadStatus {
    pub version_id: VersionId,
    /// 0-1000, in steps of [`STATUS_PERMILLE_STEP`].
    pub permille: u16,
    pub eta_secs: Option<u32>,
}

/// Most running games a status lists: one player plays one game, a host
/// may run a server beside it.
pub const MAX_STATUS_PLAYING: usize = 2;
/// Most downloads a status lists: a lineup's games that download at once.
pub const MAX_STATUS_DOWNLOADS: usize = 8;
/// Progress in a status moves in steps of 5 %: every step is one record
/// told to the whole party, so 20 per download at the most.
pub const STATUS_PERMILLE_STEP: u16 = 50;

/// Tonight's lineup as its publisher serves it (`GetLineup`). Fetched from
/// the publisher itself, over a connection whose certificate proves who it
/// is; never relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLineup {
    /// The publisher's clock in milliseconds when it published: a newer
    /// lineup from the same publisher replaces the older, across restarts.
    pub version: u64,
    /// The publisher was started as an organizer.
    pub organizer: bool,
    pub entries: Vec<WireLineupEntry>,
    /// The last ready check the publisher called.
    pub ready_check: Option<WireReadyCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLineupEntry {
    pub version_id: VersionId,
    pub game_id: String,
    /// When it is played, as the organizer wrote it ("21:00"), at most
    /// [`MAX_LINEUP_AT_BYTES`].
    pub at: Option<String>,
}

/// "Get ready for this game": `id` tells one call from the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReadyCheck {
    pub version_id: VersionId,
    pub id: u64,
}

/// Most games in a lineup: a night of play, not a library.
pub const MAX_LINEUP_ENTRIES: usize = 32;
/// Longest time text of a lineup entry ("21:00", "after dinner").
pub const MAX_LINEUP_AT_BYTES: usize = 32;

impl PeerStatus {
    /// Within its bounds.
    pub fn check(&self) -> Result<(), String> {
        if self.playing.len() > MAX_STATUS_PLAYING {
            return Err(format!(
                "{} running games (at most {MAX_STATUS_PLAYING})",
                self.playing.len()
            ));
        }
        if self.downloads.len() > MAX_STATUS_DOWNLOADS {
            return Err(format!(
                "{} downloads (at most {MAX_STATUS_DOWNLOADS})",
                self.downloads.len()
            ));
        }
        if let Some(long) = self
            .playing
            .iter()
            .find(|g| g.len() > crate::path::MAX_GAME_ID_LEN)
        {
            return Err(format!("a game id of {} bytes", long.len()));
        }
        if self.downloads.iter().any(|d| d.permille > 1000) {
            return Err("progress over 1000 permille".into());
        }
        Ok(())
    }
}

impl WireLineup {
    /// Within its bounds.
    pub fn check(&self) -> Result<(), String> {
        if self.entries.len() > MAX_LINEUP_ENTRIES {
            return Err(format!(
                "{} games (at most {MAX_LINEUP_ENTRIES})",
                self.entries.len()
            ));
        }
        for entry in &self.entries {
            if entry.game_id.len() > crate::path::MAX_GAME_ID_LEN {
                return Err(format!("a game id of {} bytes", entry.game_id.len()));
            }
            if entry
                .at
                .as_ref()
                .is_some_and(|at| at.len() > MAX_LINEUP_AT_BYTES)
            {
                return Err(format!("a time over {MAX_LINEUP_AT_BYTES} bytes"));
            }
        }
        Ok(())
    }
}

fn check_records(kind: &'static str, records: &[PeerRecord]) -> Result<(), DecodeError> {
    for status in records.iter().filter_map(|r| r.status.as_ref()) {
        status
            .check()
            .map_err(|reason| DecodeError::Malformed { kind, reason })?;
    }
    Ok(())
}

/// Most records one `Peers` answer lists: far above any LAN party, and a
/// bound on what a lying peer can make us dial.
pub const MAX_EXCHANGED_PEERS: usize = 256;
/// Most records one `Gossip` request carries.
pub const MAX_GOSSIP_RECORDS: usize = 64;

/// What the catalog shows of one game version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameSummary {
    /// The folder name.
    pub game_id: String,
    pub version_id: VersionId,
    pub title: String,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub min_players: Option<u32>,
    pub max_players: Option<u32>,
    pub version_label: Option<String>,
    pub total_size: u64,
    pub n_files: u64,
    pub thumbnail: Option<Hash>,
    /// False for a download in progress that serves the pieces it has.
    pub complete: bool,
}

/// The digest of a game list, as `ListGames` answers it: it depends only on
/// the set of (game id, version id, complete), not on order or duplicates.
/// A peer announces it (`Hello`, `LibraryChanged`); the receiver compares it
/// with the digest of the list it last fetched and lists again only when
/// they differ. Titles and other metadata need no place in it: they live in
/// the game folder, so they change the version id.
pub fn games_digest(games: &[GameSummary]) -> Hash {
    let set: std::collections::BTreeSet<(&str, &VersionId, bool)> = games
        .iter()
        .map(|g| (g.game_id.as_str(), &g.version_id, g.complete))
        .collect();
    let mut hasher = blake3::Hasher::new_derive_key("lanspread games digest v1");
    for (game_id, version_id, complete) in set {
        // Length-prefixed: ("ab", ..) and ("a", "b"..) never hash alike.
        hasher.update(&(game_id.len() as u64).to_le_bytes());
        hasher.update(game_id.as_bytes());
        hasher.update(&version_id.0);
        hasher.update(&[u8::from(complete)]);
    }
    Hash::from(hasher.finalize())
}

/// The digest of a set of peer records, as `GetPeers` compares it: it depends
/// only on the set of (peer id, version) of the records present (not gone),
/// so two peers that see the same peers at the same versions agree on it
/// whatever their order.
pub fn members_digest<'a>(present: impl IntoIterator<Item = (&'a str, u64)>) -> Hash {
    let set: std::collections::BTreeSet<(&str, u64)> = present.into_iter().collect();
    let mut hasher = blake3::Hasher::new_derive_key("lanspread members digest v1");
    for (peer_id, version) in set {
        hasher.update(&(peer_id.len() as u64).to_le_bytes());
        hasher.update(peer_id.as_bytes());
        hasher.update(&version.to_le_bytes());
    }
    Hash::from(hasher.finalize())
}

/// Longest game title kept, in bytes; a longer one is cut (the game is
/// still listed). Titles are shown on one or two lines.
pub const MAX_TITLE_BYTES: usize = 200;
/// Longest description kept, in bytes: a few screens of text. One 5 MB
/// description once filled a whole `Games` frame and hid every game of
/// its host.
pub const MAX_DESCRIPTION_BYTES: usize = 8 << 10;
/// Longest genre or version label kept, in bytes.
pub const MAX_LABEL_BYTES: usize = 64;

/// `text` cut to at most `max` bytes at a character boundary.
pub fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Why a listed game is not offered for download.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    #[error("game id `{game_id}` is not a plain folder name: {error}")]
    GameId {
        game_id: String,
        error: crate::path::PathError,
    },
    #[error("{0} files is more than the limit of {max}", max = crate::manifest::MAX_FILES)]
    TooManyFiles(u64),
}

impl GameSummary {
    /// Cut every text field to its limit ([`MAX_TITLE_BYTES`],
    /// [`MAX_DESCRIPTION_BYTES`], [`MAX_LABEL_BYTES`]); the names of the
    /// fields that were cut, for the sender's log or the receiver's UI.
    pub fn cut_to_limits(&mut self) -> Vec<&'static str> {
        fn cut(field: &mut String, max: usize) -> bool {
            let len = cut_at_char_boundary(field, max).len();
            let was_cut = len < field.len();
            field.truncate(len);
            was_cut
        }
        let mut cut_fields = Vec::new();
        if cut(&mut self.title, MAX_TITLE_BYTES) {
            cut_fields.push("title");
        }
        for (name, field, max) in [
            ("description", &mut self.description, MAX_DESCRIPTION_BYTES),
            ("genre", &mut self.genre, MAX_LABEL_BYTES),
            ("version label", &mut self.version_label, MAX_LABEL_BYTES),
        ] {
            if field.as_mut().is_some_and(|f| cut(f, max)) {
                cut_fields.push(name);
            }
        }
        cut_fields
    }

    /// Whether a receiver may download this game: its id is one plain
    /// folder name ([`crate::path::validate_game_id`]) and its file count
    /// within [`crate::manifest::MAX_FILES`]. The manifest is checked again
    /// on its own when it arrives.
    pub fn check(&self) -> Result<(), SummaryError> {
        crate::path::validate_game_id(&self.game_id).map_err(|error| SummaryError::GameId {
            game_id: self.game_id.clone(),
            error,
        })?;
        if self.n_files > crate::manifest::MAX_FILES as u64 {
            return Err(SummaryError::TooManyFiles(self.n_files));
        }
        Ok(())
    }
}

/// A request: the first frame on a stream the client opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello(Hello),
    ListGames,
    GetManifest {
        version_id: VersionId,
    },
    /// Pieces come back in the order asked, each as a `Piece` header and raw bytes.
    GetPieces {
        version_id: VersionId,
        pieces: Vec<u32>,
    },
    GetThumbnail {
        hash: Hash,
    },
    /// Which pieces of a version the server has (complete or in progress),
    /// then what changes: answered `HaveSet`, then a `HaveChanges` (or, when
    /// shorter, a whole `HaveSet` again) each time its pieces change, at
    /// most one per [`WATCH_GAP_MS`], for as long as the client keeps the
    /// stream. The stream ends once the server has every piece (told
    /// first) or no longer offers the version.
    WatchHaveSet {
        version_id: VersionId,
    },
    /// Peer records the sender learnt since it last told us: a new peer, a
    /// changed library, a peer gone. Answered `Ok`.
    Gossip(Vec<PeerRecord>),
    Goodbye,
    Ping {
        nonce: u64,
    },
    /// Peer exchange: the records of every peer the server finds present
    /// (itself included), unless [`members_digest`] of them is `digest`,
    /// the client's own: then an empty answer.
    GetPeers {
        digest: Hash,
    },
    /// With a party key: the client's key confirmation, the second request
    /// of a connection; nothing else is served before it is accepted.
    PartyConfirm {
        confirmation: Hash,
    },
    /// The lineup the server publishes; answered `Lineup`.
    GetLineup,
}

/// A response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Hello(Hello),
    Games(Vec<GameSummary>),
    Manifest(Box<Manifest>),
    /// Followed by `len` raw bytes of piece `piece_idx`.
    Piece {
        piece_idx: u32,
        len: u32,
    },
    Thumbnail {
        mime: String,
        bytes: Vec<u8>,
    },
    /// Bit `i` (LSB first within each byte) set when piece `i` is present
    /// (`bits`), or being fetched by the sender right now (`fetching`).
    HaveSet {
        n_pieces: u32,
        bits: Vec<u8>,
        fetching: Vec<u8>,
    },
    /// What changed since the last `HaveSet` or `HaveChanges` of a
    /// `WatchHaveSet`: pieces now present, and every piece being fetched now
    /// (the whole set, which stays small).
    HaveChanges {
        have: Vec<u32>,
        fetching: Vec<u32>,
    },
    Ok,
    Pong {
        nonce: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Peers(Vec<PeerRecord>),
    /// `None`: the server publishes no lineup.
    Lineup(Option<WireLineup>),
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty frame")]
    Empty,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("frame of {len} bytes is over the {max}-byte limit for its kind")]
    TooLarge { len: u32, max: u32 },
    #[error("malformed {kind} message: {reason}")]
    Malformed { kind: &'static str, reason: String },
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const LIST_GAMES: u8 = 2;
    pub const GET_MANIFEST: u8 = 3;
    pub const GET_PIECES: u8 = 4;
    pub const GET_THUMBNAIL: u8 = 5;
    pub const WATCH_HAVE_SET: u8 = 6;
    pub const GOSSIP: u8 = 7;
    pub const GOODBYE: u8 = 8;
    pub const PING: u8 = 9;
    pub const GET_PEERS: u8 = 10;
    pub const PARTY_CONFIRM: u8 = 11;
    pub const GET_LINEUP: u8 = 12;

    pub const R_HELLO: u8 = 101;
    pub const R_GAMES: u8 = 102;
    pub const R_MANIFEST: u8 = 103;
    pub const R_PIECE: u8 = 104;
    pub const R_THUMBNAIL: u8 = 105;
    pub const R_HAVE_SET: u8 = 106;
    pub const R_OK: u8 = 107;
    pub const R_PONG: u8 = 108;
    pub const R_ERROR: u8 = 109;
    pub const R_PEERS: u8 = 110;
    pub const R_LINEUP: u8 = 111;
    pub const R_HAVE_CHANGES: u8 = 112;
}

fn frame<T: Serialize>(kind: u8, body: &T) -> Vec<u8> {
    let mut out = vec![0u8; LEN_BYTES + 1];
    out[LEN_BYTES] = kind;
    let out = postcard::to_extend(body, out).expect("our messages always serialize");
    let len = (out.len() - LEN_BYTES) as u32;
    let mut out = out;
    out[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    out
}

/// A whole frame inside a buffer: its kind, its body, and the bytes it used.
type RawFrame<'a> = (u8, &'a [u8], usize);

/// Split off one frame: `Ok(None)` until `buf` holds a whole one. Checks the
/// size limit `max_for(kind)` as soon as the header is in.
fn split_frame(
    buf: &[u8],
    max_for: impl Fn(u8) -> Option<u32>,
) -> Result<Option<RawFrame<'_>>, DecodeError> {
    if buf.len() < LEN_BYTES + 1 {
        if buf.len() >= LEN_BYTES && buf[..LEN_BYTES] == [0; LEN_BYTES] {
            return Err(DecodeError::Empty);
        }
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..LEN_BYTES].try_into().expect("4 bytes"));
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    let kind = buf[LEN_BYTES];
    let max = max_for(kind).ok_or(DecodeError::UnknownKind(kind))?;
    if len > max {
        return Err(DecodeError::TooLarge { len, max });
    }
    let total = LEN_BYTES + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((kind, &buf[LEN_BYTES + 1..total], total)))
}

fn body<'a, T: Deserialize<'a>>(kind: &'static str, bytes: &'a [u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(DecodeError::Malformed {
            kind,
            reason: format!("{} trailing bytes", rest.len()),
        }),
        Err(e) => Err(DecodeError::Malformed {
            kind,
            reason: e.to_string(),
        }),
    }
}

/// The size limit of a request frame, `None` for an unknown kind.
pub fn request_limit(kind: u8) -> Option<u32> {
    (kind::HELLO..=kind::GET_LINEUP)
        .contains(&kind)
        .then_some(MAX_REQUEST_FRAME)
}

/// The size limit of a response frame, `None` for an unknown kind.
pub fn response_limit(kind: u8) -> Option<u32> {
    match kind {
        kind::R_GAMES => Some(MAX_GAMES_FRAME),
        kind::R_MANIFEST => Some(MAX_MANIFEST_FRAME),
        kind::R_THUMBNAIL => Some(MAX_THUMBNAIL_FRAME),
        kind::R_PEERS => Some(MAX_PEERS_FRAME),
        kind::R_HELLO
        | kind::R_PIECE
        | kind::R_HAVE_SET
        | kind::R_HAVE_CHANGES
        | kind::R_OK
        | kind::R_PONG
        | kind::R_ERROR
        | kind::R_LINEUP => Some(MAX_SMALL_FRAME),
        _ => None,
    }
}

/// Limits of a `Hello` beyond its frame size, the same both ways.
fn check_hello(hello: &Hello) -> Result<(), DecodeError> {
    if hello.display_name.len() > MAX_DISPLAY_NAME_BYTES {
        return Err(DecodeError::Malformed {
            kind: "Hello",
            reason: format!("display name over {MAX_DISPLAY_NAME_BYTES} bytes"),
        });
    }
    if hello
        .party_message
        .as_ref()
        .is_some_and(|m| m.len() > MAX_PARTY_MESSAGE_BYTES)
    {
        return Err(DecodeError::Malformed {
            kind: "Hello",
            reason: format!("party key message over {MAX_PARTY_MESSAGE_BYTES} bytes"),
        });
    }
    Ok(())
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Hello(h) => frame(kind::HELLO, h),
            Request::ListGames => frame(kind::LIST_GAMES, &()),
            Request::GetManifest { version_id } => frame(kind::GET_MANIFEST, version_id),
            Request::GetPieces { version_id, pieces } => {
                frame(kind::GET_PIECES, &(version_id, pieces))
            }
            Request::GetThumbnail { hash } => frame(kind::GET_THUMBNAIL, hash),
            Request::WatchHaveSet { version_id } => frame(kind::WATCH_HAVE_SET, version_id),
            Request::Gossip(records) => frame(kind::GOSSIP, records),
            Request::Goodbye => frame(kind::GOODBYE, &()),
            Request::Ping { nonce } => frame(kind::PING, nonce),
            Request::GetPeers { digest } => frame(kind::GET_PEERS, digest),
            Request::PartyConfirm { confirmation } => frame(kind::PARTY_CONFIRM, confirmation),
            Request::GetLineup => frame(kind::GET_LINEUP, &()),
        }
    }

    /// Decode one request from the front of `buf`; returns it and the bytes
    /// it used. `Ok(None)`: incomplete, read more.
    pub fn decode(buf: &[u8]) -> Result<Option<(Request, usize)>, DecodeError> {
        let Some((k, bytes, used)) = split_frame(buf, request_limit)? else {
            return Ok(None);
        };
        let request = match k {
            kind::HELLO => Request::Hello(body("Hello", bytes)?),
            kind::LIST_GAMES => {
                body::<()>("ListGames", bytes)?;
                Request::ListGames
            }
            kind::GET_MANIFEST => Request::GetManifest {
                version_id: body("GetManifest", bytes)?,
            },
            kind::GET_PIECES => {
                let (version_id, pieces): (VersionId, Vec<u32>) = body("GetPieces", bytes)?;
                if pieces.is_empty() || pieces.len() > MAX_PIECES_PER_REQUEST {
                    return Err(DecodeError::Malformed {
                        kind: "GetPieces",
                        reason: format!(
                            "{} pieces (1..={MAX_PIECES_PER_REQUEST} allowed)",
                            pieces.len()
                        ),
                    });
                }
                Request::GetPieces { version_id, pieces }
            }
            kind::GET_THUMBNAIL => Request::GetThumbnail {
                hash: body("GetThumbnail", bytes)?,
            },
            kind::WATCH_HAVE_SET => Request::WatchHaveSet {
                version_id: body("WatchHaveSet", bytes)?,
            },
            kind::GOSSIP => {
                let records: Vec<PeerRecord> = body("Gossip", bytes)?;
                if records.len() > MAX_GOSSIP_RECORDS {
                    return Err(DecodeError::Malformed {
                        kind: "Gossip",
                        reason: format!("{} records (at most {MAX_GOSSIP_RECORDS})", records.len()),
                    });
                }
                check_records("Gossip", &records)?;
                Request::Gossip(records)
            }
            kind::GOODBYE => {
                body::<()>("Goodbye", bytes)?;
                Request::Goodbye
            }
            kind::PING => Request::Ping {
                nonce: body("Ping", bytes)?,
            },
            kind::GET_PEERS => Request::GetPeers {
                digest: body("GetPeers", bytes)?,
            },
            kind::PARTY_CONFIRM => Request::PartyConfirm {
                confirmation: body("PartyConfirm", bytes)?,
            },
            kind::GET_LINEUP => {
                body::<()>("GetLineup", bytes)?;
                Request::GetLineup
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if let Request::Hello(hello) = &request {
            check_hello(hello)?;
        }
        Ok(Some((request, used)))
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Hello(h) => frame(kind::R_HELLO, h),
            Response::Games(g) => frame(kind::R_GAMES, g),
            Response::Manifest(m) => frame(kind::R_MANIFEST, m),
            Response::Piece { piece_idx, len } => frame(kind::R_PIECE, &(piece_idx, len)),
            Response::Thumbnail { mime, bytes } => frame(kind::R_THUMBNAIL, &(mime, bytes)),
            Response::HaveSet {
                n_pieces,
                bits,
                fetching,
            } => frame(kind::R_HAVE_SET, &(n_pieces, bits, fetching)),
            Response::HaveChanges { have, fetching } => {
                frame(kind::R_HAVE_CHANGES, &(have, fetching))
            }
            Response::Ok => frame(kind::R_OK, &()),
            Response::Pong { nonce } => frame(kind::R_PONG, nonce),
            Response::Error { code, message } => frame(kind::R_ERROR, &(code, message)),
            Response::Peers(peers) => frame(kind::R_PEERS, peers),
            Response::Lineup(lineup) => frame(kind::R_LINEUP, lineup),
        }
    }

    /// Decode one response from the front of `buf`, like [`Request::decode`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Response, usize)>, DecodeError> {
        let Some((k, bytes, used)) = split_frame(buf, response_limit)? else {
            return Ok(None);
        };
        let response = match k {
            kind::R_HELLO => {
                let hello = body("Hello", bytes)?;
                check_hello(&hello)?;
                Response::Hello(hello)
            }
            kind::R_GAMES => Response::Games(body("Games", bytes)?),
            kind::R_MANIFEST => Response::Manifest(Box::new(body("Manifest", bytes)?)),
            kind::R_PIECE => {
                let (piece_idx, len) = body("Piece", bytes)?;
                Response::Piece { piece_idx, len }
            }
            kind::R_THUMBNAIL => {
                let (mime, bytes) = body("Thumbnail", bytes)?;
                Response::Thumbnail { mime, bytes }
            }
            kind::R_HAVE_SET => {
                let (n_pieces, bits, fetching): (u32, Vec<u8>, Vec<u8>) = body("HaveSet", bytes)?;
                let bytes_needed = (n_pieces as usize).div_ceil(8);
                if bits.len() != bytes_needed || fetching.len() != bytes_needed {
                    return Err(DecodeError::Malformed {
                        kind: "HaveSet",
                        reason: "bit count does not match the piece count".into(),
                    });
                }
                Response::HaveSet {
                    n_pieces,
                    bits,
                    fetching,
                }
            }
            kind::R_HAVE_CHANGES => {
                let (have, fetching) = body("HaveChanges", bytes)?;
                Response::HaveChanges { have, fetching }
            }
            kind::R_OK => {
                body::<()>("Ok", bytes)?;
                Response::Ok
            }
            kind::R_PONG => Response::Pong {
                nonce: body("Pong", bytes)?,
            },
            kind::R_ERROR => {
                let (code, message) = body("Error", bytes)?;
                Response::Error { code, message }
            }
            kind::R_PEERS => {
                let peers: Vec<PeerRecord> = body("Peers", bytes)?;
                if peers.len() > MAX_EXCHANGED_PEERS {
                    return Err(DecodeError::Malformed {
                        kind: "Peers",
                        reason: format!("{} peers (at most {MAX_EXCHANGED_PEERS})", peers.len()),
                    });
                }
                check_records("Peers", &peers)?;
                Response::Peers(peers)
            }
            kind::R_LINEUP => {
                let lineup: Option<WireLineup> = body("Lineup", bytes)?;
                if let Some(reason) = lineup.as_ref().and_then(|l| l.check().err()) {
                    return Err(DecodeError::Malformed {
                        kind: "Lineup",
                        reason,
                    });
                }
                Response::Lineup(lineup)
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        Ok(Some((response, used)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileEntry;
    use proptest::prelude::*;

    fn hash() -> impl Strategy<Value = Hash> {
        any::<[u8; 32]>().prop_map(Hash)
    }

    fn hello() -> impl Strategy<Value = Hello> {
        (
            any::<u16>(),
            "[a-z2-7]{26}",
            ".{0,16}",
            hash(),
            proptest::option::of(proptest::collection::vec(
                any::<u8>(),
                0..=MAX_PARTY_MESSAGE_BYTES,
            )),
            proptest::option::of(hash()),
            any::<u16>(),
            any::<u64>(),
        )
            .prop_map(
                |(
                    protocol_version,
                    peer_id,
                    display_name,
                    library_digest,
                    party_message,
                    party_confirmation,
                    listen_port,
                    record_version,
                )| {
                    Hello {
                        protocol_version,
                        peer_id,
                        display_name,
                        library_digest,
                        party_message,
                        party_confirmation,
                        listen_port,
                        record_version,
                    }
                },
            )
    }

    fn status() -> impl Strategy<Value = PeerStatus> {
        (
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec("[a-z]{1,8}", 0..=MAX_STATUS_PLAYING),
            proptest::collection::vec(
                (hash(), 0..=1000u16, proptest::option::of(any::<u32>())),
                0..=MAX_STATUS_DOWNLOADS,
            ),
        )
            .prop_map(|(lineup, organizer, playing, downloads)| PeerStatus {
                lineup,
                organizer,
                playing,
                downloads: downloads
                    .into_iter()
                    .map(|(version_id, permille, eta_secs)| DownloadStatus {
                        version_id,
                        permille,
                        eta_secs,
                    })
                    .collect(),
            })
    }

    fn record() -> impl Strategy<Value = PeerRecord> {
        (
            "[a-z2-7]{26}",
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u64>(),
            hash(),
            any::<bool>(),
            proptest::option::of(status()),
        )
            .prop_map(
                |(peer_id, ip, port, version, library_digest, gone, status)| PeerRecord {
                    peer_id,
                    addr: std::net::SocketAddr::from((ip, port)),
                    version,
                    library_digest,
                    gone,
                    status,
                },
            )
    }

    fn lineup() -> impl Strategy<Value = WireLineup> {
        (
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(
                (hash(), "[a-z]{1,8}", proptest::option::of("[0-9:]{0,5}")),
                0..4,
            ),
            proptest::option::of((hash(), any::<u64>())),
        )
            .prop_map(|(version, organizer, entries, check)| WireLineup {
                version,
                organizer,
                entries: entries
                    .into_iter()
                    .map(|(version_id, game_id, at)| WireLineupEntry {
                        version_id,
                        game_id,
                        at,
                    })
                    .collect(),
                ready_check: check.map(|(version_id, id)| WireReadyCheck { version_id, id }),
            })
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            hello().prop_map(Request::Hello),
            Just(Request::ListGames),
            hash().prop_map(|version_id| Request::GetManifest { version_id }),
            (
                hash(),
                proptest::collection::vec(any::<u32>(), 1..=MAX_PIECES_PER_REQUEST)
            )
                .prop_map(|(version_id, pieces)| Request::GetPieces { version_id, pieces }),
            hash().prop_map(|hash| Request::GetThumbnail { hash }),
            hash().prop_map(|version_id| Request::WatchHaveSet { version_id }),
            proptest::collection::vec(record(), 0..4).prop_map(Request::Gossip),
            Just(Request::Goodbye),
            any::<u64>().prop_map(|nonce| Request::Ping { nonce }),
            hash().prop_map(|digest| Request::GetPeers { digest }),
            hash().prop_map(|confirmation| Request::PartyConfirm { confirmation }),
            Just(Request::GetLineup),
        ]
    }

    fn summary() -> impl Strategy<Value = GameSummary> {
        ("[a-z]{1,8}", hash(), ".{0,12}", any::<u64>(), any::<bool>()).prop_map(
            |(game_id, version_id, title, total_size, complete)| GameSummary {
                game_id,
                version_id,
                title,
                description: Some("d".into()),
                genre: None,
                min_players: Some(2),
                max_players: None,
                version_label: None,
                total_size,
                n_files: 3,
                thumbnail: None,
                complete,
            },
        )
    }

    fn response() -> impl Strategy<Value = Response> {
        let codes = prop_oneof![
            Just(ErrorCode::BadRequest),
            Just(ErrorCode::NotFound),
            Just(ErrorCode::OutOfRange),
            Just(ErrorCode::PartyKey),
            Just(ErrorCode::Busy),
        ];
        prop_oneof![
            hello().prop_map(Response::Hello),
            proptest::collection::vec(summary(), 0..4).prop_map(Response::Games),
            (proptest::collection::vec(hash(), 0..4)).prop_map(|pieces| {
                Response::Manifest(Box::new(Manifest {
                    piece_size: 1 << 20,
                    files: vec![FileEntry {
                        path: "a/b".into(),
                        size: 9,
                        executable: true,
                    }],
                    empty_dirs: vec!["e".into()],
                    pieces,
                }))
            }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(piece_idx, len)| Response::Piece { piece_idx, len }),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|bytes| Response::Thumbnail {
                mime: "image/png".into(),
                bytes
            }),
            (0u32..200).prop_map(|n| Response::HaveSet {
                n_pieces: n,
                bits: vec![0xa5; (n as usize).div_ceil(8)],
                fetching: vec![0x18; (n as usize).div_ceil(8)]
            }),
            (
                proptest::collection::vec(any::<u32>(), 0..8),
                proptest::collection::vec(any::<u32>(), 0..8)
            )
                .prop_map(|(have, fetching)| Response::HaveChanges { have, fetching }),
            Just(Response::Ok),
            any::<u64>().prop_map(|nonce| Response::Pong { nonce }),
            (codes, ".{0,20}").prop_map(|(code, message)| Response::Error { code, message }),
            proptest::collection::vec(record(), 0..4).prop_map(Response::Peers),
            proptest::option::of(lineup()).prop_map(Response::Lineup),
        ]
    }

    proptest! {
        #[test]
        fn every_request_round_trips(req in request()) {
            let bytes = req.encode();
            prop_assert_eq!(Request::decode(&bytes), Ok(Some((req, bytes.len()))));
            // Every strict prefix is incomplete, never an error.
            for cut in 0..bytes.len() {
                prop_assert_eq!(Request::decode(&bytes[..cut]), Ok(None));
            }
        }

        #[test]
        fn every_response_round_trips(resp in response()) {
            let bytes = resp.encode();
            prop_assert_eq!(Response::decode(&bytes), Ok(Some((resp, bytes.len()))));
            prop_assert_eq!(Response::decode(&bytes[..bytes.len() - 1]), Ok(None));
        }

        /// Any bytes decode to a message, `None` or an error; never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
        }

        #[test]
        fn frames_concatenate(a in request(), b in request()) {
            let mut bytes = a.encode();
            let first = bytes.len();
            bytes.extend(b.encode());
            let (decoded, used) = Request::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!((decoded, used), (a, first));
            prop_assert_eq!(Request::decode(&bytes[used..]).unwrap().unwrap().0, b);
        }
    }

    fn check_truncated(name: &str, expected: &str) {
        assert_eq!(truncate_display_name(name), expected, "{name:?}");
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let ascii = "a".repeat(MAX_DISPLAY_NAME_BYTES);
        check_truncated("", "");
        check_truncated("Ana", "Ana");
        check_truncated(&ascii, &ascii);
        check_truncated(&format!("{ascii}b"), &ascii);
        // 2-byte characters: 56 of them are 112 bytes, 32 fit.
        check_truncated(&"Ж".repeat(56), &"Ж".repeat(32));
        // A 2-byte character straddling the limit is dropped whole.
        let straddle = format!("{}Ж", "a".repeat(MAX_DISPLAY_NAME_BYTES - 1));
        check_truncated(&straddle, &"a".repeat(MAX_DISPLAY_NAME_BYTES - 1));
        // 4-byte characters: 16 fill the limit exactly.
        check_truncated(&"🎮".repeat(20), &"🎮".repeat(16));
        // 3-byte characters: 21 fit (63 bytes), the 22nd would not.
        check_truncated(&"游".repeat(30), &"游".repeat(21));
    }

    /// Bug: a display name of 56 Cyrillic letters (112 bytes) passed the
    /// settings' 40-character check and the CLI, then every `Hello` carrying
    /// it was refused, so its host was invisible. A truncated name is
    /// accepted both ways; one over the limit is refused both ways.
    #[test]
    fn a_truncated_name_always_passes_the_hello_check() {
        let hello = |display_name: &str| Hello {
            protocol_version: 1,
            peer_id: "a".repeat(26),
            display_name: display_name.into(),
            library_digest: Hash([0; 32]),
            party_message: None,
            party_confirmation: None,
            listen_port: 1,
            record_version: 0,
        };
        let long = "Ж".repeat(56);
        let fitted = hello(truncate_display_name(&long));
        let request = Request::Hello(fitted.clone()).encode();
        assert!(matches!(Request::decode(&request), Ok(Some(_))));
        let response = Response::Hello(fitted).encode();
        assert!(matches!(Response::decode(&response), Ok(Some(_))));

        let request = Request::Hello(hello(&long)).encode();
        assert!(matches!(
            Request::decode(&request),
            Err(DecodeError::Malformed { kind: "Hello", .. })
        ));
        let response = Response::Hello(hello(&long)).encode();
        assert!(matches!(
            Response::decode(&response),
            Err(DecodeError::Malformed { kind: "Hello", .. })
        ));
    }

    #[test]
    fn a_party_message_over_its_bound_is_refused_both_ways() {
        let hello = |len: usize| Hello {
            protocol_version: 2,
            peer_id: "a".repeat(26),
            display_name: "guest".into(),
            library_digest: Hash([0; 32]),
            party_message: Some(vec![0x41; len]),
            party_confirmation: Some(Hash([1; 32])),
            listen_port: 1,
            record_version: 0,
        };
        let fits = Request::Hello(hello(MAX_PARTY_MESSAGE_BYTES)).encode();
        assert!(matches!(Request::decode(&fits), Ok(Some(_))));
        let over = Request::Hello(hello(MAX_PARTY_MESSAGE_BYTES + 1)).encode();
        assert!(matches!(
            Request::decode(&over),
            Err(DecodeError::Malformed { kind: "Hello", .. })
        ));
        let over = Response::Hello(hello(MAX_PARTY_MESSAGE_BYTES + 1)).encode();
        assert!(matches!(
            Response::decode(&over),
            Err(DecodeError::Malformed { kind: "Hello", .. })
        ));
    }

    fn listed(game_id: &str, version: u8, complete: bool) -> GameSummary {
        GameSummary {
            game_id: game_id.into(),
            version_id: Hash([version; 32]),
            title: game_id.into(),
            description: None,
            genre: None,
            min_players: None,
            max_players: None,
            version_label: None,
            total_size: 1,
            n_files: 1,
            thumbnail: None,
            complete,
        }
    }

    /// Pins issue 13: one 5 MB description hid every game of its host;
    /// now it is cut (the catalog does it where a listing is accepted, the
    /// library when it reads `lanspread.toml`) and the game stays listed.
    #[test]
    fn long_text_is_cut_to_its_limit() {
        let mut game = listed("quake", 1, true);
        game.description = Some("é".repeat(MAX_DESCRIPTION_BYTES));
        game.title = "T".repeat(MAX_TITLE_BYTES + 1);
        game.genre = Some("g".repeat(10));
        let mut games = [game];
        assert_eq!(games[0].cut_to_limits(), vec!["title", "description"]);
        assert_eq!(games[0].title.len(), MAX_TITLE_BYTES);
        assert_eq!(
            games[0].description.as_deref(),
            Some("é".repeat(MAX_DESCRIPTION_BYTES / 2).as_str())
        );
        assert_eq!(games[0].genre.as_deref(), Some("gggggggggg"));
        let mut again = games[0].clone();
        assert!(again.cut_to_limits().is_empty());
    }

    #[test]
    fn a_listed_game_is_checked_before_download() {
        assert_eq!(listed("quake", 1, true).check(), Ok(()));
        for bad in ["../escaped", "/abs", "a/b", ".hidden", "COM¹", "CONIN$"] {
            assert!(
                matches!(
                    listed(bad, 1, true).check(),
                    Err(SummaryError::GameId { .. })
                ),
                "{bad}"
            );
        }
        let message = listed("../x", 1, true).check().unwrap_err().to_string();
        assert!(
            message.starts_with("game id `../x` is not a plain folder name"),
            "{message}"
        );
    }

    #[test]
    fn games_digest_changes_with_what_a_downloader_cares_about() {
        let base = [listed("quake", 1, true), listed("doom", 2, false)];
        let digest = games_digest(&base);
        assert_ne!(digest, games_digest(&[]));
        assert_ne!(digest, games_digest(&base[..1]), "a game fewer");
        let changed = [
            [listed("quake", 3, true), listed("doom", 2, false)],
            [listed("quake", 1, true), listed("doom", 2, true)],
            [listed("quakf", 1, true), listed("doom", 2, false)],
        ];
        for other in changed {
            assert_ne!(digest, games_digest(&other), "{other:?}");
        }
        // Length-prefixed ids: moving a letter between ids changes the digest.
        assert_ne!(
            games_digest(&[listed("ab", 1, true), listed("c", 1, true)]),
            games_digest(&[listed("a", 1, true), listed("bc", 1, true)])
        );
        // What the summary says beyond the version is not part of it.
        let mut retitled = base.clone();
        retitled[0].title = "Quake III".into();
        assert_eq!(digest, games_digest(&retitled));
    }

    proptest! {
        #[test]
        fn truncation_keeps_the_longest_fitting_prefix(name in ".{0,80}") {
            let cut = truncate_display_name(&name);
            prop_assert!(cut.len() <= MAX_DISPLAY_NAME_BYTES);
            prop_assert!(name.starts_with(cut));
            if name.len() <= MAX_DISPLAY_NAME_BYTES {
                prop_assert_eq!(cut, name.as_str());
            } else {
                // The next character would not have fitted.
                let next = name[cut.len()..].chars().next().unwrap();
                prop_assert!(cut.len() + next.len_utf8() > MAX_DISPLAY_NAME_BYTES);
            }
            prop_assert_eq!(truncate_display_name(cut), cut);
        }

        #[test]
        fn games_digest_ignores_order_and_duplicates(
            games in proptest::collection::vec(summary(), 0..6),
            seed in any::<u64>(),
        ) {
            let mut shuffled = games.clone();
            // A seeded Fisher-Yates: no RNG crate needed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            shuffled.extend(games.first().cloned());
            prop_assert_eq!(games_digest(&games), games_digest(&shuffled));
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut big = (MAX_REQUEST_FRAME + 1).to_be_bytes().to_vec();
        big.push(2);
        assert_eq!(
            Request::decode(&big),
            Err(DecodeError::TooLarge {
                len: MAX_REQUEST_FRAME + 1,
                max: MAX_REQUEST_FRAME
            })
        );
        assert_eq!(
            Request::decode(&[0, 0, 0, 1, 200]),
            Err(DecodeError::UnknownKind(200))
        );
        assert_eq!(Request::decode(&[0, 0, 0, 0]), Err(DecodeError::Empty));
        // ListGames with a trailing byte.
        assert!(matches!(
            Request::decode(&[0, 0, 0, 2, 2, 7]),
            Err(DecodeError::Malformed { .. })
        ));
        let too_many = Request::GetPieces {
            version_id: Hash([0; 32]),
            pieces: (0..=MAX_PIECES_PER_REQUEST as u32).collect(),
        };
        assert!(matches!(
            Request::decode(&too_many.encode()),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
