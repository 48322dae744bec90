//! The party between real peers on 127.0.0.1: a lineup published on one
//! peer reaches every peer, "Get the lineup" installs exactly its versions,
//! the ready board follows downloads, installs and a peer leaving, a party
//! key keeps non-organizers from publishing, and game mode caps seeding
//! while a game runs.
#![cfg(unix)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use lanspread_peer::events::{Lineup, ReadyBoard, ReadyState};
use lanspread_peer::party::{LineupDraftEntry, LINEUP_FILE};
use lanspread_peer::{FailureCode, PeerConfig, PeerEvent, PeerRuntimeHandle};
use lanspread_proto::{PeerId, VersionId};

use crate::support::{local_config, make_game, outcome, stop, until, wait_event, Peer, MIB};

const WITHIN: Duration = Duration::from_secs(30);

/// `root/name/{games,data}`, named `name`, dialling `peers`.
fn config(root: &Path, name: &str, peers: Vec<String>) -> PeerConfig {
    let games = root.join(name).join("games");
    fs::create_dir_all(&games).unwrap();
    let mut config = local_config(&games, &root.join(name).join("data"));
    config.display_name = name.into();
    config.peers = peers;
    config.library_quiet_period = Duration::from_millis(300);
    config
}

fn version_of(peer: &PeerRuntimeHandle, game: &str) -> VersionId {
    peer.library()[game].version_id
}

fn draft(version_id: VersionId, at: Option<&str>) -> LineupDraftEntry {
    LineupDraftEntry {
        version_id,
        at: at.map(str::to_owned),
    }
}

/// The lineup `peer` shows first, when it is `publisher`'s.
fn lineup_from(peer: &PeerRuntimeHandle, publisher: &PeerId) -> Option<Lineup> {
    peer.lineups()
        .into_iter()
        .find(|l| l.publisher == *publisher)
}

/// Wait until `peer` holds `publisher`'s lineup of version `version`.
async fn sees_lineup(peer: &mut Peer, publisher: &PeerId, version: u64) -> Lineup {
    let handle = &peer.handle;
    until(&mut peer.events, "the lineup arrives", WITHIN, || {
        lineup_from(handle, publisher).is_some_and(|l| l.version == version)
    })
    .await;
    lineup_from(handle, publisher).unwrap()
}

/// The state `board` shows for `peer` in game `game_id`.
fn state_in(board: &ReadyBoard, game_id: &str, peer: &PeerId) -> Option<ReadyState> {
    board
        .games
        .iter()
        .find(|g| g.game_id == game_id)?
        .peers
        .iter()
        .find(|p| p.peer_id == *peer)
        .map(|p| p.state)
}

/// Wait until `peer`'s board shows `who` as `state` in `game_id`.
async fn board_shows(peer: &mut Peer, game_id: &str, who: &PeerId, state: ReadyState) {
    let handle = &peer.handle;
    until(
        &mut peer.events,
        &format!("{who} {state:?} in {game_id}"),
        WITHIN,
        || state_in(&handle.ready_board(), game_id, who) == Some(state),
    )
    .await;
}

/// An organizer sharing `q3` and `ut`, with a lineup of both.
async fn organizer(root: &Path, upload_limit: u64) -> (Peer, Lineup) {
    let mut config = config(root, "organizer", vec![]);
    config.organizer = true;
    config.upload_limit = upload_limit;
    make_game(&config.games_dir, "q3", 3 * MIB);
    make_game(&config.games_dir, "ut", MIB);
    make_game(&config.games_dir, "racer", MIB);
    let mut org = Peer::start(config).await;
    for game in ["q3", "ut", "racer"] {
        org.indexed(game).await;
    }
    let q3 = version_of(&org.handle, "q3");
    let ut = version_of(&org.handle, "ut");
    let lineup = org
        .handle
        .publish_lineup(vec![draft(q3, Some("21:00")), draft(ut, None)])
        .unwrap();
    (org, lineup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lineup_published_on_one_peer_reaches_all_and_a_newer_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let (org, lineup) = organizer(dir.path(), 0).await;
    assert!(lineup.ours && lineup.organizer);
    assert_eq!(lineup.publisher_name, "organizer");
    assert_eq!(lineup.entries.len(), 2);
    assert_eq!(lineup.entries[0].at.as_deref(), Some("21:00"));
    assert_eq!(lineup.entries[0].state, ReadyState::Ready);
    // A knows the organizer; B knows only A: the lineup comes to B by
    // what A tells of the organizer (its record names the lineup).
    let mut a = Peer::start(config(dir.path(), "a", vec![org.addr()])).await;
    let mut b = Peer::start(config(dir.path(), "b", vec![a.addr()])).await;
    let publisher = org.handle.peer_id().clone();
    for peer in [&mut a, &mut b] {
        let seen = sees_lineup(peer, &publisher, lineup.version).await;
        assert_eq!(seen.publisher_name, "organizer");
        assert!(seen.organizer && seen.present && !seen.ours);
        let games: Vec<&str> = seen.entries.iter().map(|e| e.game_id.as_str()).collect();
        assert_eq!(games, ["q3", "ut"]);
        assert_eq!(seen.entries[0].title, "q3");
        assert_eq!(seen.entries[0].at.as_deref(), Some("21:00"));
        assert_eq!(seen.entries[0].state, ReadyState::Missing);
        assert!(seen.entries[0].total_size > 3 * MIB as u64);
    }

    // A newer lineup from the same organizer replaces the older.
    let racer = version_of(&org.handle, "racer");
    let newer = org
        .handle
        .publish_lineup(vec![draft(racer, Some("23:30"))])
        .unwrap();
    assert!(newer.version > lineup.version);
    for peer in [&mut a, &mut b] {
        let seen = sees_lineup(peer, &publisher, newer.version).await;
        assert_eq!(seen.entries.len(), 1);
        assert_eq!(seen.entries[0].game_id, "racer");
        assert_eq!(peer.handle.lineups().len(), 1, "replaced, not added");
    }

    // Withdrawn: gone everywhere.
    org.handle.publish_lineup(vec![]).unwrap();
    for peer in [&mut a, &mut b] {
        let handle = &peer.handle;
        until(&mut peer.events, "the lineup withdrawn", WITHIN, || {
            handle.lineups().is_empty()
        })
        .await;
    }
    stop([&org.handle, &a.handle, &b.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_the_lineup_installs_exactly_its_versions_and_keep_ready_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (org, lineup) = organizer(dir.path(), 0).await;
    let publisher = org.handle.peer_id().clone();
    // The fresh peer has an older q3 (same title, other bytes): outdated.
    let fresh_config = config(dir.path(), "fresh", vec![org.addr()]);
    make_game(&fresh_config.games_dir, "q3", MIB);
    let mut fresh = Peer::start(fresh_config).await;
    fresh.indexed("q3").await;
    let seen = sees_lineup(&mut fresh, &publisher, lineup.version).await;
    assert_eq!(seen.entries[0].state, ReadyState::Outdated);
    assert_eq!(seen.entries[1].state, ReadyState::Missing);

    let fetch = fresh.handle.get_lineup(None).await.unwrap();
    assert_eq!(fetch.queued.len(), 2, "{fetch:?}");
    assert_eq!(fetch.already, 0);
    let wanted: Vec<VersionId> = lineup.entries.iter().map(|e| e.version_id).collect();
    let handle = &fresh.handle;
    until(&mut fresh.events, "both installed", WITHIN, || {
        let library = handle.library();
        library.get("q3").map(|g| g.version_id) == Some(wanted[0])
            && library.get("ut").map(|g| g.version_id) == Some(wanted[1])
    })
    .await;
    assert!(
        !fresh.handle.library().contains_key("racer"),
        "not in the lineup"
    );
    let again = fresh
        .handle
        .get_lineup(Some(publisher.clone()))
        .await
        .unwrap();
    assert!(again.queued.is_empty() && again.already == 2, "{again:?}");

    // "Keep me ready": a game added to the lineup is queued by itself.
    fresh.handle.set_keep_ready(true);
    let racer = version_of(&org.handle, "racer");
    let mut entries: Vec<LineupDraftEntry> = wanted.iter().map(|v| draft(*v, None)).collect();
    entries.push(draft(racer, Some("late")));
    org.handle.publish_lineup(entries).unwrap();
    let end = outcome(&mut fresh.events, "racer", WITHIN).await;
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
    stop([&org.handle, &fresh.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_follows_downloads_installs_ready_checks_and_a_peer_leaving() {
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that the download is seen in progress (3 MiB at 1 MB/s).
    let (mut org, lineup) = organizer(dir.path(), 1_000_000).await;
    let q3 = lineup.entries[0].version_id;
    let mut fetcher = Peer::start(config(dir.path(), "fetcher", vec![org.addr()])).await;
    let mut idle = Peer::start(config(dir.path(), "idle", vec![org.addr()])).await;
    let (org_id, fetcher_id, idle_id) = (
        org.handle.peer_id().clone(),
        fetcher.handle.peer_id().clone(),
        idle.handle.peer_id().clone(),
    );
    sees_lineup(&mut fetcher, &org_id, lineup.version).await;
    sees_lineup(&mut idle, &org_id, lineup.version).await;
    board_shows(&mut org, "q3", &idle_id, ReadyState::Missing).await;
    board_shows(&mut org, "q3", &fetcher_id, ReadyState::Missing).await;
    let board = org.handle.ready_board();
    let row = &board.games[0];
    assert_eq!((row.game_id.as_str(), row.ready), ("q3", 1), "{row:?}");
    assert_eq!(row.peers.len(), 3);
    assert!(row.peers[0].us, "our own row first");
    assert_eq!(row.peers[0].name, "organizer");

    // A ready check reaches the attendees with what they still need.
    org.handle.ready_check(q3).unwrap();
    let check = wait_event(
        &mut idle.events,
        "the ready check",
        WITHIN,
        |event| match event {
            PeerEvent::ReadyCheck { check } => Some(check.clone()),
            _ => None,
        },
    )
    .await;
    assert_eq!(
        (check.game_id.as_str(), check.publisher_name.as_str()),
        ("q3", "organizer")
    );
    assert!(
        check.bytes_needed > 3 * MIB as u64 && check.eta_secs > 0,
        "{check:?}"
    );
    assert_eq!(check.state, ReadyState::Missing);

    // Downloading: seen by the organizer and by a third peer, with progress.
    fetcher.handle.download(&q3.to_hex()).await.unwrap();
    board_shows(&mut org, "q3", &fetcher_id, ReadyState::Downloading).await;
    board_shows(&mut idle, "q3", &fetcher_id, ReadyState::Downloading).await;
    let end = outcome(&mut fetcher.events, "q3", WITHIN).await;
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
    board_shows(&mut org, "q3", &fetcher_id, ReadyState::Ready).await;
    board_shows(&mut idle, "q3", &fetcher_id, ReadyState::Ready).await;
    let board = org.handle.ready_board();
    assert_eq!(board.games[0].ready, 2);
    assert_eq!(
        state_in(&board, "ut", &fetcher_id),
        Some(ReadyState::Missing)
    );

    // A peer that leaves leaves the board.
    idle.handle.shutdown();
    idle.handle.wait_stopped().await;
    let handle = &org.handle;
    until(
        &mut org.events,
        "the idle peer off the board",
        WITHIN,
        || state_in(&handle.ready_board(), "q3", &idle_id).is_none(),
    )
    .await;
    // The organizer was the only complete source while the fetcher
    // fetched; now the fetcher has it too: no last copy.
    assert!(org.handle.last_copies().is_empty());
    stop([&org.handle, &fetcher.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_copy_is_named_while_someone_fetches_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed_config = config(dir.path(), "seed", vec![]);
    seed_config.upload_limit = 500_000;
    make_game(&seed_config.games_dir, "q3", 4 * MIB);
    let mut seed = Peer::start(seed_config).await;
    seed.indexed("q3").await;
    assert!(seed.handle.last_copies().is_empty());
    let mut fetcher = Peer::start(config(dir.path(), "fetcher", vec![seed.addr()])).await;
    let handle = &fetcher.handle;
    until(&mut fetcher.events, "q3 listed", WITHIN, || {
        handle.catalog().iter().any(|e| e.game_id == "q3")
    })
    .await;
    fetcher.handle.download("q3").await.unwrap();
    let handle = &seed.handle;
    until(&mut seed.events, "a last copy", WITHIN, || {
        !handle.last_copies().is_empty()
    })
    .await;
    let last = &seed.handle.last_copies()[0];
    assert_eq!((last.game_id.as_str(), last.fetching), ("q3", 1));
    stop([&seed.handle, &fetcher.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_party_key_only_an_organizer_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let key = Some("our party".to_owned());
    let mut org_config = config(dir.path(), "organizer", vec![]);
    org_config.organizer = true;
    org_config.party_key = key.clone();
    make_game(&org_config.games_dir, "q3", MIB);
    let mut org = Peer::start(org_config).await;
    org.indexed("q3").await;
    let q3 = version_of(&org.handle, "q3");

    let mut rogue_config = config(dir.path(), "rogue", vec![org.addr()]);
    rogue_config.party_key = key.clone();
    make_game(&rogue_config.games_dir, "ut", MIB);
    // A lineup left in its data folder is not published either.
    fs::create_dir_all(&rogue_config.data_dir).unwrap();
    fs::write(
        rogue_config.data_dir.join(LINEUP_FILE),
        "version = 1\n[[games]]\ngame = \"ut\"\n",
    )
    .unwrap();
    let mut rogue = Peer::start(rogue_config).await;
    rogue.indexed("ut").await;
    let ut = version_of(&rogue.handle, "ut");
    let refused = rogue
        .handle
        .publish_lineup(vec![draft(ut, None)])
        .unwrap_err();
    assert_eq!(refused.code, FailureCode::NotOrganizer);
    let refused = rogue.handle.ready_check(ut).unwrap_err();
    assert_eq!(refused.code, FailureCode::NotOrganizer);

    let lineup = org.handle.publish_lineup(vec![draft(q3, None)]).unwrap();
    let org_id = org.handle.peer_id().clone();
    sees_lineup(&mut rogue, &org_id, lineup.version).await;
    // The organizer saw the rogue (it lists its games) and holds no
    // lineup from it.
    let handle = &org.handle;
    until(&mut org.events, "the rogue's game listed", WITHIN, || {
        handle.catalog().iter().any(|e| e.game_id == "ut")
    })
    .await;
    let lineups = org.handle.lineups();
    assert_eq!(lineups.len(), 1, "{lineups:?}");
    assert!(lineups[0].ours);
    assert_eq!(rogue.handle.lineups().len(), 1);
    stop([&org.handle, &rogue.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_mode_caps_seeding_while_the_game_runs_and_restores_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut player_config = config(dir.path(), "player", vec![]);
    player_config.upload_limit = 20_000_000;
    player_config.game_mode_upload_percent = 5;
    let root = player_config.games_dir.join("q3");
    make_game(&player_config.games_dir, "q3", MIB);
    // Runs until the test creates `stop` (at most 30 s).
    let script =
        "#!/bin/sh\ni=0\nwhile [ ! -e stop ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n";
    fs::write(root.join("run.sh"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        root.join("lanspread.toml"),
        "title = \"q3\"\nexecutable = \"run.sh\"\n",
    )
    .unwrap();
    let mut player = Peer::start(player_config).await;
    player.indexed("q3").await;
    let mut other = Peer::start(config(dir.path(), "other", vec![player.addr()])).await;
    let player_id = player.handle.peer_id().clone();
    assert_eq!(player.handle.upload_rate(), 20_000_000);
    assert!(!player.handle.game_mode().active);

    player.handle.launch_game("q3").unwrap();
    let mode = wait_event(
        &mut player.events,
        "game mode on",
        WITHIN,
        |event| match event {
            PeerEvent::GameModeChanged { game_mode } => Some(game_mode.clone()),
            _ => None,
        },
    )
    .await;
    assert!(mode.active && mode.games == ["q3"], "{mode:?}");
    assert_eq!(mode.upload_cap, 1_000_000);
    assert_eq!(player.handle.upload_rate(), 1_000_000);
    // The other peers see it playing (its status, on the board of a
    // lineup it publishes), and a new limit set meanwhile still leaves
    // seeding capped.
    let q3 = version_of(&player.handle, "q3");
    let lineup = player.handle.publish_lineup(vec![draft(q3, None)]).unwrap();
    sees_lineup(&mut other, &player_id, lineup.version).await;
    board_shows(&mut other, "q3", &player_id, ReadyState::Playing).await;
    board_shows(&mut player, "q3", &player_id, ReadyState::Playing).await;
    player.handle.set_upload_limit(40_000_000);
    assert_eq!(player.handle.upload_rate(), 2_000_000);

    fs::write(root.join("stop"), b"").unwrap();
    let mode = wait_event(
        &mut player.events,
        "game mode off",
        WITHIN,
        |event| match event {
            PeerEvent::GameModeChanged { game_mode } if !game_mode.active => {
                Some(game_mode.clone())
            }
            _ => None,
        },
    )
    .await;
    assert!(mode.games.is_empty(), "{mode:?}");
    assert_eq!(player.handle.upload_rate(), 40_000_000);
    stop([&player.handle, &other.handle]).await;
}
