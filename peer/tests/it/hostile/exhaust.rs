//! Exhaust the server: many ids and streams that ask for a big answer and
//! never read it.

use std::net::SocketAddr;

use std::sync::Arc;

use lanspread_peer::net::identity::Identity;
use lanspread_peer::net::server::{MAX_CONNECTIONS_PER_IP, WRITE_TIMEOUT};
use lanspread_peer::net::{bind_endpoint, client, close_code, tls};
use lanspread_proto::wire::{Request, Response};
use quinn::{Connection, Endpoint, RecvStream, VarInt};

use super::{hello, proc_status_kib, HostileClient};
use crate::support::{ServeChild, MIB};

/// The server stays under this while attacked.
const VICTIM_MEMORY_KIB: u64 = 300 << 10;
/// Connections the attacker opens, each with a fresh id, all from one
/// machine, and streams per connection (the most a connection may open).
const CONNECTIONS: usize = 40;
const STREAMS: usize = 16;

/// A connection with a fresh id whose receive windows are tiny: it takes a
/// few KiB and then nothing, like a reader that never reads.
async fn stingy_connection(endpoint: &Endpoint, addr: SocketAddr) -> Option<Connection> {
    let identity = Identity::ephemeral();
    let seen = Arc::new(tls::SeenServer::default());
    let mut config = tls::client_config(&identity, None, seen).unwrap();
    let mut transport = tls::transport_config(true);
    transport.stream_receive_window(VarInt::from_u32(4 << 10));
    transport.receive_window(VarInt::from_u32(64 << 10));
    config.transport_config(Arc::new(transport));
    let connection = endpoint
        .connect_with(config, addr, tls::SERVER_NAME)
        .ok()?
        .await
        .ok()?;
    match client::request(&connection, &Request::Hello(hello(identity.peer_id()))).await {
        Ok(Response::Hello(_)) => Some(connection),
        _ => None,
    }
}

fn client_on(ip: [u8; 4]) -> Endpoint {
    bind_endpoint(SocketAddr::from((ip, 0)), None).unwrap()
}

/// Ask `addr` for its game list and the first game's picture, as an honest
/// peer from `endpoint` would; returns the picture's size.
async fn fetch_picture(endpoint: &Endpoint, addr: SocketAddr) -> usize {
    let client = HostileClient {
        identity: Identity::ephemeral(),
        endpoint: endpoint.clone(),
    };
    let conn = client.connect(addr, None, None, 0).await.unwrap();
    let Response::Games(games) = conn.request(&Request::ListGames).await.unwrap() else {
        panic!("no games list");
    };
    let hash = games[0].thumbnail.expect("a picture");
    match conn.request(&Request::GetThumbnail { hash }).await.unwrap() {
        Response::Thumbnail { bytes, .. } => bytes.len(),
        other => panic!("{other:?}"),
    }
}

/// Bug: every stream asking for a 2 MiB picture held its own copies of it
/// until the reader took them, and readers that never read were never
/// dropped; with fresh ids nothing bounded the connections either. Hundreds
/// of such streams took a host from 29 MB to 2.4 GB. Now answers are shared
/// between streams, connections from one machine are capped, a stream whose
/// reader takes nothing for `WRITE_TIMEOUT` is reset, and an honest peer
/// is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_never_read_a_big_answer_do_not_exhaust_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    std::fs::create_dir_all(games.join("arena")).unwrap();
    std::fs::write(games.join("arena/arena.pak"), b"data").unwrap();
    let mut picture = b"\x89PNG\r\n\x1a\n".to_vec();
    picture.extend(crate::support::bytes(2 * MIB - 64, 5));
    std::fs::write(games.join("arena/cover.png"), &picture).unwrap();
    let victim = ServeChild::start(&games, &dir.path().join("data"), &[]);
    victim.indexed("arena");
    let pid = victim_pid(&victim);
    let addr = victim.addr;

    // The attacker, from 127.0.0.2: fresh ids, every stream asks for the
    // picture and reads nothing.
    let attacker = client_on([127, 0, 0, 2]);
    let honest = client_on([127, 0, 0, 3]);
    assert_eq!(fetch_picture(&honest, addr).await, picture.len());
    let Response::Games(listed) = HostileClient {
        identity: Identity::ephemeral(),
        endpoint: honest.clone(),
    }
    .connect(addr, None, None, 0)
    .await
    .unwrap()
    .request(&Request::ListGames)
    .await
    .unwrap() else {
        panic!("no games list")
    };
    let hash = listed[0].thumbnail.unwrap();
    let mut held: Vec<(Connection, RecvStream)> = Vec::new();
    let mut refused = 0;
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS {
        let Some(conn) = stingy_connection(&attacker, addr).await else {
            refused += 1;
            continue;
        };
        open.push(conn);
    }
    assert!(
        refused >= CONNECTIONS - MAX_CONNECTIONS_PER_IP,
        "{refused} of {CONNECTIONS} connections from one machine refused"
    );
    for conn in &open {
        for _ in 0..STREAMS {
            let Ok((mut send, recv)) = conn.open_bi().await else {
                break;
            };
            let asked = send
                .write_all(&Request::GetThumbnail { hash }.encode())
                .await;
            if asked.is_err() {
                break;
            }
            let _ = send.finish();
            held.push((conn.clone(), recv));
        }
    }
    assert!(!held.is_empty());

    // Served alongside, while every attacking stream is blocked.
    assert_eq!(fetch_picture(&honest, addr).await, picture.len());
    let peak = proc_status_kib(pid, "VmHWM").expect("the victim runs");
    eprintln!(
        "server peak: {} MiB under {} streams",
        peak >> 10,
        held.len()
    );
    assert!(
        peak < VICTIM_MEMORY_KIB,
        "the server peaked at {} MiB under {} streams ({refused} connections refused)",
        peak >> 10,
        held.len()
    );

    // A stream never read is reset once its writer waited WRITE_TIMEOUT.
    let (_, mut first) = held.swap_remove(0);
    let read = tokio::time::timeout(WRITE_TIMEOUT * 3, first.read_to_end(4 * MIB)).await;
    match read {
        Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)))) => {
            assert_eq!(code, VarInt::from_u32(close_code::WRITE_TIMEOUT));
        }
        other => panic!("the stream was not reset: {other:?}"),
    }
    drop(held);
    drop(open);
    attacker.close(0u32.into(), b"done");
    honest.close(0u32.into(), b"done");
    victim.stop();
}

fn victim_pid(victim: &ServeChild) -> u32 {
    victim.pid()
}
