//! The QUIC transport between real endpoints on 127.0.0.1: handshake, peer
//! identity, party key, malformed input, range checks and the upload limit.

use std::fs;
use std::time::{Duration, Instant};

use lanspread_peer::net::client::{ConnectError, RequestError};
use lanspread_peer::net::identity::Identity;
use lanspread_peer::net::limiter::CHUNK;
use lanspread_peer::net::tls;
use lanspread_peer::PeerRuntimeHandle;
use lanspread_proto::wire::{ErrorCode, Request, Response};
use lanspread_proto::Hash;

use crate::hostile::HostileClient;
use crate::support::{bytes, local_config, stop, Peer};

struct Server {
    peer: PeerRuntimeHandle,
    _dir: tempfile::TempDir,
}

/// A real peer sharing one game of `size` pseudo-random bytes, indexed.
async fn server(size: usize, party_key: Option<&str>, upload_limit: u64) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    fs::create_dir_all(games.join("arena")).unwrap();
    fs::write(games.join("arena/arena.pak"), bytes(size, 0x9e37_79b9)).unwrap();
    let mut config = local_config(&games, &dir.path().join("data"));
    config.party_key = party_key.map(str::to_owned);
    config.upload_limit = upload_limit;
    config.display_name = "host".into();
    // The game was just written: index it once quiet for 300 ms, not 3 s.
    config.library_quiet_period = Duration::from_millis(300);
    let mut peer = Peer::start(config).await;
    peer.indexed("arena").await;
    Server {
        peer: peer.handle,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_game_listing() {
    let server = server(3 << 20, None, 0).await;
    let client = HostileClient::new();

    let conn = client
        .connect(
            server.peer.local_addr(),
            Some(server.peer.peer_id().clone()),
            None,
            0,
        )
        .await
        .unwrap();

    assert_eq!(&conn.peer_id, server.peer.peer_id());
    assert_eq!(conn.hello.display_name, "host");
    let Response::Games(games) = conn.request(&Request::ListGames).await.unwrap() else {
        panic!("not a game list")
    };
    assert_eq!(games.len(), 1);
    assert_eq!(games[0].game_id, "arena");
    assert_eq!(games[0].total_size, 3 << 20);
    let local = &server.peer.library()["arena"];
    assert_eq!(games[0].version_id, local.version_id);

    // The manifest comes back byte-identical, and its hash is the version id.
    let Response::Manifest(manifest) = conn
        .request(&Request::GetManifest {
            version_id: local.version_id,
        })
        .await
        .unwrap()
    else {
        panic!("not a manifest")
    };
    assert_eq!(manifest.version_id(), local.version_id);

    // Pieces arrive and verify.
    let mut got = Vec::new();
    conn.get_pieces(local.version_id, vec![2, 0], |idx, data| {
        got.push((idx, data))
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 2);
    for (idx, data) in got {
        assert_eq!(Hash::of(&data), manifest.pieces[idx as usize]);
    }
    conn.goodbye().await;
    stop([&server.peer]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expected_peer_id_is_refused() {
    let server = server(1000, None, 0).await;
    let client = HostileClient::new();
    let impostor = Identity::ephemeral().peer_id().clone();

    let err = client
        .connect(server.peer.local_addr(), Some(impostor.clone()), None, 0)
        .await
        .unwrap_err();

    match err {
        ConnectError::WrongPeer {
            expected, actual, ..
        } => {
            assert_eq!(expected, impostor);
            assert_eq!(&actual, server.peer.peer_id());
        }
        other => panic!("expected WrongPeer, got {other}"),
    }
    stop([&server.peer]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_party_key_is_refused() {
    let server = server(1000, Some("lan-2026"), 0).await;
    let client = HostileClient::new();
    let addr = server.peer.local_addr();

    let missing = client.connect(addr, None, None, 0).await.unwrap_err();
    assert!(
        matches!(missing, ConnectError::PartyKeyRefused { .. }),
        "{missing}"
    );
    // With another key the client sees first that the server's key
    // confirmation does not match, and leaves without sending its own.
    let wrong = client
        .connect(addr, None, Some("other party"), 0)
        .await
        .unwrap_err();
    assert!(matches!(wrong, ConnectError::NotInParty { .. }), "{wrong}");
    let right = client
        .connect(addr, None, Some("lan-2026"), 0)
        .await
        .unwrap();
    assert!(matches!(
        right.request(&Request::Ping { nonce: 7 }).await,
        Ok(Response::Pong { nonce: 7 })
    ));

    // A keyed client does not accept a keyless server either.
    let open = self::server(1000, None, 0).await;
    let err = client
        .connect(open.peer.local_addr(), None, Some("lan-2026"), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::NotInParty { .. }), "{err}");
    stop([&open.peer]).await;
    stop([&server.peer]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_that_connection_only() {
    let server = server(1000, None, 0).await;
    let addr = server.peer.local_addr();
    let bystander = HostileClient::new();
    let good = bystander.connect(addr, None, None, 0).await.unwrap();

    // Garbage after the handshake.
    let attacker = HostileClient::new();
    let conn = attacker.connect(addr, None, None, 0).await.unwrap();
    let (mut send, _recv) = conn.connection.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 3, 250, 1, 2]).await.unwrap();
    let _ = send.finish();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.connection.closed())
        .await
        .expect("closed in time");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == quinn::VarInt::from_u32(1)),
        "{closed:?}"
    );

    // An oversized frame header.
    let conn = attacker.connect(addr, None, None, 0).await.unwrap();
    let (mut send, _recv) = conn.connection.open_bi().await.unwrap();
    let mut frame = (u32::MAX).to_be_bytes().to_vec();
    frame.push(2);
    send.write_all(&frame).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.connection.closed())
        .await
        .expect("closed in time");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );

    // Garbage instead of a handshake.
    let raw = attacker
        .endpoint
        .connect_with(
            tls::client_config(&attacker.identity, None, Default::default()).unwrap(),
            addr,
            tls::SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = raw.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let _ = send.finish();
    let closed = tokio::time::timeout(Duration::from_secs(5), raw.closed())
        .await
        .unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );

    // The server still serves the bystander and new clients.
    assert!(matches!(
        good.request(&Request::Ping { nonce: 1 }).await,
        Ok(Response::Pong { nonce: 1 })
    ));
    let fresh = HostileClient::new()
        .connect(addr, None, None, 0)
        .await
        .unwrap();
    assert!(matches!(
        fresh.request(&Request::ListGames).await,
        Ok(Response::Games(_))
    ));
    stop([&server.peer]).await;
}

/// The request failed with `Error code` from the peer.
fn refused<T>(answer: Result<T, RequestError>, code: ErrorCode) {
    match answer {
        Err(RequestError::Remote { code: got, .. }) if got == code => {}
        Err(err) => panic!("expected {code:?}, got {err}"),
        Ok(_) => panic!("expected {code:?}, got an answer"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_manifest_are_refused() {
    let server = server(2 << 20, None, 0).await;
    let conn = HostileClient::new()
        .connect(server.peer.local_addr(), None, None, 0)
        .await
        .unwrap();
    let version_id = server.peer.library()["arena"].version_id;

    refused(
        conn.get_pieces(version_id, vec![0, 2], |_, _| {}).await,
        ErrorCode::OutOfRange,
    );
    refused(
        conn.get_pieces(version_id, vec![u32::MAX], |_, _| {}).await,
        ErrorCode::OutOfRange,
    );
    refused(
        conn.get_pieces(Hash([9; 32]), vec![0], |_, _| {}).await,
        ErrorCode::NotFound,
    );
    refused(
        conn.request(&Request::GetThumbnail {
            hash: Hash([1; 32]),
        })
        .await,
        ErrorCode::NotFound,
    );
    stop([&server.peer]).await;
}

/// That the limit is applied at all, as a bound that holds however slow the
/// machine: N bytes at R bytes/s take at least (N - burst - one chunk) / R,
/// since the bucket starts at most full and lets one chunk into debt. How
/// close the rate comes to the limit is measured by the `upload_limit`
/// benchmark instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_upload_takes_at_least_its_size_over_the_limit() {
    const RATE: u64 = 4 << 20;
    const PIECES: u32 = 4;
    let server = server((PIECES as usize) << 20, None, RATE).await;
    let conn = HostileClient::new()
        .connect(server.peer.local_addr(), None, None, 0)
        .await
        .unwrap();
    let version_id = server.peer.library()["arena"].version_id;

    let started = Instant::now();
    let mut bytes = 0usize;
    conn.get_pieces(version_id, (0..PIECES).collect(), |_, data| {
        bytes += data.len()
    })
    .await
    .unwrap();
    let took = started.elapsed();

    assert_eq!(bytes, (PIECES as usize) << 20);
    // The bucket holds 50 ms of traffic, at least one chunk.
    let burst = (RATE / 20).max(CHUNK as u64);
    let at_least =
        Duration::from_secs_f64((bytes as u64 - burst - CHUNK as u64) as f64 / RATE as f64);
    assert!(
        took >= at_least,
        "{bytes} bytes in {took:?}, under the {at_least:?} the limit allows"
    );
    stop([&server.peer]).await;
}
