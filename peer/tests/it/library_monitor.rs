//! The library monitor inside a real runtime, watching a real folder.

use std::fs;
use std::time::{Duration, Instant};

use lanspread_peer::PeerEvent;
use tokio::sync::broadcast;

use crate::support::{local_config, stop, wait_event, Peer};

/// Wait for the next `LibraryChanged` and return (added, updated, removed).
async fn next_change(
    events: &mut broadcast::Receiver<PeerEvent>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    wait_event(
        events,
        "a LibraryChanged",
        Duration::from_secs(15),
        |event| match event {
            PeerEvent::LibraryChanged {
                added,
                updated,
                removed,
            } => Some((added.clone(), updated.clone(), removed.clone())),
            _ => None,
        },
    )
    .await
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
    let mut config = local_config(&games, &dir.path().join("data"));
    config.library_quiet_period = Duration::from_millis(300);

    let Peer {
        handle: peer,
        mut events,
        ..
    } = Peer::start(config).await;

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

    stop([&peer]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_being_copied_in_is_announced_only_when_quiet() {
    const QUIET: Duration = Duration::from_millis(800);
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    fs::create_dir_all(&games).unwrap();
    let mut config = local_config(&games, &dir.path().join("data"));
    config.library_quiet_period = QUIET;
    // No wait for the monitor to be ready: it watches the folder before its
    // first scan, so a write is either found by that scan (and held back as
    // not quiet) or seen by the watcher.
    let Peer {
        handle: peer,
        mut events,
        ..
    } = Peer::start(config).await;

    // A copy that writes a chunk every 200 ms: never quiet for 800 ms. The
    // pauses are the copy's pace, not waits for a state.
    fs::create_dir_all(games.join("slow")).unwrap();
    let mut checked = 0;
    for chunk in 0..8u8 {
        fs::write(games.join(format!("slow/part{chunk}")), vec![chunk; 10_000]).unwrap();
        let written = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Only meaningful while the game has been quiet for less than the
        // quiet period; a machine that stalled longer proves nothing here.
        let announced = peer.library().contains_key("slow");
        if written.elapsed() < QUIET {
            checked += 1;
            assert!(
                !announced,
                "announced while still being copied (after chunk {chunk})"
            );
        }
    }
    println!("checked {checked} of 8 chunks while the copy was not quiet");
    assert_eq!(
        next_change(&mut events).await,
        (s(&["slow"]), vec![], vec![])
    );
    assert_eq!(peer.library()["slow"].manifest.files.len(), 8);

    stop([&peer]).await;
}
