//! Regression tests that need real peers: each pins one bug, named in its
//! doc comment.

use std::fs;
use std::time::Duration;

use lanspread_peer::events::{DownloadState, PeerState};
use lanspread_peer::PeerEvent;

use crate::download::one_slot_for_two_games;
use crate::support::{local_config, stop, until, wait_event, Peer, MIB};

/// Bug: a display name of 56 Cyrillic letters (112 bytes; the CLI's
/// `--name` and the host name default took it, and the settings allowed
/// 40 characters) was sent as is, and every peer refused the `Hello`
/// carrying it, since the wire takes at most 64 bytes: the host could reach
/// no one. The runtime now cuts the name to fit when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_long_cyrillic_name_is_seen_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut guest = Peer::named(dir.path(), "guest", vec![], 0).await;
    let games = dir.path().join("host/games");
    fs::create_dir_all(&games).unwrap();
    let mut config = local_config(&games, &dir.path().join("host/data"));
    config.display_name = "Ж".repeat(56);
    // The host dials: its name travels in the Hello the guest checks.
    config.peers = vec![guest.addr()];
    let mut host = Peer::start(config).await;
    let (host_id, guest_id) = (
        host.handle.peer_id().clone(),
        guest.handle.peer_id().clone(),
    );

    let within = Duration::from_secs(20);
    let seen_by_guest = |p: &lanspread_peer::events::PeerInfo| {
        p.peer_id == host_id && p.state == PeerState::Connected
    };
    let handle = &guest.handle;
    until(&mut guest.events, "the guest sees the host", within, || {
        handle.peers().iter().any(seen_by_guest)
    })
    .await;
    let seen = guest
        .handle
        .peers()
        .into_iter()
        .find(seen_by_guest)
        .unwrap();
    assert_eq!(seen.display_name, "Ж".repeat(32), "cut to 64 bytes");
    let handle = &host.handle;
    until(&mut host.events, "the host sees the guest", within, || {
        handle
            .peers()
            .iter()
            .any(|p| p.peer_id == guest_id && p.state == PeerState::Connected)
    })
    .await;

    stop([&host.handle, &guest.handle]).await;
}

/// Bug: downloads waiting in the queue were said to come back after a
/// restart, but only running ones were stored: a player who queued a
/// night's games and restarted the app found the queue empty. Stopping the
/// runtime must not lose the running one either (it was recorded as
/// cancelled by the shutdown itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_downloads_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A slow source: the first download keeps its slot while we restart.
    let (source, down, config) = one_slot_for_two_games(dir.path(), 16 * MIB, MIB as u64).await;
    let arena = down.handle.download("arena").await.unwrap();
    let racer = down.handle.download("racer").await.unwrap();
    assert!(down
        .handle
        .downloads()
        .iter()
        .any(|d| d.version_id == racer && d.state == DownloadState::Queued));
    stop([&down.handle]).await;
    drop(down);

    // The same data folder: the waiting download is queued again at start
    // (its event is the first the new runtime reports about it).
    // The same data folder: both are queued again at start, the running one
    // first (the events are the first the new runtime reports about them).
    let mut again = Peer::start(config).await;
    let mut requeued = Vec::new();
    while requeued.len() < 2 {
        let vid = wait_event(
            &mut again.events,
            "both queued again",
            Duration::from_secs(10),
            |event| match event {
                PeerEvent::DownloadQueued { version_id, .. } => Some(*version_id),
                _ => None,
            },
        )
        .await;
        requeued.push(vid);
    }
    assert_eq!(requeued, vec![arena, racer]);
    stop([&again.handle, &source.handle]).await;
}
