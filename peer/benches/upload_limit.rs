//! Upload limit benchmark, in one run on loopback: the rate a real peer
//! serves at against its upload limit, for several limits, to one connection
//! and to two sharing the limit. A measurement, not a test: it prints the
//! achieved rate over the limit and asserts nothing about it (the test
//! `transport::a_limited_upload_takes_at_least_its_size_over_the_limit` keeps
//! the bound that cannot flake).
//!
//! Run: `cargo bench -p lanspread-peer --bench upload_limit`. Prints Markdown.

mod common;

use std::time::Instant;

use lanspread_peer::net::bind_endpoint;
use lanspread_peer::net::client::{connect, ClientHello, PeerConnection};
use lanspread_peer::net::identity::Identity;
use lanspread_peer::{start_peer, PeerConfig};
use lanspread_proto::wire::MAX_PIECES_PER_REQUEST;
use lanspread_proto::{Hash, VersionId};
use tokio::sync::broadcast::error::RecvError;

/// Limits measured, MiB/s.
const LIMITS_MIB: [u64; 3] = [4, 16, 64];
/// Seconds of traffic at the limit per measurement.
const SECONDS: u64 = 3;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let mib_per_round = LIMITS_MIB.iter().max().unwrap() * SECONDS;
    let dir = tempfile::tempdir().unwrap();
    let game = dir.path().join("games/arena");
    std::fs::create_dir_all(&game).unwrap();
    common::write_random(&game.join("data.bin"), mib_per_round as usize, 0x51ab);
    let mut config = PeerConfig::new(dir.path().join("games"), dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    let (peer, mut events) = start_peer(config).await.unwrap();
    while peer.library().is_empty() {
        match events.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(e) => panic!("the peer stopped before indexing: {e}"),
        }
    }
    let version_id = peer.library()["arena"].version_id;
    let (first, second) = (client(&peer).await, client(&peer).await);

    println!("| limit | one connection | achieved/limit | two connections | achieved/limit |");
    println!("|---|---|---|---|---|");
    for limit_mib in LIMITS_MIB {
        let limit = (limit_mib << 20) as f64;
        peer.set_upload_limit(limit_mib << 20);
        let n_pieces = (limit_mib * SECONDS) as u32;

        let started = Instant::now();
        let got = fetch(&first, version_id, 0..n_pieces).await;
        let one = got as f64 / started.elapsed().as_secs_f64();

        let started = Instant::now();
        let half = n_pieces / 2;
        let (a, b) = tokio::join!(
            fetch(&first, version_id, 0..half),
            fetch(&second, version_id, half..n_pieces)
        );
        let two = (a + b) as f64 / started.elapsed().as_secs_f64();

        let mibs = |rate: f64| rate / (1 << 20) as f64;
        println!(
            "| {limit_mib} MiB/s | {:.2} MiB/s | {:.3} | {:.2} MiB/s | {:.3} |",
            mibs(one),
            one / limit,
            mibs(two),
            two / limit
        );
    }
    peer.shutdown();
    peer.wait_stopped().await;
}

/// A connection to `peer` from a fresh identity of its own.
async fn client(peer: &lanspread_peer::PeerRuntimeHandle) -> PeerConnection {
    let identity = Identity::ephemeral();
    let endpoint = bind_endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let hello = ClientHello {
        identity: &identity,
        display_name: "bench".into(),
        library_digest: Hash([0; 32]),
        record_version: 1,
        party_key: None,
        listen_port: 0,
    };
    connect(&endpoint, peer.local_addr(), None, hello)
        .await
        .unwrap()
}

/// Fetch `pieces` in requests of at most `MAX_PIECES_PER_REQUEST`; returns
/// the bytes received.
async fn fetch(
    conn: &PeerConnection,
    version_id: VersionId,
    pieces: std::ops::Range<u32>,
) -> usize {
    let pieces: Vec<u32> = pieces.collect();
    let mut got = 0;
    for batch in pieces.chunks(MAX_PIECES_PER_REQUEST) {
        conn.get_pieces(version_id, batch.to_vec(), |_, data| got += data.len())
            .await
            .unwrap();
    }
    got
}
