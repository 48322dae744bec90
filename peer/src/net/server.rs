//! The QUIC server service: accepts connections, checks the handshake, and
//! answers one request per bidirectional stream. It serves only files listed
//! in its own manifests, addressed by piece index; no path from the network
//! is ever opened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lanspread_proto::wire::{ErrorCode, Hello, Request, Response};
use lanspread_proto::{Hash, Layout, PROTOCOL_VERSION};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::close_code;
use super::framing::{read_frame, FrameError};
use super::identity::{Identity, PeerId};
use super::limiter::{UploadLimiter, CHUNK};
use super::tls::{party_proof, remote_peer_id, Role};
use crate::events::Source;
use crate::fsx;
use crate::library::LocalGame;
use crate::offer::Offer;
use crate::peers::PeerDirectory;
use crate::supervisor::ServiceContext;
use crate::tasks::RuntimeTasks;

/// Connections one peer may hold to us at once (a downloader needs one; a
/// few more tolerate reconnect races).
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// `GetPieces` streams of one peer served at once; more wait their turn, so
/// one greedy peer cannot take every upload slot of a host.
pub const MAX_UPLOADS_PER_PEER: usize = 4;
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
    uploads: Mutex<HashMap<PeerId, Arc<Semaphore>>>,
    buffers: Arc<BufferPool>,
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
            uploads: Mutex::default(),
            buffers: Arc::default(),
        }
    }

    /// Our `Hello`, with a party proof bound to `connection` when keyed.
    pub fn hello(&self, connection: &Connection, role: Role) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            peer_id: self.identity.peer_id().to_string(),
            display_name: self.display_name.clone(),
            library_digest: self.offer.digest(),
            party_proof: self
                .party_key
                .as_ref()
                .and_then(|key| party_proof(connection, key, role)),
            listen_port: self.listen_port,
        }
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

    fn upload_slots(&self, peer: &PeerId) -> Arc<Semaphore> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads
            .entry(peer.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_UPLOADS_PER_PEER)))
            .clone()
    }
}

/// Frees a connection slot on every exit path.
struct ConnectionSlot {
    state: Arc<ServerState>,
    peer: PeerId,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut connections = self
            .state
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = connections.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                connections.remove(&self.peer);
            }
        }
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
                        token
                            .run_until_cancelled(serve_connection(incoming, state, inner, blocking))
                            .await;
                    });
                    runtime_tasks.spawn(name, serve);
                }
                None => break Err(anyhow::anyhow!("the QUIC endpoint stopped accepting")),
            },
        }
    };
    endpoint.close(VarInt::from_u32(close_code::SHUTDOWN), b"shutting down");
    tasks.close();
    tasks.wait().await;
    result
}

async fn serve_connection(
    incoming: quinn::Incoming,
    state: Arc<ServerState>,
    tasks: TaskTracker,
    blocking: RuntimeTasks,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%remote, "incoming connection failed: {e}");
            return;
        }
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
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&connection, &peer, &state)).await {
        Ok(Ok(listen_port)) => {
            // Dial back: we learn its games, and can tell others about it.
            // Port 0: a client that serves nothing (a script, a benchmark).
            if listen_port != 0 {
                let addr = std::net::SocketAddr::new(remote.ip(), listen_port);
                state
                    .directory
                    .add_candidate(addr, Some(peer.clone()), Source::Incoming);
            }
        }
        Ok(Err((code, reason))) => return close(code, &reason),
        Err(_) => return close(close_code::HANDSHAKE_FAILED, "handshake timed out"),
    }
    tracing::debug!(%remote, %peer, "peer connected");
    while let Ok((send, recv)) = connection.accept_bi().await {
        let (connection, peer, state) = (connection.clone(), peer.clone(), state.clone());
        tasks.spawn(serve_stream(
            connection,
            peer,
            send,
            recv,
            state,
            blocking.clone(),
        ));
    }
}

async fn handshake(
    connection: &Connection,
    peer: &PeerId,
    state: &ServerState,
) -> Result<u16, (u32, String)> {
    let violation = |e: String| (close_code::PROTOCOL_VIOLATION, e);
    let (mut send, mut recv) = connection
        .accept_bi()
        .await
        .map_err(|e| violation(e.to_string()))?;
    let request = read_frame(&mut recv, Request::decode)
        .await
        .map_err(|e| violation(format!("bad handshake: {e}")))?;
    let refuse = |code: ErrorCode, close: u32, message: String| {
        let frame = Response::Error {
            code,
            message: message.clone(),
        }
        .encode();
        (frame, (close, message))
    };
    let listen_port = match &request {
        Request::Hello(hello) => hello.listen_port,
        _ => 0,
    };
    let refusal = match request {
        Request::Hello(hello) if hello.protocol_version != PROTOCOL_VERSION => Some(refuse(
            ErrorCode::IncompatibleVersion,
            close_code::INCOMPATIBLE_VERSION,
            format!(
                "protocol {} is not ours ({PROTOCOL_VERSION})",
                hello.protocol_version
            ),
        )),
        Request::Hello(hello) if PeerId::parse(&hello.peer_id).as_ref() != Some(peer) => {
            Some(refuse(
                ErrorCode::BadRequest,
                close_code::HANDSHAKE_FAILED,
                "the peer id in Hello is not the certificate's".into(),
            ))
        }
        Request::Hello(hello) => {
            let refused = state.party_key.as_ref().is_some_and(|key| {
                let expected = party_proof(connection, key, Role::Client);
                !super::tls::party_proof_accepted(expected, hello.party_proof)
            });
            if refused {
                Some(refuse(
                    ErrorCode::PartyKey,
                    close_code::PARTY_KEY,
                    "party key missing or wrong".into(),
                ))
            } else {
                None
            }
        }
        _ => Some(refuse(
            ErrorCode::HandshakeRequired,
            close_code::HANDSHAKE_FAILED,
            "the first request must be Hello".into(),
        )),
    };
    if let Some((frame, close)) = refusal {
        let _ = send.write_all(&frame).await;
        let _ = send.finish();
        return Err(close);
    }
    let reply = Response::Hello(state.hello(connection, Role::Server)).encode();
    send.write_all(&reply)
        .await
        .map_err(|e| violation(e.to_string()))?;
    let _ = send.finish();
    Ok(listen_port)
}

// Long on purpose: one match arm per request kind, each a few lines;
// the protocol's server side reads as one table.
async fn serve_stream(
    connection: Connection,
    peer: PeerId,
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
    let outcome = match request {
        Request::Hello(_) => {
            reply_error(
                &mut send,
                ErrorCode::BadRequest,
                "already said hello".into(),
            )
            .await
        }
        Request::ListGames => reply(&mut send, Response::Games(state.offer.summaries())).await,
        Request::GetManifest { version_id } => match state.offer.served(&version_id) {
            Some(served) => {
                let manifest = (*served.game().manifest).clone();
                reply(&mut send, Response::Manifest(Box::new(manifest))).await
            }
            None => reply_unknown_version(&mut send, &version_id).await,
        },
        Request::GetPieces { version_id, pieces } => {
            send_pieces(&mut send, &peer, &state, &blocking, version_id, pieces).await
        }
        Request::GetThumbnail { hash } => {
            let thumbnail = state.offer.thumbnail(&hash);
            match thumbnail {
                Some(t) => {
                    let response = Response::Thumbnail {
                        mime: t.mime.to_owned(),
                        bytes: (*t.bytes).clone(),
                    };
                    reply(&mut send, response).await
                }
                None => {
                    reply_error(&mut send, ErrorCode::NotFound, "no such thumbnail".into()).await
                }
            }
        }
        Request::GetHaveSet { version_id } => match state.offer.served(&version_id) {
            Some(served) => {
                let have = served.have_set();
                let fetching = served.fetching_set();
                let response = Response::HaveSet {
                    n_pieces: have.len() as u32,
                    bits: have.bits().to_vec(),
                    fetching: fetching.bits().to_vec(),
                };
                reply(&mut send, response).await
            }
            None => reply_unknown_version(&mut send, &version_id).await,
        },
        Request::LibraryChanged { library_digest } => {
            tracing::debug!(%peer, %library_digest, "peer library changed");
            state.directory.library_changed(&peer, &library_digest);
            reply(&mut send, Response::Ok).await
        }
        Request::Goodbye => {
            state.directory.goodbye_from(&peer);
            let _ = reply(&mut send, Response::Ok).await;
            connection.close(VarInt::from_u32(close_code::GOODBYE), b"goodbye");
            Ok(())
        }
        Request::Ping { nonce } => reply(&mut send, Response::Pong { nonce }).await,
        Request::GetPeers => {
            let mut peers = state.directory.exchange_list();
            peers.truncate(lanspread_proto::wire::MAX_EXCHANGED_PEERS);
            reply(&mut send, Response::Peers(peers)).await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(%peer, "stream ended early: {e}");
    }
}

async fn reply(send: &mut SendStream, response: Response) -> Result<(), quinn::WriteError> {
    send.write_all(&response.encode()).await?;
    let _ = send.finish();
    Ok(())
}

async fn reply_error(
    send: &mut SendStream,
    code: ErrorCode,
    message: String,
) -> Result<(), quinn::WriteError> {
    reply(send, Response::Error { code, message }).await
}

async fn reply_unknown_version(
    send: &mut SendStream,
    version_id: &Hash,
) -> Result<(), quinn::WriteError> {
    reply_error(
        send,
        ErrorCode::NotFound,
        format!("no version {version_id}"),
    )
    .await
}

// Long on purpose: checks, then one send loop that reads the next piece
// while this one is on the wire; splitting would pass the pipeline around.
async fn send_pieces(
    send: &mut SendStream,
    peer: &PeerId,
    state: &ServerState,
    blocking: &RuntimeTasks,
    version_id: Hash,
    pieces: Vec<u32>,
) -> Result<(), quinn::WriteError> {
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
    let slots = state.upload_slots(peer);
    let Ok(_permit) = slots.acquire_owned().await else {
        return Ok(());
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
        send.write_all(&header.encode()).await?;
        if state.limiter.rate() == 0 {
            send.write_chunk(data).await?;
        } else {
            let mut at = 0;
            while at < data.len() {
                let end = (at + CHUNK).min(data.len());
                state.limiter.acquire(end - at).await;
                send.write_chunk(data.slice(at..end)).await?;
                at = end;
            }
        }
    }
    let _ = send.finish();
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
    for span in layout.piece_spans(piece_idx) {
        let entry = &game.manifest.files[span.file_idx];
        let indexed = game.identities.as_ref().map(|ids| ids[span.file_idx]);
        let file = fsx::open_below(&game.root, &entry.path, entry.size, indexed)?;
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

/// Buffers kept for reuse; beyond this they are freed (64 x 1 MiB).
const POOLED_BUFFERS: usize = 64;

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
        if free.len() < POOLED_BUFFERS {
            free.push(std::mem::take(&mut self.0));
        }
    }
}
