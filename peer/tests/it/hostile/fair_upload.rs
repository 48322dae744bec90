//! Starve honest downloaders: one machine with many ids and streams against
//! an upload limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanspread_peer::net::bind_endpoint;
use lanspread_peer::net::client::PeerConnection;
use lanspread_peer::net::identity::Identity;
use lanspread_proto::wire::{Request, Response};
use lanspread_proto::Hash;
use tokio::task::JoinSet;

use super::HostileClient;
use crate::support::{make_game, stop, Peer, MIB};

/// The victim's upload limit, bytes per second.
const LIMIT: u64 = 4_000_000;
/// Bytes served to both before the shares are compared: six seconds at
/// the limit, long enough that bursts do not count.
const WINDOW: u64 = 24 * MIB as u64;

/// Fetch pieces of `version_id` from `conn` in batches of 4 on `streams`
/// streams, adding what arrives to `got`, until the task is aborted.
fn download_loops(
    tasks: &mut JoinSet<()>,
    conn: PeerConnection,
    version_id: Hash,
    n_pieces: u32,
    streams: usize,
    got: Arc<AtomicU64>,
) {
    for stream in 0..streams {
        let (conn, got) = (conn.clone(), got.clone());
        tasks.spawn(async move {
            let mut at = stream as u32;
            loop {
                let batch: Vec<u32> = (0..4).map(|i| (at + i) % n_pieces).collect();
                at = (at + 4) % n_pieces;
                let counted = |_, data: Vec<u8>| {
                    got.fetch_add(data.len() as u64, Ordering::Relaxed);
                };
                if conn.get_pieces(version_id, batch, counted).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
}

async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> PeerConnection {
    let client = HostileClient {
        identity: Identity::ephemeral(),
        endpoint: bind_endpoint(SocketAddr::from((ip, 0)), None).unwrap(),
    };
    client.connect(addr, None, None, 0).await.unwrap()
}

/// Bug: the upload limit was one token bucket for everyone, and upload
/// slots were per peer id: 8 greedy ids took 97 % of a 20 MB/s limit. Now
/// the limit is shared per machine (source IP): a greedy machine with 8 ids
/// and 32 streams and an honest one with 2 streams each get about half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_machine_with_many_ids_gets_no_more_than_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let mut victim = Peer::named(dir.path(), "seeder", Vec::new(), LIMIT).await;
    make_game(&victim.games, "arena", 16 * MIB);
    victim.indexed("arena").await;
    let addr = victim.handle.local_addr();

    // The honest downloader, from 127.0.0.3, one id and two streams (as the
    // download engine uses per source).
    let honest = connect_from([127, 0, 0, 3], addr).await;
    let Response::Games(games) = honest.request(&Request::ListGames).await.unwrap() else {
        panic!("no games list");
    };
    let version_id = games[0].version_id;
    let Response::Manifest(manifest) = honest
        .request(&Request::GetManifest { version_id })
        .await
        .unwrap()
    else {
        panic!("no manifest");
    };
    let n_pieces = manifest.n_pieces() as u32;

    let (greedy_got, honest_got) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = JoinSet::new();
    // The greedy machine, 127.0.0.2: 8 ids, 4 streams each.
    for _ in 0..8 {
        let conn = connect_from([127, 0, 0, 2], addr).await;
        download_loops(
            &mut tasks,
            conn,
            version_id,
            n_pieces,
            4,
            greedy_got.clone(),
        );
    }
    download_loops(
        &mut tasks,
        honest,
        version_id,
        n_pieces,
        2,
        honest_got.clone(),
    );

    let total = || greedy_got.load(Ordering::Relaxed) + honest_got.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while total() < WINDOW {
        assert!(
            tokio::time::Instant::now() < deadline,
            "served {} bytes",
            total()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let (greedy, honest) = (
        greedy_got.load(Ordering::Relaxed),
        honest_got.load(Ordering::Relaxed),
    );
    let share = honest as f64 / (greedy + honest) as f64;
    // A fair share is half; within 20 % of it is at least 40 %.
    assert!(
        share >= 0.4,
        "the honest machine got {:.0} % ({honest} bytes; greedy {greedy})",
        share * 100.0
    );
    stop([&victim.handle]).await;
}
