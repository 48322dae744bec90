//! Regression tests that need real peers: each pins one bug, named in its
//! doc comment. Peers run in this process on 127.0.0.1 with mDNS off, and
//! every test stops every peer it started.

use std::path::Path;
use std::time::Duration;

use lanspread_peer::peers::{PeerInfo, PeerState};
use lanspread_peer::{start_peer, PeerConfig, PeerEvent, PeerRuntimeHandle};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::timeout;

/// Every wait of these tests ends within this, or the test fails.
const WITHIN: Duration = Duration::from_secs(20);

/// A peer sharing one small game, reachable at `handle.local_addr()`.
async fn start(
    root: &Path,
    folder: &str,
    display_name: &str,
    peers: Vec<String>,
) -> PeerRuntimeHandle {
    let games = root.join(folder).join("games");
    std::fs::create_dir_all(games.join(folder)).unwrap();
    std::fs::write(games.join(folder).join("data.bin"), folder.repeat(100)).unwrap();
    let mut config = PeerConfig::new(&games, root.join(folder).join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    config.display_name = display_name.into();
    config.peers = peers;
    config.library_quiet_period = Duration::from_millis(200);
    start_peer(config).await.expect("the peer starts")
}

/// Wait until `peer` lists a peer for which `wanted` holds; looks again at
/// each of its events. `events` must be subscribed before the wait starts.
async fn until_peer(
    peer: &PeerRuntimeHandle,
    events: &mut broadcast::Receiver<PeerEvent>,
    what: &str,
    wanted: impl Fn(&PeerInfo) -> bool,
) -> PeerInfo {
    timeout(WITHIN, async {
        loop {
            if let Some(found) = peer.peers().into_iter().find(|p| wanted(p)) {
                return found;
            }
            match events.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("{what}: the runtime stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {WITHIN:?}"))
}

/// Shut every peer down and check each stopped cleanly.
async fn stop_all(peers: &[&PeerRuntimeHandle]) {
    for peer in peers {
        peer.shutdown();
    }
    for peer in peers {
        let report = timeout(WITHIN, peer.wait_stopped())
            .await
            .expect("the peer stops");
        assert!(report.requested, "{report:?}");
        assert!(report.stuck_services.is_empty(), "{report:?}");
    }
}

/// Bug: a display name of 56 Cyrillic letters (112 bytes; the CLI's
/// `--name` and the host name default took it, and the settings allowed
/// 40 characters) was sent as is, and every peer refused the `Hello`
/// carrying it, since the wire takes at most 64 bytes: the host could reach
/// no one. The runtime now cuts the name to fit when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_long_cyrillic_name_is_seen_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let guest = start(dir.path(), "guest", "guest", Vec::new()).await;
    let mut guest_events = guest.subscribe();
    let long_name = "Ж".repeat(56);
    // The host dials: its name travels in the Hello the guest checks.
    let host = start(
        dir.path(),
        "host",
        &long_name,
        vec![guest.local_addr().to_string()],
    )
    .await;
    let mut host_events = host.subscribe();
    let host_id = host.peer_id().to_string();
    let guest_id = guest.peer_id().to_string();

    let seen = until_peer(&guest, &mut guest_events, "the guest sees the host", |p| {
        p.peer_id == host_id && p.state == PeerState::Connected
    })
    .await;
    assert_eq!(seen.display_name, "Ж".repeat(32), "cut to 64 bytes");
    until_peer(&host, &mut host_events, "the host sees the guest", |p| {
        p.peer_id == guest_id && p.state == PeerState::Connected
    })
    .await;

    stop_all(&[&host, &guest]).await;
}
