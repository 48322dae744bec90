//! The client side: connect to a peer, check who it is, and make requests.

use std::net::SocketAddr;
use std::sync::Arc;

use lanspread_proto::manifest::MAX_PIECE_SIZE;
use lanspread_proto::wire::{ErrorCode, Hello, Request, Response};
use lanspread_proto::{Hash, Layout, PROTOCOL_VERSION};
use quinn::{Connection, ConnectionError, Endpoint, VarInt};

use super::close_code;
use super::framing::{read_exact, read_frame, FrameError};
use super::identity::{Identity, PeerId};
use super::tls::{
    client_config, party_confirmation_accepted, PartyExchange, Role, SeenServer, SERVER_NAME,
};

/// Why a connection could not be made; each variant is something the UI can
/// say plainly.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{addr} is peer {actual}, not the expected {expected}; it may be another machine now")]
    WrongPeer {
        addr: SocketAddr,
        expected: PeerId,
        actual: PeerId,
    },
    #[error("{addr} refused us: the party key is missing or wrong")]
    PartyKeyRefused { addr: SocketAddr },
    #[error("{addr} is not in our party: it did not prove our party key (it has another or none)")]
    NotInParty { addr: SocketAddr },
    #[error("{addr} speaks another lanspread protocol version")]
    IncompatibleVersion { addr: SocketAddr },
    #[error("cannot connect to {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("handshake with {addr} failed: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the peer answered {code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("connection lost: {0}")]
    Connection(#[from] ConnectionError),
    #[error("sending failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A piece header announced another length than the manifest gives
    /// that piece: checked before a byte of it is buffered.
    #[error("the peer announced piece {piece_idx} as {len} bytes; the manifest says {expected}")]
    WrongPieceLength {
        piece_idx: u32,
        len: u32,
        expected: u64,
    },
}

/// An open, handshaken connection to a peer.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    pub connection: Connection,
    pub peer_id: PeerId,
    /// Boxed: a connection is moved around a lot, its `Hello` rarely read.
    pub hello: Box<Hello>,
}

/// Our side of the handshake.
pub struct ClientHello<'a> {
    pub identity: &'a Identity,
    pub display_name: String,
    pub library_digest: Hash,
    /// Our record's version (`Hello::record_version`).
    pub record_version: u64,
    pub party_key: Option<[u8; 32]>,
    /// The port our own server listens on.
    pub listen_port: u16,
}

/// Connect to `addr`; when `expected` is given the peer must prove that id.
// Long on purpose: the handshake's steps in the order they happen (TLS,
// Hello, identity and party checks); each failure maps to one ConnectError.
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    expected: Option<PeerId>,
    ours: ClientHello<'_>,
) -> Result<PeerConnection, ConnectError> {
    let seen = Arc::new(SeenServer::default());
    let config = client_config(ours.identity, expected.clone(), seen.clone()).map_err(|e| {
        ConnectError::Unreachable {
            addr,
            reason: e.to_string(),
        }
    })?;
    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| ConnectError::Unreachable {
            addr,
            reason: e.to_string(),
        })?;
    let connection = match connecting.await {
        Ok(c) => c,
        Err(e) => {
            let actual = seen
                .peer_id
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return Err(match (expected, actual) {
                (Some(expected), Some(actual)) if expected != actual => ConnectError::WrongPeer {
                    addr,
                    expected,
                    actual,
                },
                _ => ConnectError::Unreachable {
                    addr,
                    reason: e.to_string(),
                },
            });
        }
    };
    let peer_id = seen
        .peer_id
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| ConnectError::Handshake {
            addr,
            reason: "no certificate".into(),
        })?;

    let handshake_error = |reason: String| ConnectError::Handshake { addr, reason };
    // Keyed: our half of the party key exchange goes in Hello.
    let (party, party_message) = match &ours.party_key {
        Some(key) => {
            let (exchange, message) = PartyExchange::start(&connection, key, Role::Client)
                .ok_or_else(|| handshake_error("the session exports no keying material".into()))?;
            (Some(exchange), Some(message))
        }
        None => (None, None),
    };
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        peer_id: ours.identity.peer_id().to_string(),
        display_name: ours.display_name,
        library_digest: ours.library_digest,
        party_message,
        party_confirmation: None,
        listen_port: ours.listen_port,
        record_version: ours.record_version,
    };
    let theirs = match request(&connection, &Request::Hello(hello)).await {
        Ok(Response::Hello(theirs)) => theirs,
        Ok(other) => return Err(handshake_error(format!("answered {other:?}"))),
        Err(e) => return Err(refused(addr, e)),
    };
    if PeerId::parse(&theirs.peer_id).as_ref() != Some(&peer_id) {
        connection.close(
            VarInt::from_u32(close_code::HANDSHAKE_FAILED),
            b"peer id mismatch",
        );
        return Err(handshake_error("its Hello names another peer id".into()));
    }
    if let Some(party) = party {
        // The server must confirm first; only then do we send ours, so a
        // server without the key gets nothing derived from it.
        let confirmations = theirs
            .party_message
            .as_deref()
            .and_then(|message| party.finish(message))
            .filter(|c| party_confirmation_accepted(Some(c.expected), theirs.party_confirmation));
        let Some(confirmations) = confirmations else {
            connection.close(VarInt::from_u32(close_code::PARTY_KEY), b"not in our party");
            return Err(ConnectError::NotInParty { addr });
        };
        let confirm = Request::PartyConfirm {
            confirmation: confirmations.ours,
        };
        match request(&connection, &confirm).await {
            Ok(Response::Ok) => {}
            Ok(other) => return Err(handshake_error(format!("answered {other:?}"))),
            Err(e) => return Err(refused(addr, e)),
        }
    }
    Ok(PeerConnection {
        connection,
        peer_id,
        hello: Box::new(theirs),
    })
}

/// What a refused handshake request means to the user.
fn refused(addr: SocketAddr, error: RequestError) -> ConnectError {
    match error {
        RequestError::Remote { code, message } => match code {
            ErrorCode::PartyKey => ConnectError::PartyKeyRefused { addr },
            ErrorCode::IncompatibleVersion => ConnectError::IncompatibleVersion { addr },
            _ => ConnectError::Handshake {
                addr,
                reason: message,
            },
        },
        RequestError::Connection(ConnectionError::ApplicationClosed(close)) => {
            match close.error_code.into_inner() as u32 {
                close_code::PARTY_KEY => ConnectError::PartyKeyRefused { addr },
                close_code::INCOMPATIBLE_VERSION => ConnectError::IncompatibleVersion { addr },
                _ => ConnectError::Handshake {
                    addr,
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                },
            }
        }
        e => ConnectError::Handshake {
            addr,
            reason: e.to_string(),
        },
    }
}

/// One request on a new stream; returns its one response frame. An `Error`
/// response becomes `RequestError::Remote`.
pub async fn request(connection: &Connection, request: &Request) -> Result<Response, RequestError> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&request.encode()).await?;
    let _ = send.finish();
    match read_frame(&mut recv, Response::decode).await {
        Ok(Response::Error { code, message }) => Err(RequestError::Remote { code, message }),
        Ok(response) => Ok(response),
        Err(FrameError::Read(quinn::ReadError::ConnectionLost(e))) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

impl PeerConnection {
    pub async fn request(&self, req: &Request) -> Result<Response, RequestError> {
        request(&self.connection, req).await
    }

    /// Fetch `pieces` of a version on one stream; `on_piece(idx, bytes)` is
    /// called as each arrives, in the order asked.
    pub async fn get_pieces(
        &self,
        version_id: Hash,
        pieces: Vec<u32>,
        mut on_piece: impl FnMut(u32, Vec<u8>),
    ) -> Result<(), RequestError> {
        let (mut send, mut recv) = self.connection.open_bi().await?;
        let expected = pieces.clone();
        send.write_all(&Request::GetPieces { version_id, pieces }.encode())
            .await?;
        let _ = send.finish();
        // Without the manifest at hand, no piece is longer than the largest
        // piece size any manifest may have.
        for want in expected {
            let data = read_piece(&mut recv, want, None, Vec::new()).await?;
            on_piece(want, data);
        }
        Ok(())
    }

    /// Follow which pieces of a version the peer has: the frames of a
    /// `WatchHaveSet`, one by one (see [`HaveSetWatch::next`]).
    pub async fn watch_have_set(&self, version_id: Hash) -> Result<HaveSetWatch, RequestError> {
        let (mut send, recv) = self.connection.open_bi().await?;
        send.write_all(&Request::WatchHaveSet { version_id }.encode())
            .await?;
        let _ = send.finish();
        Ok(HaveSetWatch { recv })
    }

    /// Ask for `pieces` of the version laid out as `layout` on a new stream;
    /// read them one by one from the returned reader, in the order asked.
    /// Each piece must have the length `layout` gives it.
    pub async fn request_pieces(
        &self,
        version_id: Hash,
        layout: &Layout,
        pieces: Vec<u32>,
    ) -> Result<PieceReader, RequestError> {
        let expected = pieces
            .iter()
            .map(|&p| {
                let len = ((p as usize) < layout.n_pieces()).then(|| layout.piece_len(p as usize));
                (p, len.unwrap_or(0))
            })
            .collect::<Vec<_>>();
        let (mut send, recv) = self.connection.open_bi().await?;
        let request = Request::GetPieces {
            version_id,
            pieces: pieces.clone(),
        };
        send.write_all(&request.encode()).await?;
        let _ = send.finish();
        Ok(PieceReader {
            recv,
            expected: expected.into_iter(),
        })
    }

    /// Tell the peer we are leaving, then close.
    pub async fn goodbye(&self) {
        let _ = self.request(&Request::Goodbye).await;
        self.connection
            .close(VarInt::from_u32(close_code::GOODBYE), b"goodbye");
    }
}

/// The answer to one `WatchHaveSet`; dropping it ends the watch.
pub struct HaveSetWatch {
    recv: quinn::RecvStream,
}

impl HaveSetWatch {
    /// The next frame (`HaveSet` or `HaveChanges`, as the server sends
    /// them), or `None` once the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<Response>, RequestError> {
        match read_frame(&mut self.recv, Response::decode).await {
            Ok(Response::Error { code, message }) => Err(RequestError::Remote { code, message }),
            Ok(response) => Ok(Some(response)),
            Err(FrameError::Eof) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Memory a piece is read into: a `Vec<u8>`, or a buffer laid out for
/// writing it to disk (the downloader's aligned buffers).
pub trait PieceBuffer {
    /// Its first `len` bytes, to be filled (what they hold before is
    /// unspecified, never uninitialised memory).
    fn sized(&mut self, len: usize) -> &mut [u8];
}

impl PieceBuffer for Vec<u8> {
    fn sized(&mut self, len: usize) -> &mut [u8] {
        self.resize(len, 0);
        self
    }
}

/// The answer to one `GetPieces`, piece by piece.
pub struct PieceReader {
    recv: quinn::RecvStream,
    /// The pieces still to come, each with its length from the manifest.
    expected: std::vec::IntoIter<(u32, u64)>,
}

impl PieceReader {
    /// The next piece, or `None` once every piece asked for arrived.
    pub async fn next(&mut self) -> Result<Option<(u32, Vec<u8>)>, RequestError> {
        self.next_into(Vec::new()).await
    }

    /// [`Self::next`] into `buf`, a buffer used before (its capacity is
    /// reused; only bytes it never had are zeroed first).
    pub async fn next_into<B: PieceBuffer>(
        &mut self,
        buf: B,
    ) -> Result<Option<(u32, B)>, RequestError> {
        let Some((want, len)) = self.expected.next() else {
            return Ok(None);
        };
        let data = read_piece(&mut self.recv, want, Some(len), buf).await?;
        Ok(Some((want, data)))
    }
}

/// One piece from `recv`: its header, then its bytes. The header's length is
/// checked before the buffer is made: it must be `expected` when the
/// manifest is at hand, and at most [`MAX_PIECE_SIZE`] always. Without this
/// a header claiming 4 GiB reserved 4 GiB.
async fn read_piece<B: PieceBuffer>(
    recv: &mut quinn::RecvStream,
    want: u32,
    expected: Option<u64>,
    mut data: B,
) -> Result<B, RequestError> {
    match read_frame(recv, Response::decode).await? {
        Response::Piece { piece_idx, len } if piece_idx == want => {
            let expected_len = expected.unwrap_or(len as u64);
            if len as u64 != expected_len || len > MAX_PIECE_SIZE {
                return Err(RequestError::WrongPieceLength {
                    piece_idx,
                    len,
                    expected: expected.unwrap_or(MAX_PIECE_SIZE as u64),
                });
            }
            read_exact(recv, data.sized(len as usize)).await?;
            Ok(data)
        }
        Response::Error { code, message } => Err(RequestError::Remote { code, message }),
        other => Err(RequestError::Unexpected(format!("{other:?}"))),
    }
}
