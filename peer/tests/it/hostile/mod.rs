//! A hostile peer built from the project's own crates, for the adversarial
//! tests: a server that answers whatever a test scripts (lying games,
//! manifests, piece headers, peer lists), a client that sends whatever it
//! likes to a victim, and an in-memory game to lie about.

// Some attacks run only on Linux (they read /proc or bind 127.0.0.2).
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::net::SocketAddr;
use std::sync::Arc;

use lanspread_peer::net::client::{connect, ClientHello, ConnectError, PeerConnection};
use lanspread_peer::net::identity::{Identity, PeerId};
use lanspread_peer::net::{bind_endpoint, close_code, framing::read_frame, tls};
use lanspread_proto::manifest::{piece_count, piece_size_for, FileEntry, Manifest};
use lanspread_proto::wire::{ErrorCode, GameSummary, Hello, Request, Response};
use lanspread_proto::{Hash, PROTOCOL_VERSION};
use quinn::{Endpoint, SendStream};
use tokio::task::JoinHandle;

mod disk;
#[cfg(target_os = "linux")]
mod exhaust;
// Two machines as two loopback addresses (127.0.0.2, .3): Linux routes all
// of 127/8 to lo; other systems configure only 127.0.0.1.
#[cfg(target_os = "linux")]
mod fair_upload;
mod party_key;
mod peer_table;
#[cfg(target_os = "linux")]
mod piece_length;

/// What the hostile server writes on a stream, in order.
pub enum Answer {
    /// One well-formed response frame.
    Frame(Response),
    /// Any bytes at all: a lying piece body, a malformed frame.
    Raw(Vec<u8>),
    /// `len` bytes of zeros, written in 1 MiB chunks without holding them
    /// all: a flood of body bytes. `ended` is set once they are written or
    /// the reader stopped the stream.
    Junk {
        len: usize,
        ended: Arc<std::sync::atomic::AtomicBool>,
    },
    /// Keep the stream open and write nothing more, ever.
    Hang,
}

type Script = dyn Fn(&Request) -> Vec<Answer> + Send + Sync;

/// A QUIC server with a real identity that answers `Hello` and `Ping`
/// correctly (so victims keep it as a peer) and everything else as its
/// script says. An empty answer is `Error NotFound`.
pub struct HostileServer {
    pub peer_id: PeerId,
    pub addr: SocketAddr,
    endpoint: Endpoint,
    task: JoinHandle<()>,
}

impl HostileServer {
    pub async fn start(script: impl Fn(&Request) -> Vec<Answer> + Send + Sync + 'static) -> Self {
        let identity = Identity::ephemeral();
        let config = tls::server_config(&identity).unwrap();
        let endpoint = bind_endpoint("127.0.0.1:0".parse().unwrap(), Some(config)).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let peer_id = identity.peer_id().clone();
        let script: Arc<Script> = Arc::new(script);
        let (accepting, id) = (endpoint.clone(), peer_id.clone());
        let task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let (script, id) = (script.clone(), id.clone());
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    while let Ok((send, mut recv)) = connection.accept_bi().await {
                        let (script, id) = (script.clone(), id.clone());
                        tokio::spawn(async move {
                            if let Ok(request) = read_frame(&mut recv, Request::decode).await {
                                answer(send, &request, &id, &*script).await;
                            }
                        });
                    }
                });
            }
        });
        Self {
            peer_id,
            addr,
            endpoint,
            task,
        }
    }

    /// Leave the way a peer's endpoint does when it shuts down: every
    /// connection closed with the goodbye code, nothing else said.
    pub fn leave(&self) {
        self.endpoint
            .close(close_code::GOODBYE.into(), b"shutting down");
    }

    /// How a victim is told to dial it: `peer-id@addr`.
    pub fn as_peer(&self) -> String {
        format!("{}@{}", self.peer_id, self.addr)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"done");
        self.task.abort();
    }
}

async fn answer(mut send: SendStream, request: &Request, id: &PeerId, script: &Script) {
    let answers = match request {
        Request::Hello(_) => vec![Answer::Frame(Response::Hello(hello(id)))],
        Request::Ping { nonce } => vec![Answer::Frame(Response::Pong { nonce: *nonce })],
        Request::Gossip(_) | Request::Goodbye => vec![Answer::Frame(Response::Ok)],
        other => match script(other) {
            answers if answers.is_empty() => vec![Answer::Frame(Response::Error {
                code: ErrorCode::NotFound,
                message: "no".into(),
            })],
            answers => answers,
        },
    };
    for answer in answers {
        let bytes = match answer {
            Answer::Frame(response) => response.encode(),
            Answer::Raw(bytes) => bytes,
            Answer::Junk { mut len, ended } => {
                static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
                let mut failed = false;
                while len > 0 && !failed {
                    let n = len.min(ZEROS.len());
                    let chunk = bytes::Bytes::from_static(&ZEROS[..n]);
                    failed = send.write_chunk(chunk).await.is_err();
                    len -= n;
                }
                ended.store(true, std::sync::atomic::Ordering::SeqCst);
                if failed {
                    return;
                }
                continue;
            }
            Answer::Hang => {
                std::future::pending::<()>().await;
                return;
            }
        };
        if send.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    // Let the bytes leave before the stream is dropped.
    let _ = send.stopped().await;
}

/// A well-formed `Hello` for `id`, without a party key.
pub fn hello(id: &PeerId) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        peer_id: id.to_string(),
        display_name: "hostile".into(),
        // Never the digest of an empty list: victims list our games.
        library_digest: Hash([0x66; 32]),
        party_message: None,
        party_confirmation: None,
        listen_port: 0,
        record_version: 1,
    }
}

/// A client with its own fresh identity (ids cost nothing to make).
pub struct HostileClient {
    pub identity: Identity,
    pub endpoint: Endpoint,
}

impl HostileClient {
    pub fn new() -> Self {
        Self {
            identity: Identity::ephemeral(),
            endpoint: bind_endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap(),
        }
    }

    /// Handshake with `addr` like an honest peer would, claiming
    /// `listen_port` as where it serves.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        party_key: Option<&str>,
        listen_port: u16,
    ) -> Result<PeerConnection, ConnectError> {
        connect(
            &self.endpoint,
            addr,
            expected,
            ClientHello {
                identity: &self.identity,
                display_name: "guest".into(),
                library_digest: Hash([0; 32]),
                record_version: 1,
                party_key: party_key.map(tls::party_key),
                listen_port,
            },
        )
        .await
    }
}

/// A game held in memory: files, the manifest they make, the pieces'
/// bytes. Tests change the summary or the manifest to lie about it.
pub struct FakeGame {
    pub manifest: Manifest,
    pub data: Vec<u8>,
    pub summary: GameSummary,
}

impl FakeGame {
    /// `files` as (path, bytes, executable), in any order.
    pub fn new(game_id: &str, files: &[(&str, &[u8], bool)]) -> Self {
        let mut files = files.to_vec();
        files.sort_by(|a, b| a.0.cmp(b.0));
        let data: Vec<u8> = files.iter().flat_map(|f| f.1.iter().copied()).collect();
        let piece_size = piece_size_for(data.len() as u64);
        let n_pieces = piece_count(data.len() as u64, piece_size) as usize;
        let pieces = (0..n_pieces)
            .map(|i| {
                let start = i * piece_size as usize;
                let end = (start + piece_size as usize).min(data.len());
                Hash::of(&data[start..end])
            })
            .collect();
        let manifest = Manifest {
            piece_size,
            files: files
                .iter()
                .map(|(path, bytes, executable)| FileEntry {
                    path: (*path).to_owned(),
                    size: bytes.len() as u64,
                    executable: *executable,
                })
                .collect(),
            empty_dirs: Vec::new(),
            pieces,
        };
        let summary = GameSummary {
            game_id: game_id.to_owned(),
            version_id: manifest.version_id(),
            title: game_id.to_owned(),
            description: None,
            genre: None,
            min_players: None,
            max_players: None,
            version_label: None,
            total_size: data.len() as u64,
            n_files: files.len() as u64,
            thumbnail: None,
            complete: true,
        };
        Self {
            manifest,
            data,
            summary,
        }
    }

    /// After changing the manifest: the summary follows it.
    pub fn remanifest(&mut self) {
        self.summary.version_id = self.manifest.version_id();
    }

    /// The honest answer to a request about this game: its listing, its
    /// manifest, its pieces (header and bytes).
    pub fn serve(&self, request: &Request) -> Vec<Answer> {
        match request {
            Request::ListGames => vec![Answer::Frame(Response::Games(vec![self.summary.clone()]))],
            Request::GetManifest { version_id } if *version_id == self.summary.version_id => {
                vec![Answer::Frame(Response::Manifest(Box::new(
                    self.manifest.clone(),
                )))]
            }
            Request::GetPieces { version_id, pieces } if *version_id == self.summary.version_id => {
                let size = self.manifest.piece_size as usize;
                pieces
                    .iter()
                    .flat_map(|&idx| {
                        let start = idx as usize * size;
                        let end = (start + size).min(self.data.len());
                        let bytes = self.data[start.min(end)..end].to_vec();
                        [
                            Answer::Frame(Response::Piece {
                                piece_idx: idx,
                                len: bytes.len() as u32,
                            }),
                            Answer::Raw(bytes),
                        ]
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The scripted server is a real peer to a victim: an honest game served
/// through it downloads, verifies and installs. Every attack test starts
/// from this and lies in one place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_game_from_the_scripted_server_installs() {
    use crate::support::outcome;
    use crate::support::{local_config, stop, until, Peer};
    use lanspread_peer::PeerEvent;
    use std::time::Duration;

    let game = Arc::new(FakeGame::new(
        "arena",
        &[
            ("arena.pak", &[7u8; 3 << 20], false),
            ("bin/arena", b"#!/bin/sh\n", true),
        ],
    ));
    let served = game.clone();
    let hostile = HostileServer::start(move |request| served.serve(request)).await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(&dir.path().join("games"), &dir.path().join("data"));
    std::fs::create_dir_all(&config.games_dir).unwrap();
    config.peers = vec![hostile.as_peer()];
    let mut victim = Peer::start(config).await;
    let handle = &victim.handle;
    until(
        &mut victim.events,
        "the game listed",
        Duration::from_secs(10),
        || handle.catalog().iter().any(|e| e.game_id == "arena"),
    )
    .await;
    victim.handle.download("arena").await.unwrap();
    let end = outcome(&mut victim.events, "arena", Duration::from_secs(30)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
    let installed = dir.path().join("games/arena");
    assert_eq!(
        std::fs::read(installed.join("arena.pak")).unwrap(),
        vec![7u8; 3 << 20]
    );
    stop([&victim.handle]).await;
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`), on Linux.
#[cfg(target_os = "linux")]
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
