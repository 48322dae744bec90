//! Downloads between real peers on 127.0.0.1, each checking that the
//! installed tree is byte-identical to the source.
#![cfg(unix)]

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lanspread_peer::net::client::PeerConnection;
use lanspread_peer::{PeerEvent, PeerRuntimeHandle};
use tokio::sync::broadcast;

use crate::hostile::HostileClient;
use crate::support::{
    assert_identical, json_lines, local_config, make_game, named_config, outcome, output_within,
    peer_command, stop, until, wait_event, wait_json, ChildGuard, Peer, ServeChild, MIB,
};

/// Sources (complete or partial) of the not-installed `game` in the catalog.
fn sources(peer: &PeerRuntimeHandle, game: &str) -> usize {
    peer.catalog()
        .iter()
        .filter(|e| e.game_id == game && !e.installed)
        .map(|e| e.sources.len() + e.partial_sources.len())
        .max()
        .unwrap_or(0)
}

/// Wait until the download has at least `bytes` done.
async fn progressed(events: &mut broadcast::Receiver<PeerEvent>, bytes: u64) {
    wait_event(
        events,
        &format!("{bytes} bytes downloaded"),
        Duration::from_secs(30),
        |event| match event {
            PeerEvent::DownloadProgress { bytes_done, .. } if *bytes_done >= bytes => Some(()),
            _ => None,
        },
    )
    .await
}

/// A peer that knows `addrs`, once `n` of them offer `arena`.
async fn downloader(
    root: &Path,
    name: &str,
    addrs: Vec<String>,
    n: usize,
    within: Duration,
) -> Peer {
    let mut down = Peer::named(root, name, addrs, 0).await;
    let handle = &down.handle;
    until(&mut down.events, "sources", within, || {
        sources(handle, "arena") >= n
    })
    .await;
    down
}

/// A source sharing `arena` (`arena_size` bytes) and `racer` (1 MiB), its
/// upload capped at `upload_limit`, and a downloader that runs one download
/// at a time and sees both; with the downloader's config, to start it again.
pub async fn one_slot_for_two_games(
    root: &Path,
    arena_size: usize,
    upload_limit: u64,
) -> (Peer, Peer, lanspread_peer::PeerConfig) {
    let mut source = Peer::named(root, "source", vec![], upload_limit).await;
    make_game(&source.games, "arena", arena_size);
    make_game(&source.games, "racer", MIB);
    source.indexed("arena").await;
    source.indexed("racer").await;
    let games = root.join("down/games");
    fs::create_dir_all(&games).unwrap();
    let mut config = local_config(&games, &root.join("down/data"));
    config.peers = vec![source.addr()];
    config.parallel_downloads = 1;
    let mut down = Peer::start(config.clone()).await;
    let handle = &down.handle;
    until(&mut down.events, "sources", Duration::from_secs(10), || {
        sources(handle, "arena") == 1 && sources(handle, "racer") == 1
    })
    .await;
    (source, down, config)
}

/// A source sharing an `arena` of `size` bytes, its upload capped at
/// `upload_limit`, and a downloader that sees it.
async fn arena_and_downloader(root: &Path, size: usize, upload_limit: u64) -> (Peer, Peer) {
    let mut source = Peer::named(root, "source", vec![], upload_limit).await;
    make_game(&source.games, "arena", size);
    source.indexed("arena").await;
    let down = downloader(
        root,
        "down",
        vec![source.addr()],
        1,
        Duration::from_secs(10),
    )
    .await;
    (source, down)
}

fn assert_completed(end: &PeerEvent) {
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source() {
    let dir = tempfile::tempdir().unwrap();
    let (source, mut down) = arena_and_downloader(dir.path(), 5 * MIB + 123, 0).await;

    down.handle.download("arena").await.unwrap();
    let end = outcome(&mut down.events, "arena", Duration::from_secs(30)).await;

    assert_completed(&end);
    assert_identical(&source.games.join("arena"), &down.games.join("arena"));
    let installed = down.handle.library()["arena"].clone();
    let shared = source.handle.library()["arena"].clone();
    assert_eq!(installed.version_id, shared.version_id, "offered at once");
    // With its title and picture, as the source offers it.
    assert_eq!(installed.metadata, shared.metadata);
    assert_eq!(
        installed.thumbnail.as_ref().map(|t| t.hash),
        shared.thumbnail.as_ref().map(|t| t.hash)
    );
    assert!(installed.thumbnail.is_some());
    // The library took the verified hashes: the installed game is not re-hashed.
    assert_eq!(down.handle.bytes_hashed(), 0);
    assert!(fs::read_dir(down.games.join(".lanspread-staging"))
        .unwrap()
        .next()
        .is_none());
    stop([&source.handle, &down.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sources_one_killed_mid_download() {
    let dir = tempfile::tempdir().unwrap();
    const LIMIT: u64 = 6 * MIB as u64;
    let mut a = Peer::named(dir.path(), "a", vec![], LIMIT).await;
    let mut b = Peer::named(dir.path(), "b", vec![], LIMIT).await;
    make_game(&a.games, "arena", 40 * MIB);
    make_game(&b.games, "arena", 40 * MIB);
    let c_games = dir.path().join("c/games");
    make_game(&c_games, "arena", 40 * MIB);
    // A process, so it can be killed for real.
    let mut c = ServeChild::start(
        &c_games,
        &dir.path().join("c/data"),
        &["--upload-limit", &LIMIT.to_string()],
    );
    a.indexed("arena").await;
    b.indexed("arena").await;
    let addrs = vec![a.addr(), b.addr(), c.addr.to_string()];
    let mut down = downloader(dir.path(), "down", addrs, 3, Duration::from_secs(20)).await;

    down.handle.download("arena").await.unwrap();
    progressed(&mut down.events, 8 * MIB as u64).await;
    c.kill();
    let end = outcome(&mut down.events, "arena", Duration::from_secs(60)).await;

    assert_completed(&end);
    assert_identical(&a.games.join("arena"), &down.games.join("arena"));
    assert!(
        a.handle.bytes_served() > 0 && b.handle.bytes_served() > 0,
        "both others used"
    );
    stop([&a.handle, &b.handle, &down.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_serving_wrong_bytes_is_caught_and_banned() {
    let dir = tempfile::tempdir().unwrap();
    let mut honest = Peer::named(dir.path(), "honest", vec![], 4 * MIB as u64).await;
    make_game(&honest.games, "arena", 12 * MIB);
    honest.indexed("arena").await;
    // The liar lists the honest game's manifest and serves wrong bytes for
    // every piece. (A peer's own file changed after indexing is no longer
    // served at all: see `fsx::open_below`.)
    let game = honest.handle.library()["arena"].clone();
    let mut data = Vec::new();
    for file in &game.manifest.files {
        data.extend(fs::read(game.root.join(&file.path)).unwrap());
    }
    for byte in data.iter_mut().step_by(4096) {
        *byte ^= 0x5a;
    }
    let lie = crate::hostile::FakeGame {
        manifest: (*game.manifest).clone(),
        data,
        summary: game.summary(),
    };
    let liar = crate::hostile::HostileServer::start(move |request| lie.serve(request)).await;

    let mut down = downloader(
        dir.path(),
        "down",
        vec![honest.addr(), liar.as_peer()],
        2,
        Duration::from_secs(20),
    )
    .await;
    let mut banned = down.handle.subscribe();

    down.handle.download("arena").await.unwrap();
    let end = outcome(&mut down.events, "arena", Duration::from_secs(60)).await;

    assert_completed(&end);
    assert_identical(&honest.games.join("arena"), &down.games.join("arena"));
    let liar_id = liar.peer_id.clone();
    let mut saw_ban = false;
    while let Ok(event) = banned.try_recv() {
        if let PeerEvent::SourceBanned { peer_id, .. } = event {
            saw_ban |= peer_id == liar_id;
        }
    }
    assert!(saw_ban, "the liar was banned");
    stop([&honest.handle, &down.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_downloader_resumes_and_refetches_only_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    const SIZE: usize = 32 * MIB;
    let mut source = Peer::named(dir.path(), "source", vec![], 8 * MIB as u64).await;
    make_game(&source.games, "arena", SIZE);
    source.indexed("arena").await;
    let games = dir.path().join("down/games");
    fs::create_dir_all(&games).unwrap();
    let (addr, data_dir, games_dir) = (source.addr(), dir.path().join("down/data"), games.clone());
    let command = move || {
        let mut command = peer_command([
            "download",
            "arena",
            "--no-mdns",
            "-q",
            "--json",
            "--wait",
            "20",
            "--peer",
        ]);
        command
            .arg(&addr)
            .arg("--games")
            .arg(&games_dir)
            .arg("--data")
            .arg(&data_dir);
        command
    };
    let first_log = dir.path().join("first.log");
    let mut first = ChildGuard::spawn(
        command()
            .env("RUST_LOG", "lanspread_peer=debug")
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&first_log).unwrap()),
    );
    let events = json_lines(first.0.stdout.take().unwrap());
    // Once about half is verified and written, kill -9.
    let half = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_json(
            &events,
            "half downloaded",
            Duration::from_secs(30),
            |event| {
                let done = event["bytesDone"].as_u64()?;
                (event["type"] == "downloadProgress" && done >= (SIZE / 2) as u64).then_some(())
            },
        )
    }));
    if let Err(panic) = half {
        let log = fs::read_to_string(&first_log).unwrap_or_default();
        eprintln!("the first run's log:\n{log}");
        std::panic::resume_unwind(panic);
    }
    first.kill();
    let served_before = source.handle.bytes_served();

    // On a blocking thread: the source runs on this test's runtime.
    let mut again = command();
    let out =
        tokio::task::spawn_blocking(move || output_within(&mut again, Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_identical(&source.games.join("arena"), &games.join("arena"));

    let total = source.handle.library()["arena"].total_size;
    let refetched = source.handle.bytes_served() - total;
    println!(
        "killed after {} MiB served; re-fetched {} KiB",
        served_before >> 20,
        refetched >> 10
    );
    // In flight at most: 2 streams x 8 pieces + 4 pending writes, 1 MiB each;
    // and what was written since the last flush, after which pieces are
    // recorded (a flush a second, at the 8 MiB/s limit).
    assert!(refetched <= 28 * MIB as u64, "re-fetched {refetched} bytes");
    stop([&source.handle]).await;
}

/// Also pins a race: downloading again right after `DownloadCancelled` was
/// ignored while the cancelled run was still letting go of its slot.
/// `connections_from` polled until it is `want`, for `what`.
async fn connections_become(
    source: &PeerRuntimeHandle,
    from: &PeerRuntimeHandle,
    want: usize,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while source.connections_from(from.peer_id()) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} connections, not {want}",
            source.connections_from(from.peer_id())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_source_gets_a_second_connection_closed_when_the_download_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Peer::named(dir.path(), "source", vec![], 8 * MIB as u64).await;
    make_game(&source.games, "arena", 24 * MIB);
    source.indexed("arena").await;
    let mut config = named_config(dir.path(), "down", vec![source.addr()], 0);
    // Any measured source is "fast" here: the rule, not the rate, is tested.
    config.second_connection_at = 1;
    let mut down = Peer::start(config).await;
    let handle = &down.handle;
    until(&mut down.events, "sources", Duration::from_secs(10), || {
        sources(handle, "arena") == 1
    })
    .await;
    connections_become(&source.handle, &down.handle, 1, "before the download").await;

    down.handle.download("arena").await.unwrap();
    let (source_handle, down_id) = (&source.handle, down.handle.peer_id().clone());
    until(
        &mut down.events,
        "a second connection",
        Duration::from_secs(20),
        || source_handle.connections_from(&down_id) == 2,
    )
    .await;
    let end = outcome(&mut down.events, "arena", Duration::from_secs(30)).await;
    assert_completed(&end);
    assert_identical(&source.games.join("arena"), &down.games.join("arena"));
    connections_become(&source.handle, &down.handle, 1, "after the download").await;
    stop([&source.handle, &down.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_download_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (source, mut down) = arena_and_downloader(dir.path(), 24 * MIB, 8 * MIB as u64).await;

    let version_id = down.handle.download("arena").await.unwrap();
    progressed(&mut down.events, 6 * MIB as u64).await;
    assert!(down
        .handle
        .cancel_download(version_id, false)
        .await
        .unwrap());
    let end = outcome(&mut down.events, "arena", Duration::from_secs(10)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCancelled { .. }),
        "{end:?}"
    );
    assert!(!down.games.join("arena").exists(), "not installed");
    let staging = down
        .games
        .join(".lanspread-staging")
        .join(version_id.to_hex());
    assert!(staging.exists(), "staging kept for a resume");
    let served_at_cancel = source.handle.bytes_served();

    down.handle.download("arena").await.unwrap();
    let end = outcome(&mut down.events, "arena", Duration::from_secs(30)).await;
    assert_completed(&end);
    assert_identical(&source.games.join("arena"), &down.games.join("arena"));
    let second_run = source.handle.bytes_served() - served_at_cancel;
    let total = 24 * MIB as u64;
    assert!(
        second_run < total,
        "the resume fetched {second_run} of {total} bytes"
    );
    stop([&source.handle, &down.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_a_paused_download_deletes_its_staging_data() {
    let dir = tempfile::tempdir().unwrap();
    let (source, mut down) = arena_and_downloader(dir.path(), 16 * MIB, 4 * MIB as u64).await;
    let version_id = down.handle.download("arena").await.unwrap();
    progressed(&mut down.events, 2 * MIB as u64).await;
    assert!(down
        .handle
        .cancel_download(version_id, false)
        .await
        .unwrap());
    outcome(&mut down.events, "arena", Duration::from_secs(10)).await;
    let staging = down
        .games
        .join(".lanspread-staging")
        .join(version_id.to_hex());
    assert!(staging.exists(), "paused with its data");
    // Discarded right after `DownloadCancelled`: the download has let go
    // of its slot before it says so (a discard in between used to be taken
    // for the cancel of a running download and lost).
    assert!(down.handle.cancel_download(version_id, true).await.unwrap());
    assert!(!staging.exists(), "discarded");
    assert!(
        !down.handle.cancel_download(version_id, true).await.unwrap(),
        "nothing left"
    );
    stop([&source.handle, &down.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_gone_ends_with_peers_gone() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("src/games");
    make_game(&games, "arena", 24 * MIB);
    // A process, so it can be killed for real.
    let mut source = ServeChild::start(
        &games,
        &dir.path().join("src/data"),
        &["--upload-limit", &(4 * MIB).to_string()],
    );
    let mut down = downloader(
        dir.path(),
        "down",
        vec![source.addr.to_string()],
        1,
        Duration::from_secs(20),
    )
    .await;

    let version_id = down.handle.download("arena").await.unwrap();
    progressed(&mut down.events, 2 * MIB as u64).await;
    source.kill();
    let end = outcome(&mut down.events, "arena", Duration::from_secs(15)).await;

    assert!(
        matches!(end, PeerEvent::DownloadPeersGone { .. }),
        "{end:?}"
    );
    let staging = down
        .games
        .join(".lanspread-staging")
        .join(version_id.to_hex());
    assert!(staging.exists(), "staging kept");
    assert!(!down.games.join("arena").exists());
    stop([&down.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_fetches_only_the_changed_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (mut source, mut down) = arena_and_downloader(dir.path(), 16 * MIB, 0).await;
    down.handle.download("arena").await.unwrap();
    let end = outcome(&mut down.events, "arena", Duration::from_secs(30)).await;
    assert_completed(&end);
    let v1 = down.handle.library()["arena"].version_id;

    // The host patches one byte in the middle of the big file.
    let path = source.games.join("arena/data/big.pak");
    let mut data = fs::read(&path).unwrap();
    data[8 * MIB + 5] ^= 1;
    fs::write(&path, data).unwrap();
    let source_handle = &source.handle;
    until(
        &mut source.events,
        "v2 indexed",
        Duration::from_secs(20),
        || source_handle.library()["arena"].version_id != v1,
    )
    .await;
    let down_handle = &down.handle;
    until(
        &mut down.events,
        "v2 offered",
        Duration::from_secs(20),
        || {
            down_handle
                .catalog()
                .iter()
                .any(|e| e.installed && e.update_to.is_some())
        },
    )
    .await;

    let served_before = source.handle.bytes_served();
    let v2 = source.handle.library()["arena"].version_id;
    down.handle.download(&v2.to_hex()).await.unwrap();
    let end = outcome(&mut down.events, "arena", Duration::from_secs(30)).await;
    assert_completed(&end);
    assert_identical(&source.games.join("arena"), &down.games.join("arena"));
    let fetched = source.handle.bytes_served() - served_before;
    println!("update fetched {fetched} bytes");
    assert_eq!(fetched, MIB as u64, "exactly the one changed piece");
    assert_eq!(down.handle.library()["arena"].version_id, v2);
    stop([&source.handle, &down.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_part_of_the_game_serves_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    // The seed is slow; the first downloader gets a head start.
    let mut seed = Peer::named(dir.path(), "seed", vec![], 4 * MIB as u64).await;
    make_game(&seed.games, "arena", 24 * MIB);
    seed.indexed("arena").await;
    let mut early = downloader(
        dir.path(),
        "early",
        vec![seed.addr()],
        1,
        Duration::from_secs(10),
    )
    .await;
    early.handle.download("arena").await.unwrap();
    progressed(&mut early.events, 8 * MIB as u64).await;

    let mut late = downloader(
        dir.path(),
        "late",
        vec![seed.addr(), early.addr()],
        2,
        Duration::from_secs(20),
    )
    .await;
    late.handle.download("arena").await.unwrap();

    let end = outcome(&mut late.events, "arena", Duration::from_secs(60)).await;
    assert_completed(&end);
    assert_identical(&seed.games.join("arena"), &late.games.join("arena"));
    assert!(
        early.handle.bytes_served() > 0,
        "the partial peer served pieces"
    );
    let _ = outcome(&mut early.events, "arena", Duration::from_secs(60)).await;
    stop([&seed.handle, &early.handle, &late.handle]).await;
}

/// A seed uploading at `seed_rate` bytes a second, a peer downloading its
/// 16-MiB `arena` that has `done` bytes of it, and a connection to that peer
/// from a client of its own (a watcher).
async fn watched_download(
    root: &Path,
    seed_rate: u64,
    done: u64,
) -> (
    Peer,
    Peer,
    lanspread_proto::VersionId,
    PeerConnection,
    HostileClient,
) {
    let mut seed = Peer::named(root, "seed", vec![], seed_rate).await;
    make_game(&seed.games, "arena", 16 * MIB);
    seed.indexed("arena").await;
    let version_id = seed.handle.library()["arena"].version_id;
    let mut early = downloader(root, "early", vec![seed.addr()], 1, Duration::from_secs(10)).await;
    early.handle.download("arena").await.unwrap();
    progressed(&mut early.events, done).await;
    let client = HostileClient::new();
    let conn = client
        .connect(early.addr().parse().unwrap(), None, None, 0)
        .await
        .unwrap();
    (seed, early, version_id, conn, client)
}

/// A peer downloading a game tells a watcher of its pieces as they come:
/// the whole set first, then what changed, and once every piece is there,
/// the end of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_source_tells_its_watchers_of_each_new_piece() {
    use lanspread_proto::wire::Response;
    use lanspread_proto::PieceSet;

    let dir = tempfile::tempdir().unwrap();
    let (seed, early, version_id, conn, _client) =
        watched_download(dir.path(), 4 * MIB as u64, 2 * MIB as u64).await;
    let mut watch = conn.watch_have_set(version_id).await.unwrap();
    let (mut known, mut changes, mut wholes) = (None::<PieceSet>, 0, 0);
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(frame) = watch.next().await.unwrap() {
            match frame {
                Response::HaveSet { n_pieces, bits, .. } => {
                    wholes += 1;
                    known = PieceSet::from_bits(n_pieces as usize, bits);
                }
                Response::HaveChanges { have, .. } => {
                    changes += 1;
                    let set = known.as_mut().expect("a whole set comes first");
                    for p in have {
                        assert!(!set.contains(p as usize), "piece {p} told twice");
                        set.insert(p as usize);
                    }
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch ends once the game is complete");
    let known = known.expect("a whole set");
    println!("{wholes} whole sets, {changes} changes");
    assert_eq!(known.count(), known.len(), "every piece, in the end");
    assert!(wholes >= 1, "a whole set first");
    assert!(changes >= 2, "pieces told as they came ({changes} changes)");
    stop([&seed.handle, &early.handle]).await;
}

/// Have-set watches cost their server a task each: one machine holds at
/// most `MAX_WATCHES_PER_IP`; the next is answered `Busy`, and a watch let
/// go makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_holds_a_bounded_number_of_watches() {
    use lanspread_peer::net::client::RequestError;
    use lanspread_peer::net::server::MAX_WATCHES_PER_IP;
    use lanspread_proto::wire::{ErrorCode, Response};

    let dir = tempfile::tempdir().unwrap();
    let (seed, early, version_id, conn, _client) =
        watched_download(dir.path(), MIB as u64, MIB as u64).await;
    let mut watches = Vec::new();
    for _ in 0..MAX_WATCHES_PER_IP {
        let mut watch = conn.watch_have_set(version_id).await.unwrap();
        let first = watch.next().await.unwrap();
        assert!(matches!(first, Some(Response::HaveSet { .. })), "{first:?}");
        watches.push(watch);
    }
    let mut over = conn.watch_have_set(version_id).await.unwrap();
    assert!(
        matches!(
            over.next().await,
            Err(RequestError::Remote {
                code: ErrorCode::Busy,
                ..
            })
        ),
        "one watch too many"
    );
    drop(watches.pop());
    let freed = async {
        loop {
            let mut watch = conn.watch_have_set(version_id).await.unwrap();
            if let Ok(Some(Response::HaveSet { .. })) = watch.next().await {
                return watch;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let again = tokio::time::timeout(Duration::from_secs(5), freed).await;
    assert!(again.is_ok(), "a watch let go makes room");
    drop(again);
    drop(watches);
    stop([&seed.handle, &early.handle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_past_the_parallel_limit_wait_in_the_queue() {
    use lanspread_peer::events::DownloadState;

    let dir = tempfile::tempdir().unwrap();
    let (source, mut down, _) = one_slot_for_two_games(dir.path(), 4 * MIB, 4 * MIB as u64).await;

    down.handle.download("arena").await.unwrap();
    let racer = down.handle.download("racer").await.unwrap();
    let states: Vec<_> = down
        .handle
        .downloads()
        .into_iter()
        .map(|d| (d.game_id, d.state))
        .collect();
    assert_eq!(
        states,
        [
            ("arena".to_owned(), DownloadState::Running),
            ("racer".to_owned(), DownloadState::Queued)
        ]
    );
    // Cancelling the waiting one ends it at once, with its own event.
    assert!(down.handle.cancel_download(racer, false).await.unwrap());
    let end = outcome(&mut down.events, "racer", Duration::from_secs(5)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCancelled { .. }),
        "{end:?}"
    );
    assert_completed(&outcome(&mut down.events, "arena", Duration::from_secs(30)).await);
    assert!(!down.games.join("racer").exists());

    // Queued again, it starts once the slot is free and completes.
    let mut queued = false;
    down.handle.download(&racer.to_hex()).await.unwrap();
    let end = wait_event(
        &mut down.events,
        "racer downloaded",
        Duration::from_secs(30),
        |event| match event {
            PeerEvent::DownloadQueued { game_id, .. } if game_id == "racer" => {
                queued = true;
                None
            }
            PeerEvent::DownloadCompleted { game_id, .. }
            | PeerEvent::DownloadFailed { game_id, .. }
                if game_id == "racer" =>
            {
                Some(event.clone())
            }
            _ => None,
        },
    )
    .await;
    assert!(queued, "the queue said so");
    assert_completed(&end);
    assert_identical(&source.games.join("racer"), &down.games.join("racer"));
    stop([&source.handle, &down.handle]).await;
}

/// Fraction of `path`'s pages held in the page cache (`mincore`).
#[cfg(target_os = "linux")]
fn cached_fraction(path: &Path) -> f64 {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped
    // below; mincore(2) fills one byte per page of it.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut pages = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, pages.as_mut_ptr()), 0);
        libc::munmap(map, len);
        pages.iter().filter(|&&p| p & 1 != 0).count() as f64 / pages.len() as f64
    }
}

/// Whether the file system of `dir` takes `O_DIRECT` (some, like older
/// tmpfs or ZFS, refuse it at open: then the engine writes through the
/// page cache, and only byte-identity can be checked).
#[cfg(target_os = "linux")]
fn takes_direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("direct-io-probe");
    let taken = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = fs::remove_file(&probe);
    taken
}

/// Download `arena` (a big file of `size` bytes after a small one, so it
/// starts unaligned in the game's byte stream) from a source into peers
/// below `root`; returns the installed big file, checked byte-identical
/// after `check` has looked at it.
async fn download_big_file_below(root: &Path, size: usize, check: impl FnOnce(&Path)) {
    let (source, mut down) = arena_and_downloader(root, size, 0).await;
    down.handle.download("arena").await.unwrap();
    let end = outcome(&mut down.events, "arena", Duration::from_secs(60)).await;
    assert_completed(&end);
    check(&down.games.join("arena/data/big.pak"));
    assert_identical(&source.games.join("arena"), &down.games.join("arena"));
    stop([&source.handle, &down.handle]).await;
}

/// Pins issue 17 (a big file's bytes copied into the page cache on their
/// way to the disk): on a disk folder, a big file whose start is not
/// page-aligned in the game's stream and whose tail is not whole pages
/// installs byte-identical, and its middle was written directly: its pages
/// are not in the page cache after the download (written through the cache,
/// every page of it stays cached).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_file_written_directly_installs_byte_identical() {
    // The target folder is on the disk the build is on, never /dev/shm.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let direct = takes_direct_io(dir.path());
    download_big_file_below(dir.path(), 24 * MIB + 1234, |big| {
        if !direct {
            eprintln!(
                "direct IO not checked: {} refuses O_DIRECT (only byte-identity checked)",
                dir.path().display()
            );
            return;
        }
        let cached = cached_fraction(big);
        assert!(
            cached < 0.25,
            "{:.0} % of the big file's pages are cached: not written directly",
            cached * 100.0
        );
    })
    .await;
}

/// The same download into a folder in memory (tmpfs: older kernels refuse
/// direct IO there, newer ones take it and copy anyway) installs
/// byte-identical.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_file_downloads_byte_identical_into_memory() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm here");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    download_big_file_below(dir.path(), 24 * MIB + 1234, |_| {}).await;
}
