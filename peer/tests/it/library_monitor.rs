//! The library monitor inside a real runtime, watching a real folder.

use std::fs;
use std::time::Duration;

use lanspread_peer::{start_peer, PeerConfig, PeerEvent};
use tokio::sync::broadcast;

/// Wait for the next `LibraryChanged` and return (added, updated, removed).
async fn next_change(
    events: &mut broadcast::Receiver<PeerEvent>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let wait = async {
        loop {
            if let PeerEvent::LibraryChanged {
                added,
                updated,
                removed,
            } = events.recv().await.expect("event stream open")
            {
                return (added, updated, removed);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .expect("a LibraryChanged within 15 s")
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_up_added_changed_and_removed_games() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    fs::create_dir_all(games.join("present")).unwrap();
    fs::write(games.join("present/data.bin"), vec![7u8; 100_000]).unwrap();
    let mut config = PeerConfig::new(&games, dir.path().join("data"));
    config.library_quiet_period = Duration::from_millis(300);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;

    let peer = start_peer(config).await.unwrap().0;
    let mut events = peer.subscribe();

    // The initial scan finds what was there.
    assert_eq!(
        next_change(&mut events).await,
        (s(&["present"]), vec![], vec![])
    );
    assert!(peer.library().contains_key("present"));

    // Added.
    fs::create_dir_all(games.join("fresh/bin")).unwrap();
    fs::write(games.join("fresh/bin/game.exe"), b"MZ...").unwrap();
    assert_eq!(
        next_change(&mut events).await,
        (s(&["fresh"]), vec![], vec![])
    );
    let first_version = peer.library()["fresh"].version_id;

    // Changed.
    fs::write(games.join("fresh/bin/game.exe"), b"MZ... patched").unwrap();
    assert_eq!(
        next_change(&mut events).await,
        (vec![], s(&["fresh"]), vec![])
    );
    assert_ne!(peer.library()["fresh"].version_id, first_version);

    // Removed.
    fs::remove_dir_all(games.join("present")).unwrap();
    assert_eq!(
        next_change(&mut events).await,
        (vec![], vec![], s(&["present"]))
    );
    assert_eq!(peer.library().keys().collect::<Vec<_>>(), ["fresh"]);

    peer.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(2), peer.wait_stopped())
        .await
        .expect("stopped within 2 s");
    assert!(report.requested && report.stuck_services.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_being_copied_in_is_announced_only_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    fs::create_dir_all(&games).unwrap();
    let mut config = PeerConfig::new(&games, dir.path().join("data"));
    config.library_quiet_period = Duration::from_millis(800);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    let peer = start_peer(config).await.unwrap().0;
    let mut events = peer.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A copy that writes a chunk every 200 ms: never quiet for 800 ms.
    fs::create_dir_all(games.join("slow")).unwrap();
    for chunk in 0..8u8 {
        fs::write(games.join(format!("slow/part{chunk}")), vec![chunk; 10_000]).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !peer.library().contains_key("slow"),
            "announced while still being copied (after chunk {chunk})"
        );
    }
    assert_eq!(
        next_change(&mut events).await,
        (s(&["slow"]), vec![], vec![])
    );
    assert_eq!(peer.library()["slow"].manifest.files.len(), 8);

    peer.shutdown();
    peer.wait_stopped().await;
}
