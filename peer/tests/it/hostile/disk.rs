//! Attacks on names, installs and the disk (issue 13): a hostile peer lists
//! games whose ids are paths, whose names Windows cannot create or that
//! collide, games that pose as an installed one, games of empty folders,
//! and a host's own files are swapped for links after indexing. The victim
//! is a real in-process peer; each test asserts what is on its disk.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use lanspread_peer::{FailureCode, PeerEvent};
use lanspread_proto::wire::{ErrorCode, Request, Response};

use super::{Answer, FakeGame, HostileClient, HostileServer};
use crate::support::outcome;
use crate::support::{local_config, stop, until, Peer};
use lanspread_peer::net::client::RequestError;

/// A script listing every game of `games` and serving each.
fn list_all(games: Vec<FakeGame>) -> impl Fn(&Request) -> Vec<Answer> + Send + Sync + 'static {
    move |request| match request {
        Request::ListGames => vec![Answer::Frame(Response::Games(
            games.iter().map(|g| g.summary.clone()).collect(),
        ))],
        other => games
            .iter()
            .map(|g| g.serve(other))
            .find(|answers| !answers.is_empty())
            .unwrap_or_default(),
    }
}

/// A victim in `root/games` (+ `root/data`) that dials `hostile`.
async fn victim_of(hostile: &HostileServer, root: &Path) -> Peer {
    let games = root.join("games");
    fs::create_dir_all(&games).unwrap();
    let mut config = local_config(&games, &root.join("data"));
    config.peers = vec![hostile.as_peer()];
    config.library_quiet_period = Duration::from_millis(300);
    Peer::start(config).await
}

/// Wait until the victim's catalog lists `n` versions that some peer serves.
async fn listed(victim: &mut Peer, n: usize) {
    let handle = &victim.handle;
    until(
        &mut victim.events,
        &format!("{n} versions listed"),
        Duration::from_secs(10),
        || {
            handle
                .catalog()
                .iter()
                .filter(|e| !e.sources.is_empty())
                .count()
                >= n
        },
    )
    .await;
}

/// A victim that listed `v1` and `v2` of one game from a hostile server
/// and installed `v1`.
async fn v1_installed(v1: FakeGame, v2: FakeGame, root: &Path) -> (HostileServer, Peer) {
    let (game_id, v1_vid) = (v1.summary.game_id.clone(), v1.summary.version_id);
    let hostile = HostileServer::start(list_all(vec![v1, v2])).await;
    let mut victim = victim_of(&hostile, root).await;
    listed(&mut victim, 2).await;
    victim.handle.download(&v1_vid.to_hex()).await.unwrap();
    let end = outcome(&mut victim.events, &game_id, Duration::from_secs(30)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
    (hostile, victim)
}

/// Every file and folder below `root`, relative, `/`-separated.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel);
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Issue 13, "install outside the games folder": a peer listed games whose
/// ids were `../escaped`, an absolute path, `a/b`, `.hidden` or Windows
/// device names, and the downloader installed them there, executable bits
/// included. Each is refused with a reason; an honest game alongside still
/// installs; nothing appears outside the games folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_id_that_is_not_a_plain_folder_name_is_never_installed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("abs-escaped");
    let bad_ids = [
        "../escaped".to_owned(),
        outside.to_string_lossy().into_owned(),
        "a/b".to_owned(),
        ".hidden".to_owned(),
        "COM¹".to_owned(),
        "CONIN$".to_owned(),
        "..".to_owned(),
    ];
    let mut games: Vec<FakeGame> = bad_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let script = format!("#!/bin/sh\necho pwned {i}\n");
            FakeGame::new(id, &[("run.sh", script.as_bytes(), true)])
        })
        .collect();
    games.push(FakeGame::new(
        "arena",
        &[("arena.pak", &[7u8; 4096], false)],
    ));
    let versions: Vec<_> = games.iter().map(|g| g.summary.version_id).collect();
    let hostile = HostileServer::start(list_all(games)).await;
    let mut victim = victim_of(&hostile, dir.path()).await;
    listed(&mut victim, bad_ids.len() + 1).await;

    for (id, vid) in bad_ids.iter().zip(&versions) {
        let entry = victim
            .handle
            .catalog()
            .into_iter()
            .find(|e| e.version_id == *vid)
            .unwrap();
        let reason = entry.refused.unwrap_or_default();
        assert!(
            reason.contains("is not a plain folder name"),
            "{id}: {reason:?}"
        );
        for target in [vid.to_hex(), id.clone()] {
            let refused = victim.handle.download(&target).await;
            let error = refused.expect_err(&format!("download of {id:?} accepted"));
            assert!(
                matches!(error.code, FailureCode::Refused | FailureCode::NotFound),
                "{id}: {error:?}"
            );
        }
    }
    victim.handle.download("arena").await.unwrap();
    let end = outcome(&mut victim.events, "arena", Duration::from_secs(30)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );

    let top: BTreeSet<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, BTreeSet::from(["data".to_owned(), "games".to_owned()]));
    let games_tree: Vec<String> = tree(&dir.path().join("games"))
        .into_iter()
        .filter(|p| !p.starts_with(".lanspread-staging"))
        .collect();
    assert_eq!(games_tree, vec!["arena", "arena/arena.pak"]);
    stop([&victim.handle]).await;
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Issue 13, "delete an installed game": a game listed under the id of a
/// game the victim has installed replaced (and deleted) the victim's folder
/// with its saves. Now a folder is replaced only by another version of the
/// same game; this one is refused and the folder is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_posing_under_an_installed_games_id_never_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let q3 = dir.path().join("games/q3");
    write(&q3, "lanspread.toml", b"title = \"Quake III Arena\"\n");
    write(&q3, "baseq3/pak0.pk3", &[3u8; 5000]);
    write(&q3, "saves/slot1.sav", b"level 9, 99 frags");
    let before: Vec<(String, Vec<u8>)> = tree(&q3)
        .into_iter()
        .filter_map(|rel| Some((rel.clone(), fs::read(q3.join(&rel)).ok()?)))
        .collect();

    let poser = FakeGame::new(
        "q3",
        &[
            ("lanspread.toml", b"title = \"Free Skins\"\n", false),
            ("skins.exe", b"MZ not really skins", true),
        ],
    );
    let poser_vid = poser.summary.version_id;
    let hostile = HostileServer::start(list_all(vec![poser])).await;
    let mut victim = victim_of(&hostile, dir.path()).await;
    victim.indexed("q3").await;
    listed(&mut victim, 1).await;

    victim.handle.download(&poser_vid.to_hex()).await.unwrap();
    let end = outcome(&mut victim.events, "q3", Duration::from_secs(30)).await;
    let PeerEvent::DownloadFailed { code, message, .. } = &end else {
        panic!("the poser was installed: {end:?}");
    };
    assert_eq!(*code, FailureCode::DestinationExists, "{message}");
    assert!(message.contains("another game"), "{message}");
    let after: Vec<(String, Vec<u8>)> = tree(&q3)
        .into_iter()
        .filter_map(|rel| Some((rel.clone(), fs::read(q3.join(&rel)).ok()?)))
        .collect();
    assert_eq!(after, before, "the installed game changed");
    stop([&victim.handle]).await;
}

/// Issue 13: ordinary updates deleted files the game never shipped (saves,
/// configs). An update carries them over; a file of the player's at a path
/// the new version ships is kept next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_carries_the_players_files_over() {
    let v1 = FakeGame::new(
        "q3",
        &[
            (
                "lanspread.toml",
                b"title = \"Quake III Arena\"\nversion = \"1\"\n",
                false,
            ),
            ("baseq3/pak0.pk3", &[1u8; 3000], false),
            ("old-only.txt", b"dropped in v2", false),
        ],
    );
    let v2 = FakeGame::new(
        "q3",
        &[
            (
                "lanspread.toml",
                b"title = \"Quake III Arena\"\nversion = \"2\"\n",
                false,
            ),
            ("baseq3/pak0.pk3", &[2u8; 3000], false),
            ("q3config.cfg", b"default config", false),
        ],
    );
    let v2_vid = v2.summary.version_id;
    let dir = tempfile::tempdir().unwrap();
    let (_hostile, mut victim) = v1_installed(v1, v2, dir.path()).await;
    let q3 = dir.path().join("games/q3");
    write(&q3, "saves/slot1.sav", b"level 9");
    write(&q3, "q3config.cfg", b"my bindings");

    victim.handle.download(&v2_vid.to_hex()).await.unwrap();
    let end = outcome(&mut victim.events, "q3", Duration::from_secs(30)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
    assert_eq!(fs::read(q3.join("saves/slot1.sav")).unwrap(), b"level 9");
    assert_eq!(
        fs::read(q3.join("q3config.cfg")).unwrap(),
        b"default config"
    );
    assert_eq!(
        fs::read(q3.join("q3config.cfg.lanspread-kept")).unwrap(),
        b"my bindings"
    );
    assert_eq!(
        fs::read(q3.join("baseq3/pak0.pk3")).unwrap(),
        vec![2u8; 3000]
    );
    assert!(!q3.join("old-only.txt").exists());
    let staging = dir.path().join("games/.lanspread-staging");
    let left: Vec<_> = fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in staging: {left:?}");
    stop([&victim.handle]).await;
}

/// Issue 13, "cost a victim 50k inodes" and names Windows cannot create or
/// that collide there: each manifest is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_of_empty_folders_device_names_or_colliding_names_are_refused() {
    let mut hollow = FakeGame::new("hollow", &[("a", b"xy", false)]);
    hollow.manifest.empty_dirs = (0..50_000).map(|i| format!("d{i:05}")).collect();
    hollow.remanifest();
    let games = vec![
        hollow,
        FakeGame::new(
            "devices",
            &[("CONIN$", b"x", false), ("COM\u{b9}.txt", b"y", false)],
        ),
        FakeGame::new(
            "cases",
            &[("Save.dat", b"x", false), ("save.dat", b"y", false)],
        ),
        FakeGame::new(
            "forms",
            &[("cafe\u{301}/a", b"x", false), ("caf\u{e9}/b", b"y", false)],
        ),
    ];
    let ids: Vec<String> = games.iter().map(|g| g.summary.game_id.clone()).collect();
    let hostile = HostileServer::start(list_all(games)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut victim = victim_of(&hostile, dir.path()).await;
    listed(&mut victim, ids.len()).await;
    for id in &ids {
        victim.handle.download(id).await.unwrap();
        let end = outcome(&mut victim.events, id, Duration::from_secs(60)).await;
        let PeerEvent::DownloadFailed { code, message, .. } = &end else {
            panic!("{id} installed: {end:?}");
        };
        assert_eq!(*code, FailureCode::BadManifest, "{id}: {message}");
    }
    let written = tree(&dir.path().join("games"));
    assert!(
        written.len() < 10,
        "{} entries written: {written:?}",
        written.len()
    );
    stop([&victim.handle]).await;
}

fn set_old_mtime(path: &Path) {
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    fs::File::open(path)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
}

/// Issue 13, "read outside the game": a file of an indexed game replaced by
/// a link (or a folder above it replaced by a link to another folder) after
/// The host refused to read a piece (`Error Internal`); `what` names the
/// trick when it did not.
fn refused(answer: Result<Vec<u8>, RequestError>, what: &str) {
    assert!(
        matches!(
            &answer,
            Err(RequestError::Remote {
                code: ErrorCode::Internal,
                ..
            })
        ),
        "{what}: {:?}",
        answer.map(|d| String::from_utf8_lossy(&d).into_owned())
    );
}

/// indexing was followed when served. The server refuses to read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_file_swapped_for_a_link_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    let arena = games.join("arena");
    write(&arena, "data/level.pak", &[b'g'; 4096]);
    write(&arena, "readme.txt", b"game text!");
    let secret = dir.path().join("secret");
    write(&secret, "level.pak", &[b'S'; 4096]);
    write(&secret, "readme.txt", b"SECRET KEY");
    for rel in ["data/level.pak", "readme.txt", "data", ""] {
        set_old_mtime(&arena.join(rel));
    }
    let mut config = local_config(&games, &dir.path().join("data"));
    // Long: the swapped files must still be served from the old index.
    config.library_quiet_period = Duration::from_secs(120);
    let mut host = Peer::start(config).await;
    host.indexed("arena").await;
    let vid = host.handle.library()["arena"].version_id;

    let client = HostileClient::new();
    let conn = client
        .connect(host.handle.local_addr(), None, None, 0)
        .await
        .unwrap();
    let fetch = || async {
        let mut got = Vec::new();
        conn.get_pieces(vid, vec![0], |_, data| got = data)
            .await
            .map(|()| got)
    };
    let honest = fetch().await.expect("the intact game is served");
    assert!(!honest.windows(6).any(|w| w == b"SECRET"));

    // The file swapped for a link to a file of the same size.
    let readme = arena.join("readme.txt");
    fs::rename(&readme, dir.path().join("readme.bak")).unwrap();
    std::os::unix::fs::symlink(secret.join("readme.txt"), &readme).unwrap();
    refused(fetch().await, "served through a link");
    fs::remove_file(&readme).unwrap();
    fs::rename(dir.path().join("readme.bak"), &readme).unwrap();

    // The folder above a file swapped for a link to another folder.
    let data = arena.join("data");
    fs::rename(&data, dir.path().join("data.bak")).unwrap();
    std::os::unix::fs::symlink(&secret, &data).unwrap();
    refused(fetch().await, "served through a linked folder");
    conn.goodbye().await;
    stop([&host.handle]).await;
}

/// Issue 13, "hide a host's games": one 5 MB description in
/// `lanspread.toml` made the host's game list too big to send, so no peer
/// saw any of its games. The description is cut; every game is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_description_hides_none_of_a_hosts_games() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Peer::named(dir.path(), "host", vec![], 0).await;
    let description = "d".repeat(5 << 20);
    write(
        &host.games,
        "big/lanspread.toml",
        format!("title = \"Big\"\ndescription = \"{description}\"\n").as_bytes(),
    );
    write(&host.games, "small/game.bin", b"small");
    host.indexed("big").await;
    host.indexed("small").await;
    let mut victim = Peer::named(dir.path(), "victim", vec![host.addr()], 0).await;
    let handle = &victim.handle;
    until(
        &mut victim.events,
        "both of the host's games listed",
        Duration::from_secs(15),
        || {
            handle
                .catalog()
                .iter()
                .filter(|e| !e.sources.is_empty())
                .count()
                == 2
        },
    )
    .await;
    let big = handle
        .catalog()
        .into_iter()
        .find(|e| e.game_id == "big")
        .unwrap();
    assert_eq!(
        big.description.map(|d| d.len()),
        Some(lanspread_proto::wire::MAX_DESCRIPTION_BYTES)
    );
    stop([&host.handle, &victim.handle]).await;
}

/// The CLI says in words why a listed game is refused and which names its
/// sources disagree on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_why_a_game_is_refused() {
    let games = vec![
        FakeGame::new("../escaped", &[("run.sh", b"#!/bin/sh\n", true)]),
        FakeGame::new("fine", &[("a", b"a", false)]),
    ];
    let hostile = HostileServer::start(list_all(games)).await;
    let peer = hostile.as_peer();
    let out = tokio::task::spawn_blocking(move || {
        crate::support::output_within(
            &mut crate::support::peer_command([
                "games",
                "--no-mdns",
                "-q",
                "--wait",
                "2",
                "--peer",
                &peer,
            ]),
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("refused: game id `../escaped` is not a plain folder name"),
        "{stdout}"
    );
}

/// Issue 13: which peer named a version decided where it went. Sources
/// that disagree on the game id are shown as such; downloading by version
/// alone is refused with the names, and the user's choice decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_that_disagree_on_a_game_id_never_choose_the_folder() {
    let honest = FakeGame::new("arena", &[("arena.pak", &[5u8; 4096], false)]);
    let mut liar = FakeGame::new("arena", &[("arena.pak", &[5u8; 4096], false)]);
    liar.summary.game_id = "saves".into();
    liar.summary.title = "Saves".into();
    let vid = honest.summary.version_id;
    let a = HostileServer::start(list_all(vec![honest])).await;
    let b = HostileServer::start(list_all(vec![liar])).await;
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    fs::create_dir_all(&games).unwrap();
    let mut config = local_config(&games, &dir.path().join("data"));
    config.peers = vec![a.as_peer(), b.as_peer()];
    let mut victim = Peer::start(config).await;
    let handle = &victim.handle;
    until(
        &mut victim.events,
        "both sources listed",
        Duration::from_secs(10),
        || handle.catalog().iter().any(|e| e.sources.len() == 2),
    )
    .await;
    let entry = handle.catalog().into_iter().next().unwrap();
    let conflict = entry.conflict.expect("the disagreement is shown");
    assert_eq!(
        conflict.game_ids,
        vec!["arena".to_owned(), "saves".to_owned()]
    );

    let refused = handle.download(&vid.to_hex()).await.unwrap_err();
    assert_eq!(refused.code, FailureCode::NameConflict, "{refused}");
    assert!(refused.message.contains("`arena`, `saves`"), "{refused}");
    handle
        .download(&format!("{}:arena", vid.to_hex()))
        .await
        .unwrap();
    let end = outcome(&mut victim.events, "arena", Duration::from_secs(30)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
    let installed: Vec<String> = tree(&games)
        .into_iter()
        .filter(|p| !p.starts_with(".lanspread-staging"))
        .collect();
    assert_eq!(installed, vec!["arena", "arena/arena.pak"]);
    stop([&victim.handle]).await;
}

/// A game lanspread started is never changed under its player (on Windows
/// its files are locked): a verified update waits, says so, and installs
/// when the game exits, carrying over what the game wrote meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_a_running_game_waits_for_it_to_exit() {
    // Runs until the test creates `stop` (at most 30 s), then writes a file.
    let script = b"#!/bin/sh\ni=0\nwhile [ ! -e stop ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\necho done > exited.txt\n";
    let toml = b"title = \"Quake III Arena\"\nexecutable = \"run.sh\"\n";
    let v1 = FakeGame::new(
        "q3",
        &[
            ("lanspread.toml", toml, false),
            ("run.sh", script, true),
            ("pak0.pk3", &[1u8; 3000], false),
        ],
    );
    let v2 = FakeGame::new(
        "q3",
        &[
            ("lanspread.toml", toml, false),
            ("run.sh", script, true),
            ("pak0.pk3", &[2u8; 3000], false),
        ],
    );
    let v2_vid = v2.summary.version_id;
    let dir = tempfile::tempdir().unwrap();
    let (_hostile, mut victim) = v1_installed(v1, v2, dir.path()).await;

    victim.handle.launch_game("q3").unwrap();
    victim.handle.download(&v2_vid.to_hex()).await.unwrap();
    let message = crate::support::wait_event(
        &mut victim.events,
        "the update waits",
        Duration::from_secs(30),
        |event| match event {
            PeerEvent::DownloadWaiting { message, .. } => Some(message.clone()),
            PeerEvent::DownloadCompleted { .. } | PeerEvent::DownloadFailed { .. } => {
                panic!("ended while the game runs: {event:?}")
            }
            _ => None,
        },
    )
    .await;
    assert!(message.contains("is running"), "{message}");
    let q3 = dir.path().join("games/q3");
    assert_eq!(fs::read(q3.join("pak0.pk3")).unwrap(), vec![1u8; 3000]);
    fs::write(q3.join("stop"), b"").unwrap();
    let end = outcome(&mut victim.events, "q3", Duration::from_secs(30)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
    assert_eq!(fs::read(q3.join("pak0.pk3")).unwrap(), vec![2u8; 3000]);
    assert_eq!(fs::read(q3.join("exited.txt")).unwrap(), b"done\n");
    stop([&victim.handle]).await;
}
