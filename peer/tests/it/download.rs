//! Downloads between real peers on 127.0.0.1, each checking that the
//! installed tree is byte-identical to the source.
#![cfg(unix)]

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lanspread_peer::{start_peer, PeerConfig, PeerEvent, PeerRuntimeHandle};
use tokio::sync::broadcast;

const MIB: usize = 1 << 20;

/// Deterministic pseudo-random bytes.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A game folder: one big file, a few small ones, an empty file and folder.
fn make_game(games: &Path, name: &str, size: usize) {
    let root = games.join(name);
    fs::create_dir_all(root.join("data/maps")).unwrap();
    fs::create_dir_all(root.join("saves")).unwrap();
    fs::write(root.join("data/big.pak"), bytes(size, 7)).unwrap();
    for i in 0..20 {
        fs::write(
            root.join(format!("data/maps/m{i:02}.map")),
            bytes(1000 + i * 37, i as u64),
        )
        .unwrap();
    }
    fs::write(root.join("empty.cfg"), b"").unwrap();
    fs::write(
        root.join("cover.png"),
        [&b"\x89PNG\r\n\x1a\n"[..], name.as_bytes()].concat(),
    )
    .unwrap();
    fs::write(root.join("lanspread.toml"), format!("title = \"{name}\"\n")).unwrap();
}

fn assert_identical(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
                if entry.file_type().unwrap().is_dir() {
                    out.push((rel, None));
                    stack.push(entry.path());
                } else {
                    out.push((rel, Some(fs::read(entry.path()).unwrap())));
                }
            }
        }
        out.sort();
        out
    };
    let (left, right) = (list(a), list(b));
    assert_eq!(
        left.len(),
        right.len(),
        "{} vs {}",
        a.display(),
        b.display()
    );
    for (l, r) in left.iter().zip(&right) {
        assert_eq!(l.0, r.0);
        assert!(l.1 == r.1, "{} differs", l.0.display());
    }
}

struct Peer {
    handle: PeerRuntimeHandle,
    games: PathBuf,
}

async fn peer(root: &Path, name: &str, peers: Vec<String>, upload_limit: u64) -> Peer {
    let games = root.join(name).join("games");
    fs::create_dir_all(&games).unwrap();
    let mut config = PeerConfig::new(&games, root.join(name).join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    config.display_name = name.into();
    config.peers = peers;
    config.upload_limit = upload_limit;
    config.library_quiet_period = Duration::from_millis(300);
    let handle = start_peer(config).await.unwrap().0;
    Peer { handle, games }
}

async fn until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn indexed(peer: &Peer, game: &str) {
    until("indexed", Duration::from_secs(20), || {
        peer.handle.library().contains_key(game)
    })
    .await;
}

fn sources(peer: &Peer, game: &str) -> usize {
    peer.handle
        .catalog()
        .iter()
        .filter(|e| e.game_id == game && !e.installed)
        .map(|e| e.sources.len() + e.partial_sources.len())
        .max()
        .unwrap_or(0)
}

/// The terminal event of the download of `game`.
async fn outcome(
    events: &mut broadcast::Receiver<PeerEvent>,
    game: &str,
    within: Duration,
) -> PeerEvent {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(
                    e @ (PeerEvent::DownloadCompleted { .. }
                    | PeerEvent::DownloadFailed { .. }
                    | PeerEvent::DownloadCancelled { .. }
                    | PeerEvent::DownloadPeersGone { .. }),
                ) => {
                    let id = match &e {
                        PeerEvent::DownloadCompleted { game_id, .. }
                        | PeerEvent::DownloadFailed { game_id, .. }
                        | PeerEvent::DownloadCancelled { game_id, .. }
                        | PeerEvent::DownloadPeersGone { game_id, .. } => game_id.clone(),
                        _ => unreachable!(),
                    };
                    if id == game {
                        return e;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events closed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no end of the download of {game} within {within:?}"))
}

/// Wait until the download of `game` has at least `bytes` done.
async fn progressed(events: &mut broadcast::Receiver<PeerEvent>, bytes: u64) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(PeerEvent::DownloadProgress { bytes_done, .. }) = events.recv().await {
                if bytes_done >= bytes {
                    return;
                }
            }
        }
    })
    .await
    .expect("progress in time");
}

/// A peer that knows `addrs`, once `n` of them offer `arena`; with its events.
async fn downloader(
    root: &Path,
    name: &str,
    addrs: Vec<String>,
    n: usize,
    within: Duration,
) -> (Peer, broadcast::Receiver<PeerEvent>) {
    let down = peer(root, name, addrs, 0).await;
    let events = down.handle.subscribe();
    until("sources", within, || sources(&down, "arena") >= n).await;
    (down, events)
}

/// A source sharing an `arena` of `size` bytes, its upload capped at
/// `upload_limit`, and a downloader that sees it; with the downloader's events.
async fn arena_and_downloader(
    root: &Path,
    size: usize,
    upload_limit: u64,
) -> (Peer, Peer, broadcast::Receiver<PeerEvent>) {
    let source = peer(root, "source", vec![], upload_limit).await;
    make_game(&source.games, "arena", size);
    indexed(&source, "arena").await;
    let (down, events) = downloader(
        root,
        "down",
        vec![source.handle.local_addr().to_string()],
        1,
        Duration::from_secs(10),
    )
    .await;
    (source, down, events)
}

fn assert_completed(end: &PeerEvent) {
    assert!(
        matches!(end, PeerEvent::DownloadCompleted { .. }),
        "{end:?}"
    );
}

async fn stop(peers: Vec<Peer>) {
    for p in peers {
        p.handle.shutdown();
        let report = tokio::time::timeout(Duration::from_secs(3), p.handle.wait_stopped())
            .await
            .expect("stopped in time");
        assert!(report.stuck_services.is_empty(), "{report:?}");
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `lanspread-peer serve` in a child process, so it can be killed for real.
struct ChildServe(Child);

impl ChildServe {
    fn start(games: &Path, data: &Path, port: u16, upload_limit: u64) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_lanspread-peer"))
            .args(["serve", "--no-mdns", "-q", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--games")
            .arg(games)
            .arg("--data")
            .arg(data)
            .arg("--upload-limit")
            .arg(upload_limit.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildServe {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source() {
    let dir = tempfile::tempdir().unwrap();
    let (source, downloader, mut events) = arena_and_downloader(dir.path(), 5 * MIB + 123, 0).await;

    downloader.handle.download("arena").await.unwrap();
    let end = outcome(&mut events, "arena", Duration::from_secs(30)).await;

    assert_completed(&end);
    assert_identical(&source.games.join("arena"), &downloader.games.join("arena"));
    let installed = downloader.handle.library()["arena"].clone();
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
    assert_eq!(downloader.handle.bytes_hashed(), 0);
    assert!(fs::read_dir(downloader.games.join(".lanspread-staging"))
        .unwrap()
        .next()
        .is_none());
    stop(vec![source, downloader]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sources_one_killed_mid_download() {
    let dir = tempfile::tempdir().unwrap();
    const LIMIT: u64 = 6 * MIB as u64;
    let a = peer(dir.path(), "a", vec![], LIMIT).await;
    let b = peer(dir.path(), "b", vec![], LIMIT).await;
    make_game(&a.games, "arena", 40 * MIB);
    make_game(&b.games, "arena", 40 * MIB);
    let c_games = dir.path().join("c/games");
    make_game(&c_games, "arena", 40 * MIB);
    let port = free_port();
    let mut c = ChildServe::start(&c_games, &dir.path().join("c/data"), port, LIMIT);
    indexed(&a, "arena").await;
    indexed(&b, "arena").await;
    let addrs = vec![
        a.handle.local_addr().to_string(),
        b.handle.local_addr().to_string(),
        format!("127.0.0.1:{port}"),
    ];
    let down = peer(dir.path(), "down", addrs, 0).await;
    let mut events = down.handle.subscribe();
    until("three sources", Duration::from_secs(20), || {
        sources(&down, "arena") == 3
    })
    .await;

    down.handle.download("arena").await.unwrap();
    progressed(&mut events, 8 * MIB as u64).await;
    c.kill();
    let end = outcome(&mut events, "arena", Duration::from_secs(60)).await;

    assert_completed(&end);
    assert_identical(&a.games.join("arena"), &down.games.join("arena"));
    assert!(
        a.handle.bytes_served() > 0 && b.handle.bytes_served() > 0,
        "both others used"
    );
    stop(vec![a, b, down]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_serving_wrong_bytes_is_caught_and_banned() {
    let dir = tempfile::tempdir().unwrap();
    let honest = peer(dir.path(), "honest", vec![], 4 * MIB as u64).await;
    let liar = peer(dir.path(), "liar", vec![], 0).await;
    make_game(&honest.games, "arena", 12 * MIB);
    make_game(&liar.games, "arena", 12 * MIB);
    indexed(&honest, "arena").await;
    indexed(&liar, "arena").await;
    // After indexing, the liar's file changes under it: every piece it
    // serves is now wrong, while its manifest still says otherwise. (Its
    // monitor would notice after the quiet period; the download is faster.)
    let path = liar.games.join("arena/data/big.pak");
    let mut data = fs::read(&path).unwrap();
    for byte in data.iter_mut().step_by(4096) {
        *byte ^= 0x5a;
    }
    fs::write(&path, data).unwrap();

    let (down, mut events) = downloader(
        dir.path(),
        "down",
        vec![
            honest.handle.local_addr().to_string(),
            liar.handle.local_addr().to_string(),
        ],
        2,
        Duration::from_secs(20),
    )
    .await;
    let mut banned = down.handle.subscribe();

    down.handle.download("arena").await.unwrap();
    let end = outcome(&mut events, "arena", Duration::from_secs(60)).await;

    assert_completed(&end);
    assert_identical(&honest.games.join("arena"), &down.games.join("arena"));
    let liar_id = liar.handle.peer_id().to_string();
    let mut saw_ban = false;
    while let Ok(event) = banned.try_recv() {
        if let PeerEvent::SourceBanned { peer_id, .. } = event {
            saw_ban |= peer_id == liar_id;
        }
    }
    assert!(saw_ban, "the liar was banned");
    stop(vec![honest, liar, down]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_downloader_resumes_and_refetches_only_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    const SIZE: usize = 32 * MIB;
    let source = peer(dir.path(), "source", vec![], 8 * MIB as u64).await;
    make_game(&source.games, "arena", SIZE);
    indexed(&source, "arena").await;
    let games = dir.path().join("down/games");
    fs::create_dir_all(&games).unwrap();
    let (addr, data_dir, games_dir) = (
        source.handle.local_addr().to_string(),
        dir.path().join("down/data"),
        games.clone(),
    );
    let run = move || {
        Command::new(env!("CARGO_BIN_EXE_lanspread-peer"))
            .args([
                "download",
                "arena",
                "--no-mdns",
                "-q",
                "--wait",
                "20",
                "--peer",
            ])
            .arg(&addr)
            .arg("--games")
            .arg(&games_dir)
            .arg("--data")
            .arg(&data_dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = run();
    // Let about half arrive, then kill -9.
    until("half served", Duration::from_secs(30), || {
        source.handle.bytes_served() >= (SIZE / 2) as u64
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let served_before = source.handle.bytes_served();

    let status = tokio::task::spawn_blocking(move || run().wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_identical(&source.games.join("arena"), &games.join("arena"));

    let total = source.handle.library()["arena"].total_size;
    let refetched = source.handle.bytes_served() - total;
    println!(
        "killed after {} MiB served; re-fetched {} KiB",
        served_before >> 20,
        refetched >> 10
    );
    // In flight at most: 2 streams x 8 pieces + 4 pending writes, 1 MiB each.
    assert!(refetched <= 20 * MIB as u64, "re-fetched {refetched} bytes");
    stop(vec![source]).await;
}

/// Also pins a race: downloading again right after `DownloadCancelled` was
/// ignored while the cancelled run was still letting go of its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_download_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (source, down, mut events) =
        arena_and_downloader(dir.path(), 24 * MIB, 8 * MIB as u64).await;

    let version_id = down.handle.download("arena").await.unwrap();
    progressed(&mut events, 6 * MIB as u64).await;
    assert!(down.handle.cancel_download(version_id, false).await);
    let end = outcome(&mut events, "arena", Duration::from_secs(10)).await;
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
    let end = outcome(&mut events, "arena", Duration::from_secs(30)).await;
    assert_completed(&end);
    assert_identical(&source.games.join("arena"), &down.games.join("arena"));
    let second_run = source.handle.bytes_served() - served_at_cancel;
    let total = 24 * MIB as u64;
    assert!(
        second_run < total,
        "the resume fetched {second_run} of {total} bytes"
    );
    stop(vec![source, down]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_a_paused_download_deletes_its_staging_data() {
    let dir = tempfile::tempdir().unwrap();
    let (source, down, mut events) =
        arena_and_downloader(dir.path(), 16 * MIB, 4 * MIB as u64).await;
    let version_id = down.handle.download("arena").await.unwrap();
    progressed(&mut events, 2 * MIB as u64).await;
    assert!(down.handle.cancel_download(version_id, false).await);
    outcome(&mut events, "arena", Duration::from_secs(10)).await;
    let staging = down
        .games
        .join(".lanspread-staging")
        .join(version_id.to_hex());
    assert!(staging.exists(), "paused with its data");

    assert!(down.handle.cancel_download(version_id, true).await);
    assert!(!staging.exists(), "discarded");
    assert!(
        !down.handle.cancel_download(version_id, true).await,
        "nothing left"
    );
    stop(vec![source, down]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_gone_ends_with_peers_gone() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("src/games");
    make_game(&games, "arena", 24 * MIB);
    let port = free_port();
    let mut source = ChildServe::start(&games, &dir.path().join("src/data"), port, 4 * MIB as u64);
    let (down, mut events) = downloader(
        dir.path(),
        "down",
        vec![format!("127.0.0.1:{port}")],
        1,
        Duration::from_secs(20),
    )
    .await;

    let version_id = down.handle.download("arena").await.unwrap();
    progressed(&mut events, 2 * MIB as u64).await;
    source.kill();
    let end = outcome(&mut events, "arena", Duration::from_secs(15)).await;

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
    stop(vec![down]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_fetches_only_the_changed_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (source, down, mut events) = arena_and_downloader(dir.path(), 16 * MIB, 0).await;
    down.handle.download("arena").await.unwrap();
    let end = outcome(&mut events, "arena", Duration::from_secs(30)).await;
    assert_completed(&end);
    let v1 = down.handle.library()["arena"].version_id;

    // The host patches one byte in the middle of the big file.
    let path = source.games.join("arena/data/big.pak");
    let mut data = fs::read(&path).unwrap();
    data[8 * MIB + 5] ^= 1;
    fs::write(&path, data).unwrap();
    until("v2 indexed", Duration::from_secs(20), || {
        source.handle.library()["arena"].version_id != v1
    })
    .await;
    until("v2 offered", Duration::from_secs(20), || {
        down.handle
            .catalog()
            .iter()
            .any(|e| e.installed && e.update_to.is_some())
    })
    .await;

    let served_before = source.handle.bytes_served();
    let v2 = source.handle.library()["arena"].version_id;
    down.handle.download(&v2.to_hex()).await.unwrap();
    let end = outcome(&mut events, "arena", Duration::from_secs(30)).await;
    assert_completed(&end);
    assert_identical(&source.games.join("arena"), &down.games.join("arena"));
    let fetched = source.handle.bytes_served() - served_before;
    println!("update fetched {fetched} bytes");
    assert_eq!(fetched, MIB as u64, "exactly the one changed piece");
    assert_eq!(down.handle.library()["arena"].version_id, v2);
    stop(vec![source, down]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_part_of_the_game_serves_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    // The seed is slow; the first downloader gets a head start.
    let seed = peer(dir.path(), "seed", vec![], 4 * MIB as u64).await;
    make_game(&seed.games, "arena", 24 * MIB);
    indexed(&seed, "arena").await;
    let (early, mut early_events) = downloader(
        dir.path(),
        "early",
        vec![seed.handle.local_addr().to_string()],
        1,
        Duration::from_secs(10),
    )
    .await;
    early.handle.download("arena").await.unwrap();
    progressed(&mut early_events, 8 * MIB as u64).await;

    let (late, mut late_events) = downloader(
        dir.path(),
        "late",
        vec![
            seed.handle.local_addr().to_string(),
            early.handle.local_addr().to_string(),
        ],
        2,
        Duration::from_secs(20),
    )
    .await;
    late.handle.download("arena").await.unwrap();

    let end = outcome(&mut late_events, "arena", Duration::from_secs(60)).await;
    assert_completed(&end);
    assert_identical(&seed.games.join("arena"), &late.games.join("arena"));
    assert!(
        early.handle.bytes_served() > 0,
        "the partial peer served pieces"
    );
    let _ = outcome(&mut early_events, "arena", Duration::from_secs(60)).await;
    stop(vec![seed, early, late]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_past_the_parallel_limit_wait_in_the_queue() {
    use lanspread_peer::download::DownloadState;

    let dir = tempfile::tempdir().unwrap();
    let source = peer(dir.path(), "source", vec![], 4 * MIB as u64).await;
    make_game(&source.games, "arena", 4 * MIB);
    make_game(&source.games, "racer", MIB);
    indexed(&source, "arena").await;
    indexed(&source, "racer").await;
    let games = dir.path().join("down/games");
    fs::create_dir_all(&games).unwrap();
    let mut config = PeerConfig::new(&games, dir.path().join("down/data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    config.peers = vec![source.handle.local_addr().to_string()];
    config.parallel_downloads = 1;
    let down = Peer {
        handle: start_peer(config).await.unwrap().0,
        games,
    };
    let mut events = down.handle.subscribe();
    until("sources", Duration::from_secs(10), || {
        sources(&down, "arena") == 1 && sources(&down, "racer") == 1
    })
    .await;

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
    assert!(down.handle.cancel_download(racer, false).await);
    let end = outcome(&mut events, "racer", Duration::from_secs(5)).await;
    assert!(
        matches!(end, PeerEvent::DownloadCancelled { .. }),
        "{end:?}"
    );
    assert_completed(&outcome(&mut events, "arena", Duration::from_secs(30)).await);
    assert!(!down.games.join("racer").exists());

    // Queued again, it starts once the slot is free and completes.
    let mut queued = false;
    down.handle.download(&racer.to_hex()).await.unwrap();
    let end = loop {
        match events.recv().await.unwrap() {
            PeerEvent::DownloadQueued { game_id, .. } if game_id == "racer" => queued = true,
            e @ PeerEvent::DownloadCompleted { .. } => break e,
            e @ PeerEvent::DownloadFailed { .. } => break e,
            _ => {}
        }
    };
    assert!(queued, "the queue said so");
    assert_completed(&end);
    assert_identical(&source.games.join("racer"), &down.games.join("racer"));
    stop(vec![source, down]).await;
}
