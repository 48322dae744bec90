//! The QUIC server service: accepts connections, checks the handshake, and
//! answers one request per bidirectional stream. It serves only files listed
//! in its own manifests, addressed by piece index; no path from the network
//! is ever opened.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lanspread_proto::manifest::piece_range;
use lanspread_proto::wire::{ErrorCode, Hello, Request, Response, WATCH_GAP_MS};
use lanspread_proto::{Hash, Layout, PieceSet, PROTOCOL_VERSION};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::close_code;
use super::framing::{read_frame, FrameError};
use super::identity::{Identity, PeerId};
use super::limiter::{UploadLimiter, CHUNK};
use super::tls::{party_confirmation_accepted, remote_peer_id, PartyExchange, Role};
use super::turns::{Size, Turns, TURN_WAIT};
use crate::events::Source;
use crate::fsx;
use crate::library::LocalGame;
use crate::offer::Offer;
use crate::peers::PeerDirectory;
use crate::supervisor::ServiceContext;
use crate::tasks::RuntimeTasks;

/// Connections one peer may hold to us at once (a downloader needs one, two
/// when we are a fast source; the rest tolerate reconnect races).
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// Connections (handshaking or open) from one IP address, whatever ids they
/// claim: ids cost nothing, a machine is one source. One peer per machine
/// needs a few; several peers on one host (tests, a host's CLI next to its
/// app) stay well below.
pub const MAX_CONNECTIONS_PER_IP: usize = 32;
/// Connections (handshaking or open) in all: two per peer of a 500-peer
/// party, with room to spare. Beyond it new connections are refused before
/// their handshake.
pub const MAX_CONNECTIONS: usize = 1024;
/// `GetPieces` streams of one machine (IP address) served at once, so one
/// machine cannot take every upload of a host, however many ids or
/// connections it uses. Which machines are served: [`super::turns`].
pub const MAX_UPLOADS_PER_IP: usize = 4;
/// `GetPieces` streams served at once in all. Each holds at most two pieces
/// (one on the wire, the next being read), so piece memory is bounded by
/// `2 * MAX_UPLOADS * piece size` (64 MiB at 1 MiB pieces).
pub const MAX_UPLOADS: usize = 32;
/// `WatchHaveSet` streams of one machine (IP address) open at once. Each
/// is a task that wakes with its download's changes; a downloader needs one
/// per download, per source. More are answered `Busy`.
pub const MAX_WATCHES_PER_IP: usize = 16;
/// A stream whose reader takes no byte of our answer for this long is
/// reset: a reader that stops reading holds no buffers for long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A have-set watcher gets at most one frame per this long.
const WATCH_GAP: Duration = Duration::from_millis(WATCH_GAP_MS);
/// A watched download that did not change for this long is looked for again
/// in the offer (it may have been withdrawn).
const WATCH_LOOK: Duration = Duration::from_secs(1);
/// Writes are made in slices of this size, each within [`WRITE_TIMEOUT`].
const WRITE_SLICE: usize = 64 << 10;
/// Encoded `Games`, `Manifest` and `Thumbnail` answers kept, shared by every
/// stream that sends them: one copy per answer, not one per stream.
pub const CACHED_FRAMES: usize = 256;
/// A new connection must complete the `Hello` exchange within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request frame must arrive within this after its stream opened.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server needs, shared by every connection.
pub struct ServerState {
    pub identity: Arc<Identity>,
    pub display_name: String,
    /// Complete games and downloads in progress: all we serve.
    pub offer: Arc<Offer>,
    pub party_key: Option<[u8; 32]>,
    pub limiter: Arc<UploadLimiter>,
    pub directory: Arc<PeerDirectory>,
    pub listen_port: u16,
    /// Piece bytes sent, ever (tests count re-fetches by it).
    pub bytes_served: std::sync::atomic::AtomicU64,
    // std Mutexes: a map lookup under each, never an await.
    connections: Mutex<HashMap<PeerId, usize>>,
    /// Connections per source IP, entries removed at zero; their sum is all
    /// connections.
    sources: Mutex<HashMap<IpAddr, usize>>,
    /// Have-set watches per source IP, entries removed at zero.
    watches: Mutex<HashMap<IpAddr, usize>>,
    /// Whose pieces are sent now.
    turns: Arc<Turns>,
    buffers: Arc<BufferPool>,
    frames: FrameCache,
}

impl ServerState {
    pub fn new(
        identity: Arc<Identity>,
        display_name: String,
        offer: Arc<Offer>,
        party_key: Option<[u8; 32]>,
        limiter: Arc<UploadLimiter>,
        directory: Arc<PeerDirectory>,
        listen_port: u16,
    ) -> Self {
        Self {
            identity,
            display_name,
            offer,
            party_key,
            limiter,
            directory,
            listen_port,
            bytes_served: Default::default(),
            connections: Mutex::default(),
            sources: Mutex::default(),
            watches: Mutex::default(),
            turns: Arc::new(Turns::new(MAX_UPLOADS_PER_IP, MAX_UPLOADS)),
            buffers: Arc::default(),
            frames: FrameCache::default(),
        }
    }

    /// Our `Hello`, without the party key exchange (the handshake adds it).
    pub fn hello(&self) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            peer_id: self.identity.peer_id().to_string(),
            display_name: self.display_name.clone(),
            library_digest: self.offer.digest(),
            party_message: None,
            party_confirmation: None,
            listen_port: self.listen_port,
            record_version: self.directory.own().version,
        }
    }

    /// Connections `peer` holds to us now (handshaking or open).
    pub fn connections_from(&self, peer: &PeerId) -> usize {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.get(peer).copied().unwrap_or(0)
    }

    /// The same state, announcing `port` as our listen port in `Hello`.
    pub fn with_listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    fn connection_slot(self: &Arc<Self>, peer: &PeerId) -> Option<ConnectionSlot> {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let count = connections.entry(peer.clone()).or_default();
        if *count >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            state: self.clone(),
            peer: peer.clone(),
        })
    }

    /// A place for a connection from `ip`, within [`MAX_CONNECTIONS`] and
    /// [`MAX_CONNECTIONS_PER_IP`].
    fn source_slot(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = sources.values().sum();
        let count = sources.get(&ip).copied().unwrap_or(0);
        if total >= MAX_CONNECTIONS || count >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        sources.insert(ip, count + 1);
        Some(SourceSlot {
            state: self.clone(),
            ip,
        })
    }
}

/// A place for a have-set watch from `ip`, within [`MAX_WATCHES_PER_IP`];
/// given back on drop.
struct WatchSlot<'a> {
    state: &'a ServerState,
    ip: IpAddr,
}

impl<'a> WatchSlot<'a> {
    fn take(state: &'a ServerState, ip: IpAddr) -> Option<Self> {
        let mut watches = state.watches.lock().unwrap_or_else(|e| e.into_inner());
        let count = watches.get(&ip).copied().unwrap_or(0);
        if count >= MAX_WATCHES_PER_IP {
            return None;
        }
        watches.insert(ip, count + 1);
        Some(Self { state, ip })
    }
}

impl Drop for WatchSlot<'_> {
    fn drop(&mut self) {
        count_down(&self.state.watches, &self.ip);
    }
}

/// One less of `key` in `counts`; an entry is removed at zero.
fn count_down<K: std::hash::Hash + Eq>(counts: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Frees a source's connection place on every exit path.
struct SourceSlot {
    state: Arc<ServerState>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        count_down(&self.state.sources, &self.ip);
    }
}

/// Frees a connection slot on every exit path.
struct ConnectionSlot {
    state: Arc<ServerState>,
    peer: PeerId,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        count_down(&self.state.connections, &self.peer);
    }
}

/// The service body: accept until cancelled, then close the endpoint and
/// wait for every connection task.
pub async fn run(
    ctx: ServiceContext,
    endpoint: Endpoint,
    state: Arc<ServerState>,
    runtime_tasks: RuntimeTasks,
) -> anyhow::Result<()> {
    // This run's connections, also tracked (and named) by the runtime.
    let tasks = TaskTracker::new();
    let result = loop {
        tokio::select! {
            biased;
            _ = ctx.token().cancelled() => break Ok(()),
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    ctx.heartbeat();
                    let token = ctx.token().clone();
                    let name = format!("connection from {}", incoming.remote_address());
                    let (state, inner, blocking) = (state.clone(), tasks.clone(), runtime_tasks.clone());
                    let serve = tasks.track_future(async move {
                        let leaving = token.clone();
                        token
                            .run_until_cancelled(serve_connection(incoming, state, inner, blocking, leaving))
                            .await;
                    });
                    runtime_tasks.spawn(name, serve);
                }
                None => break Err(anyhow::anyhow!("the QUIC endpoint stopped accepting")),
            },
        }
    };
    endpoint.close(VarInt::from_u32(close_code::GOODBYE), b"shutting down");
    tasks.close();
    tasks.wait().await;
    result
}

async fn serve_connection(
    incoming: quinn::Incoming,
    state: Arc<ServerState>,
    tasks: TaskTracker,
    blocking: RuntimeTasks,
    leaving: CancellationToken,
) {
    let remote = incoming.remote_address();
    let Some(_source) = state.source_slot(remote.ip().to_canonical()) else {
        tracing::debug!(%remote, "refused: too many connections");
        incoming.refuse();
        return;
    };
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%remote, "incoming connection failed: {e}");
            return;
        }
    };
    let _goodbye = GoodbyeOnShutdown {
        connection: connection.clone(),
        leaving,
    };
    let close = |code: u32, reason: &str| {
        tracing::info!(%remote, code, "closing connection: {reason}");
        connection.close(VarInt::from_u32(code), reason.as_bytes());
    };
    let Some(peer) = remote_peer_id(&connection) else {
        close(close_code::HANDSHAKE_FAILED, "no usable certificate");
        return;
    };
    let Some(_slot) = state.connection_slot(&peer) else {
        close(
            close_code::TOO_MANY_CONNECTIONS,
            "too many connections from this peer",
        );
        return;
    };
    let listen = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&connection, &peer, &state),
    )
    .await
    {
        Ok(Ok(hello)) => {
            // What it says of itself, proven by its certificate: a peer new
            // to us is dialled back (we learn its games, and tell others).
            // Port 0: a client that serves nothing (a script, a benchmark).
            let addr = (hello.listen_port != 0)
                .then(|| std::net::SocketAddr::new(remote.ip(), hello.listen_port));
            state
                .directory
                .hello_from(&peer, addr, hello.record_version, hello.library_digest);
            addr
        }
        Ok(Err((code, reason))) => return close(code, &reason),
        Err(_) => return close(close_code::HANDSHAKE_FAILED, "handshake timed out"),
    };
    tracing::debug!(%remote, %peer, "peer connected");
    while let Ok((send, recv)) = connection.accept_bi().await {
        let (connection, peer, state) = (connection.clone(), peer.clone(), state.clone());
        let source = Requester {
            peer,
            ip: remote.ip().to_canonical(),
            listen,
        };
        tasks.spawn(serve_stream(
            connection,
            source,
            send,
            recv,
            state,
            blocking.clone(),
        ));
    }
    // What the path did over the connection's life: the MTU the sender
    // ended at, loss and black holes (docs/BENCHMARKS.md, "The path MTU,
    // measured").
    let stats = connection.stats();
    tracing::debug!(
        %remote,
        mtu = stats.path.current_mtu,
        black_holes = stats.path.black_holes_detected,
        sent_packets = stats.path.sent_packets,
        lost_packets = stats.path.lost_packets,
        congestion_events = stats.path.congestion_events,
        probes = stats.path.sent_plpmtud_probes,
        lost_probes = stats.path.lost_plpmtud_probes,
        "connection ended"
    );
}

/// Closes a served connection with the goodbye code when the server stops
/// serving it because we are shutting down. Dropped without that, the last
/// handle would close it with code 0, which the client takes for a dead
/// link to check, not for our goodbye (the endpoint's own close comes later).
struct GoodbyeOnShutdown {
    connection: Connection,
    leaving: CancellationToken,
}

impl Drop for GoodbyeOnShutdown {
    fn drop(&mut self) {
        if self.leaving.is_cancelled() {
            self.connection
                .close(VarInt::from_u32(close_code::GOODBYE), b"shutting down");
        }
    }
}

/// The first request must be `Hello`; with a party key, the second must be
/// the client's `PartyConfirm` (docs/PROTOCOL.md "Party key"). Nothing else
/// is served until both passed. Returns the client's listen port.
async fn handshake(
    connection: &Connection,
    peer: &PeerId,
    state: &ServerState,
) -> Result<Hello, (u32, String)> {
    let (mut send, request) = handshake_request(connection).await?;
    let hello = match request {
        Request::Hello(hello) if hello.protocol_version != PROTOCOL_VERSION => Err(refuse(
            ErrorCode::IncompatibleVersion,
            close_code::INCOMPATIBLE_VERSION,
            format!(
                "protocol {} is not ours ({PROTOCOL_VERSION})",
                hello.protocol_version
            ),
        )),
        Request::Hello(hello) if PeerId::parse(&hello.peer_id).as_ref() != Some(peer) => {
            Err(refuse(
                ErrorCode::BadRequest,
                close_code::HANDSHAKE_FAILED,
                "the peer id in Hello is not the certificate's".into(),
            ))
        }
        Request::Hello(hello) => Ok(hello),
        _ => Err(refuse(
            ErrorCode::HandshakeRequired,
            close_code::HANDSHAKE_FAILED,
            "the first request must be Hello".into(),
        )),
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(refusal) => return Err(send_refusal(send, refusal).await),
    };
    let mut reply = state.hello();
    // Keyed: our half of the key exchange and our confirmation, or a
    // refusal when the client sent no (or a malformed) exchange message.
    let mut expected = None;
    if let Some(key) = &state.party_key {
        let finished = hello.party_message.as_deref().and_then(|theirs| {
            let (exchange, ours) = PartyExchange::start(connection, key, Role::Server)?;
            Some((exchange.finish(theirs)?, ours))
        });
        let Some((confirmations, ours)) = finished else {
            let refusal = refuse(
                ErrorCode::PartyKey,
                close_code::PARTY_KEY,
                "party key missing or wrong".into(),
            );
            return Err(send_refusal(send, refusal).await);
        };
        reply.party_message = Some(ours);
        reply.party_confirmation = Some(confirmations.ours);
        expected = Some(confirmations.expected);
    }
    send.write_all(&Response::Hello(reply).encode())
        .await
        .map_err(|e| violation(e.to_string()))?;
    let _ = send.finish();
    if let Some(expected) = expected {
        confirm_party(connection, expected).await?;
    }
    Ok(hello)
}

/// The next stream of a connection still in its handshake, and its one
/// request. A stream that cannot be read is a protocol violation.
async fn handshake_request(
    connection: &Connection,
) -> Result<(SendStream, Request), (u32, String)> {
    let (send, mut recv) = connection
        .accept_bi()
        .await
        .map_err(|e| violation(e.to_string()))?;
    let request = read_frame(&mut recv, Request::decode)
        .await
        .map_err(|e| violation(format!("bad handshake: {e}")))?;
    Ok((send, request))
}

/// The client's key confirmation, on the connection's second stream. A
/// missing or wrong one closes the connection: one guess per connection.
async fn confirm_party(connection: &Connection, expected: Hash) -> Result<(), (u32, String)> {
    let (mut send, request) = handshake_request(connection).await?;
    let received = match request {
        Request::PartyConfirm { confirmation } => Some(confirmation),
        _ => None,
    };
    if !party_confirmation_accepted(Some(expected), received) {
        let refusal = refuse(
            ErrorCode::PartyKey,
            close_code::PARTY_KEY,
            "party key missing or wrong".into(),
        );
        return Err(send_refusal(send, refusal).await);
    }
    send.write_all(&Response::Ok.encode())
        .await
        .map_err(|e| violation(e.to_string()))?;
    let _ = send.finish();
    Ok(())
}

/// How a connection that broke the handshake's rules is closed.
fn violation(reason: String) -> (u32, String) {
    (close_code::PROTOCOL_VIOLATION, reason)
}

/// A refusal: the `Error` frame to send and how to close.
type Refusal = (Vec<u8>, (u32, String));

fn refuse(code: ErrorCode, close: u32, message: String) -> Refusal {
    let frame = Response::Error {
        code,
        message: message.clone(),
    }
    .encode();
    (frame, (close, message))
}

/// Send a refusal's `Error` frame; returns how to close.
async fn send_refusal(mut send: SendStream, (frame, close): Refusal) -> (u32, String) {
    let _ = send.write_all(&frame).await;
    let _ = send.finish();
    close
}

/// Who a stream is from: the peer id its connection proved, and the machine
/// (IP address) it came from, which bounds and fair shares count by.
struct Requester {
    peer: PeerId,
    ip: IpAddr,
    /// Where it listens: its IP and the port its hello gave (`None`: it
    /// serves nothing).
    listen: Option<std::net::SocketAddr>,
}

// Long on purpose: one match arm per request kind, each a few lines;
// the protocol's server side reads as one table.
async fn serve_stream(
    connection: Connection,
    source: Requester,
    mut send: SendStream,
    mut recv: RecvStream,
    state: Arc<ServerState>,
    blocking: RuntimeTasks,
) {
    let request =
        match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut recv, Request::decode)).await {
            Ok(Ok(request)) => request,
            Ok(Err(FrameError::Decode(e))) => {
                let _ = reply_error(&mut send, ErrorCode::BadRequest, e.to_string()).await;
                connection.close(
                    VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
                    format!("malformed request: {e}").as_bytes(),
                );
                return;
            }
            Ok(Err(_)) => return,
            Err(_) => {
                let _ = send.reset(VarInt::from_u32(close_code::REQUEST_TIMEOUT));
                return;
            }
        };
    let peer = &source.peer;
    let outcome = match request {
        Request::Hello(_) | Request::PartyConfirm { .. } => {
            reply_error(
                &mut send,
                ErrorCode::BadRequest,
                "the handshake is already done".into(),
            )
            .await
        }
        Request::ListGames => {
            let games = state.offer.summaries();
            let key = FrameKey::Games(lanspread_proto::wire::games_digest(&games));
            let frame = state.frames.get_or(key, || Response::Games(games));
            reply_frame(&mut send, frame).await
        }
        Request::GetManifest { version_id } => match state.offer.served(&version_id) {
            Some(served) => {
                let frame = state.frames.get_or(FrameKey::Manifest(version_id), || {
                    Response::Manifest(Box::new((*served.game().manifest).clone()))
                });
                reply_frame(&mut send, frame).await
            }
            None => reply_unknown_version(&mut send, &version_id).await,
        },
        Request::GetPieces { version_id, pieces } => {
            send_pieces(&mut send, &source, &state, &blocking, version_id, pieces).await
        }
        Request::GetThumbnail { hash } => match state.offer.thumbnail(&hash) {
            Some(t) => {
                let frame =
                    state
                        .frames
                        .get_or(FrameKey::Thumbnail(hash), || Response::Thumbnail {
                            mime: t.mime.to_owned(),
                            bytes: (*t.bytes).clone(),
                        });
                reply_frame(&mut send, frame).await
            }
            None => reply_error(&mut send, ErrorCode::NotFound, "no such thumbnail".into()).await,
        },
        Request::WatchHaveSet { version_id } => match WatchSlot::take(&state, source.ip) {
            Some(_slot) => watch_have_set(&mut send, &state, version_id).await,
            None => {
                let message = format!("{MAX_WATCHES_PER_IP} have-set watches from your machine");
                reply_error(&mut send, ErrorCode::Busy, message).await
            }
        },
        Request::Gossip(records) => {
            // Its own record carries the address we see it at.
            let from = source.listen.map(|at| (peer, at));
            state.directory.observe(records, from, Source::Exchange);
            reply(&mut send, Response::Ok).await
        }
        Request::Goodbye => {
            state.directory.goodbye_from(peer);
            let _ = reply(&mut send, Response::Ok).await;
            connection.close(VarInt::from_u32(close_code::GOODBYE), b"goodbye");
            Ok(())
        }
        Request::Ping { nonce } => reply(&mut send, Response::Pong { nonce }).await,
        Request::GetPeers { digest } => {
            reply(&mut send, Response::Peers(state.directory.members(&digest))).await
        }
        Request::GetLineup => {
            reply(&mut send, Response::Lineup(state.directory.own_lineup())).await
        }
    };
    match outcome {
        Ok(()) => {}
        Err(WriteFailed::Stalled) => {
            tracing::debug!(%peer, "reader took nothing for {WRITE_TIMEOUT:?}: stream reset");
            let _ = send.reset(VarInt::from_u32(close_code::WRITE_TIMEOUT));
        }
        Err(e) => tracing::debug!(%peer, "stream ended early: {e}"),
    }
}

/// Why an answer was not sent whole.
#[derive(Debug, thiserror::Error)]
enum WriteFailed {
    #[error("{0}")]
    Write(#[from] quinn::WriteError),
    #[error("the reader took nothing for {WRITE_TIMEOUT:?}")]
    Stalled,
}

/// Write `bytes` in slices of [`WRITE_SLICE`], each taken by the reader
/// within [`WRITE_TIMEOUT`]. The slices share `bytes`: nothing is copied.
async fn write_timed(send: &mut SendStream, bytes: Bytes) -> Result<(), WriteFailed> {
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + WRITE_SLICE).min(bytes.len());
        tokio::time::timeout(WRITE_TIMEOUT, send.write_chunk(bytes.slice(at..end)))
            .await
            .map_err(|_| WriteFailed::Stalled)??;
        at = end;
    }
    Ok(())
}

/// Send one encoded frame and finish the stream.
async fn reply_frame(send: &mut SendStream, frame: Bytes) -> Result<(), WriteFailed> {
    write_timed(send, frame).await?;
    let _ = send.finish();
    Ok(())
}

async fn reply(send: &mut SendStream, response: Response) -> Result<(), WriteFailed> {
    let frame = Bytes::from(response.encode());
    drop(response);
    reply_frame(send, frame).await
}

async fn reply_error(
    send: &mut SendStream,
    code: ErrorCode,
    message: String,
) -> Result<(), WriteFailed> {
    reply(send, Response::Error { code, message }).await
}

async fn reply_unknown_version(
    send: &mut SendStream,
    version_id: &Hash,
) -> Result<(), WriteFailed> {
    reply_error(
        send,
        ErrorCode::NotFound,
        format!("no version {version_id}"),
    )
    .await
}

/// What a watcher last got: the pieces present and those being fetched.
type Sent = (PieceSet, PieceSet);

/// Answer a `WatchHaveSet`: the whole set, then each change (at most one
/// frame per [`WATCH_GAP`]), until every piece is here (told, then the
/// stream ends), the version is no longer offered, or the reader goes.
async fn watch_have_set(
    send: &mut SendStream,
    state: &ServerState,
    version_id: Hash,
) -> Result<(), WriteFailed> {
    let Some(mut served) = state.offer.served(&version_id) else {
        return reply_unknown_version(send, &version_id).await;
    };
    let mut sent: Option<Sent> = None;
    let mut told_at: Option<Instant> = None;
    loop {
        let Some(mut changes) = served.changes() else {
            // Complete: nothing will change.
            if let Some(response) = have_changes(sent.as_ref(), &served.sets()) {
                write_timed(send, Bytes::from(response.encode())).await?;
            }
            let _ = send.finish();
            return Ok(());
        };
        // The download's own record, held: its last pieces are told even if
        // it is withdrawn from the offer (to be installed) meanwhile.
        loop {
            changes.borrow_and_update();
            let now = served.sets();
            if let Some(response) = have_changes(sent.as_ref(), &now) {
                write_timed(send, Bytes::from(response.encode())).await?;
                told_at = Some(Instant::now());
            }
            let complete = now.0.count() == now.0.len();
            sent = Some(now);
            if complete {
                let _ = send.finish();
                return Ok(());
            }
            // One frame per gap: changes within it go out together.
            if let Some(at) = told_at {
                tokio::select! {
                    _ = tokio::time::sleep_until(at + WATCH_GAP) => {}
                    _ = send.stopped() => return Ok(()),
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break; // the record is gone
                    }
                }
                // No change for a while: still offered?
                _ = tokio::time::sleep(WATCH_LOOK) => {
                    if !state.offer.serves_same(&version_id, &served) {
                        break;
                    }
                }
                _ = send.stopped() => return Ok(()),
            }
        }
        // Withdrawn: installed (complete), gone, or downloading again (a
        // new record, which may hold fewer pieces: told whole).
        match state.offer.served(&version_id) {
            Some(next) => {
                served = next;
                sent = None;
            }
            None => {
                let _ = send.finish();
                return Ok(());
            }
        }
    }
}

/// What to tell a watcher that got `sent` of `now`: nothing when nothing
/// changed, else the pieces added with what is fetched now, or the whole
/// set where that is shorter.
fn have_changes(sent: Option<&Sent>, now: &Sent) -> Option<Response> {
    let (have, fetching) = now;
    let Some((had, fetched)) = sent else {
        return Some(whole_set(have, fetching));
    };
    if had == have && fetched == fetching {
        return None;
    }
    let changes = Response::HaveChanges {
        have: have
            .iter()
            .filter(|&p| !had.contains(p))
            .map(|p| p as u32)
            .collect(),
        fetching: fetching.iter().map(|p| p as u32).collect(),
    };
    let whole = whole_set(have, fetching);
    Some(if changes.encode().len() <= whole.encode().len() {
        changes
    } else {
        whole
    })
}

fn whole_set(have: &PieceSet, fetching: &PieceSet) -> Response {
    Response::HaveSet {
        n_pieces: have.len() as u32,
        bits: have.bits().to_vec(),
        fetching: fetching.bits().to_vec(),
    }
}

// Long on purpose: checks, then one send loop that reads the next piece
// while this one is on the wire; splitting would pass the pipeline around.
async fn send_pieces(
    send: &mut SendStream,
    source: &Requester,
    state: &Arc<ServerState>,
    blocking: &RuntimeTasks,
    version_id: Hash,
    pieces: Vec<u32>,
) -> Result<(), WriteFailed> {
    let Some(served) = state.offer.served(&version_id) else {
        return reply_unknown_version(send, &version_id).await;
    };
    let n_pieces = served.game().manifest.n_pieces();
    if let Some(bad) = pieces.iter().find(|&&p| p as usize >= n_pieces) {
        let message = format!("piece {bad} is outside 0..{n_pieces}");
        return reply_error(send, ErrorCode::OutOfRange, message).await;
    }
    if let Some(missing) = pieces.iter().find(|&&p| !served.has(p as usize)) {
        let message = format!("piece {missing} is not here yet");
        return reply_error(send, ErrorCode::NotFound, message).await;
    }
    let game = Arc::new(served.game().clone());
    // The request's size, without building the layout a `Busy` answer
    // does not need.
    let lens = pieces.iter().map(|&p| {
        let range = piece_range(game.total_size, game.manifest.piece_size, p as usize);
        range.end - range.start
    });
    let size = Size {
        bytes: lens.clone().sum(),
        piece: lens.max().unwrap_or(0),
    };
    // Wait for a turn (see `turns`); a stream given up by its reader
    // meanwhile takes none.
    let turn = tokio::select! {
        turn = state.turns.take(source.ip, size, TURN_WAIT) => turn,
        _ = send.stopped() => return Ok(()),
    };
    tracing::trace!(ip = %source.ip, pieces = pieces.len(), served = turn.is_some(), "upload turn");
    let Some(turn) = turn else {
        let message = "every upload turn is taken: ask again or elsewhere".to_owned();
        return reply_error(send, ErrorCode::Busy, message).await;
    };
    let layout = Arc::new(game.manifest.layout());
    // Read the next piece on a blocking thread while this one is sent.
    let read = |piece_idx: u32| {
        let (game, layout, buffers) = (game.clone(), layout.clone(), state.buffers.clone());
        blocking.spawn_blocking("read a piece", move || {
            read_piece(&game, &layout, piece_idx as usize, &buffers)
        })
    };
    let mut next = Some(read(pieces[0]));
    for (i, &piece_idx) in pieces.iter().enumerate() {
        let data = match next.take().expect("always set").await {
            Ok(Ok(data)) => data,
            Ok(Err(e)) => {
                tracing::error!(game = %game.id, piece_idx, "cannot read piece: {e}");
                return reply_error(
                    send,
                    ErrorCode::Internal,
                    format!("cannot read piece {piece_idx}"),
                )
                .await;
            }
            Err(e) => {
                return reply_error(
                    send,
                    ErrorCode::Internal,
                    format!("piece reader failed: {e}"),
                )
                .await;
            }
        };
        if let Some(&following) = pieces.get(i + 1) {
            next = Some(read(following));
        }
        let header = Response::Piece {
            piece_idx,
            len: data.len() as u32,
        };
        state
            .bytes_served
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        write_timed(send, Bytes::from(header.encode())).await?;
        if state.limiter.rate() == 0 {
            write_timed(send, data).await?;
        } else {
            let mut at = 0;
            while at < data.len() {
                let end = (at + CHUNK).min(data.len());
                state.limiter.acquire(source.ip, end - at).await;
                write_timed(send, data.slice(at..end)).await?;
                at = end;
            }
        }
    }
    let _ = send.finish();
    // The turn lasts until the reader has the bytes, not only until quinn
    // took them: a connection buffers up to `tls::SEND_WINDOW`, so every
    // requester's piece would be written at once and shared the link alike.
    let acknowledged = tokio::time::timeout(WRITE_TIMEOUT, send.stopped()).await;
    if matches!(acknowledged, Ok(Ok(None))) {
        turn.delivered();
    }
    tracing::trace!(ip = %source.ip, "upload done");
    Ok(())
}

/// Read piece `piece_idx` of `game` from its own files (paths from our manifest).
fn read_piece(
    game: &LocalGame,
    layout: &Layout,
    piece_idx: usize,
    buffers: &Arc<BufferPool>,
) -> std::io::Result<Bytes> {
    let mut buf = buffers.take(layout.piece_len(piece_idx) as usize);
    let mut at = 0usize;
    let mut opener = fsx::BelowOpener::new(&game.root);
    for span in layout.piece_spans(piece_idx) {
        let entry = &game.manifest.files[span.file_idx];
        let indexed = game.identities.as_ref().map(|ids| ids[span.file_idx]);
        let file = opener.open(&entry.path, entry.size, indexed)?;
        let len = span.len as usize;
        fsx::read_exact_at(&file, &mut buf.0[at..at + len], span.offset)?;
        at += len;
    }
    Ok(Bytes::from_owner(buf))
}

/// Piece buffers, reused once quinn has sent (and dropped) the bytes: a fresh
/// zeroed megabyte per piece costs page faults and a memset every time.
#[derive(Default)]
struct BufferPool {
    // A std Mutex: a push or a pop under it, never an await.
    free: Mutex<Vec<Vec<u8>>>,
}

/// Bytes of buffers kept for reuse; beyond this they are freed (64 pieces
/// of 1 MiB, 4 of 16 MiB).
pub const POOLED_BYTES: usize = 64 << 20;

impl BufferPool {
    fn take(self: &Arc<Self>, len: usize) -> PooledBuffer {
        let mut buf = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        // Same-size reuse (the common case) neither zeroes nor reallocates.
        buf.resize(len, 0);
        PooledBuffer(buf, self.clone())
    }
}

struct PooledBuffer(Vec<u8>, Arc<BufferPool>);

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let mut free = self.1.free.lock().unwrap_or_else(|e| e.into_inner());
        let pooled: usize = free.iter().map(Vec::capacity).sum();
        if pooled + self.0.capacity() <= POOLED_BYTES {
            free.push(std::mem::take(&mut self.0));
        }
    }
}

/// What a cached frame answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FrameKey {
    /// `Games`, by the digest of the list.
    Games(Hash),
    Manifest(Hash),
    Thumbnail(Hash),
}

/// Encoded answers shared by every stream that sends them: a thousand
/// streams asking for a 2 MiB picture hold one copy of it, not a thousand.
/// Each key names immutable content (a digest or a hash), so an entry is
/// never stale.
#[derive(Default)]
struct FrameCache {
    // A std Mutex: a lookup or an insert under it, never an await.
    frames: Mutex<HashMap<FrameKey, Bytes>>,
}

impl FrameCache {
    /// The frame for `key`, encoded from `response()` if not held.
    fn get_or(&self, key: FrameKey, response: impl FnOnce() -> Response) -> Bytes {
        if let Some(frame) = self.lock().get(&key) {
            return frame.clone();
        }
        let frame = Bytes::from(response().encode());
        let mut frames = self.lock();
        if frames.len() >= CACHED_FRAMES {
            // Whatever is being sent stays alive with its senders.
            frames.clear();
        }
        frames.insert(key, frame.clone());
        frame
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FrameKey, Bytes>> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(len: usize, pieces: &[usize]) -> PieceSet {
        let mut set = PieceSet::empty(len);
        for &p in pieces {
            set.insert(p);
        }
        set
    }

    /// A watcher gets the whole set first, nothing while nothing changes,
    /// then the pieces added with what is fetched now, or the whole set
    /// again where that is shorter.
    #[test]
    fn a_watcher_is_told_only_what_changed() {
        let first = (set(1000, &[1, 2]), set(1000, &[3]));
        assert!(matches!(
            have_changes(None, &first),
            Some(Response::HaveSet { n_pieces: 1000, .. })
        ));
        assert_eq!(have_changes(Some(&first), &first), None);
        let next = (set(1000, &[1, 2, 3]), set(1000, &[7, 8]));
        assert_eq!(
            have_changes(Some(&first), &next),
            Some(Response::HaveChanges {
                have: vec![3],
                fetching: vec![7, 8],
            })
        );
        let most: Vec<usize> = (0..900).collect();
        let many = (set(1000, &most), set(1000, &[]));
        assert!(
            matches!(
                have_changes(Some(&next), &many),
                Some(Response::HaveSet { .. })
            ),
            "900 pieces at once: the bitmaps are shorter"
        );
    }
}
