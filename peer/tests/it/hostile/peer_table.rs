//! Flood the peer table: lies in peer exchange and in `Hello.listen_port`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanspread_peer::net::identity::Identity;
use lanspread_peer::peers::{MAX_CANDIDATES, MAX_CANDIDATES_PER_IP};
use lanspread_peer::PeerRuntimeHandle;
use lanspread_proto::wire::{
    PeerRecord, Request, Response, MAX_EXCHANGED_PEERS, MAX_GOSSIP_RECORDS,
};
use lanspread_proto::Hash;

use super::{Answer, HostileClient, HostileServer};
use crate::support::{local_config, stop, Peer};

/// Waits for the victim's bookkeeping end within this, or the test fails.
const WITHIN: Duration = Duration::from_secs(60);

fn addresses(victim: &PeerRuntimeHandle) -> usize {
    victim.diagnostics().addresses.len()
}

/// Poll `ok` every 100 ms until it holds, at most `WITHIN`.
async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn victim(dir: &std::path::Path, peers: Vec<String>) -> Peer {
    let mut config = local_config(&dir.join("games"), &dir.join("data"));
    std::fs::create_dir_all(&config.games_dir).unwrap();
    config.peers = peers;
    Peer::start(config).await
}

/// `n` records of fresh ids at addresses on loopback where nobody listens,
/// spread over many IPs (127/8 is all loopback); `round` keeps rounds apart.
fn lies(round: u8, n: usize) -> Vec<PeerRecord> {
    (0..n)
        .map(|i| PeerRecord {
            status: None,
            peer_id: Identity::ephemeral().peer_id().to_string(),
            addr: SocketAddr::from(([127, 1 + round, (i >> 2) as u8, 1 + (i & 3) as u8], 9)),
            version: u64::MAX,
            library_digest: Hash([0x66; 32]),
            gone: false,
        })
        .collect()
}

/// Bug: every `GetPeers` answer was taken whole, and failed addresses were
/// dialled again every 2 s forever: a liar answering with fresh ids at
/// fresh addresses grew the victim's table by a thousand addresses every
/// 3 s. Now the table holds at most `MAX_CANDIDATES`, and addresses that
/// fail are forgotten once the liar is gone. The same holds for records
/// pushed as gossip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_exchange_flood_is_bounded_and_forgotten_when_the_liar_leaves() {
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let hostile = HostileServer::start(move |request| match request {
        Request::GetPeers { .. } => {
            count.fetch_add(1, Ordering::SeqCst);
            vec![Answer::Frame(Response::Peers(lies(0, MAX_EXCHANGED_PEERS)))]
        }
        _ => Vec::new(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let victim = victim(dir.path(), vec![hostile.as_peer()]).await;
    let handle = &victim.handle;

    eventually("an exchange with the liar", || {
        answered.load(Ordering::SeqCst) >= 1
    })
    .await;
    // And gossip pushed at it: thousands of fresh ids.
    let pusher = HostileClient::new();
    let conn = pusher
        .connect(handle.local_addr(), None, None, 0)
        .await
        .expect("connects");
    let mut pushed = 0;
    for round in 1..=40u8 {
        let request = Request::Gossip(lies(round, MAX_GOSSIP_RECORDS));
        if matches!(conn.request(&request).await, Ok(Response::Ok)) {
            pushed += MAX_GOSSIP_RECORDS;
        }
    }
    assert!(pushed > 2 * MAX_CANDIDATES, "{pushed} records pushed");
    let held = addresses(handle);
    assert!(
        held <= MAX_CANDIDATES,
        "{held} addresses held after {} lying answers and {pushed} pushed records",
        answered.load(Ordering::SeqCst)
    );
    assert!(
        handle.peers().len() <= 1,
        "hearsay lists no peer: {:?}",
        handle.peers()
    );
    drop(conn);
    drop(pusher);

    drop(hostile);
    // Only the typed address of the liar stays; the lies are forgotten.
    eventually("the lies forgotten", || addresses(handle) <= 1).await;
    stop([handle]).await;
}

/// Bug: an address told by hearsay with a wrong peer id was dialled
/// expecting that id forever: the honest peer there answered with its own
/// id, the dial failed, and it was never reached. Now an address that
/// answers with another id is dialled next without an expectation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearsay_cannot_make_an_honest_peer_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let honest = Peer::named(dir.path(), "honest", Vec::new(), 0).await;
    let honest_addr = honest.handle.local_addr();
    let honest_id = honest.handle.peer_id().clone();
    let hostile = HostileServer::start(move |request| match request {
        Request::GetPeers { .. } => vec![Answer::Frame(Response::Peers(vec![PeerRecord {
            status: None,
            peer_id: Identity::ephemeral().peer_id().to_string(),
            addr: honest_addr,
            version: 1,
            library_digest: Hash([0; 32]),
            gone: false,
        }]))],
        _ => Vec::new(),
    })
    .await;
    let victim = victim(&dir.path().join("victim"), vec![hostile.as_peer()]).await;
    let handle = &victim.handle;
    eventually("the honest peer reached", || {
        handle.peers().iter().any(|p| {
            p.peer_id == honest_id && p.state == lanspread_peer::events::PeerState::Connected
        })
    })
    .await;
    stop([handle, &honest.handle]).await;
}

/// Bug: each connection's `Hello.listen_port` became an address dialled
/// every 2 s forever, even after the claimer left: short-lived connections
/// with fresh ids claiming hundreds of ports left the victim redialling
/// all of them. Now dial-back addresses are bounded per machine and
/// forgotten after failed dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_back_claims_are_bounded_and_dropped_after_the_claimers_leave() {
    const CLAIMS: u16 = 200;
    let dir = tempfile::tempdir().unwrap();
    let victim = victim(dir.path(), Vec::new()).await;
    let handle = &victim.handle;
    let target = handle.local_addr();
    let shared = HostileClient::new().endpoint;
    let mut most = 0;
    for i in 0..CLAIMS {
        let claimer = HostileClient {
            identity: Identity::ephemeral(),
            endpoint: shared.clone(),
        };
        // Ports where nobody listens: the dial-back never verifies.
        if let Ok(conn) = claimer.connect(target, None, None, 40_000 + i).await {
            conn.connection.close(0u32.into(), b"bye");
        }
        most = most.max(addresses(handle));
    }
    assert!(
        most <= MAX_CANDIDATES_PER_IP,
        "{most} dial-back addresses held from one machine"
    );
    eventually("the claims forgotten", || addresses(handle) == 0).await;
    shared.close(0u32.into(), b"done");
    stop([handle]).await;
}
