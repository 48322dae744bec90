//! Several real peers on 127.0.0.1 with mDNS off: one typed address plus peer
//! exchange finds everyone; a killed peer is lost within 5 s and found again
//! when it comes back; a graceful stop is seen at once.
#![cfg(unix)]

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lanspread_peer::{start_peer, PeerConfig, PeerEvent, PeerRuntimeHandle};
use tokio::sync::broadcast;

fn game(games: &Path, name: &str) {
    fs::create_dir_all(games.join(name)).unwrap();
    fs::write(games.join(name).join("data.bin"), name.repeat(1000)).unwrap();
}

async fn in_process(root: &Path, name: &str, peers: Vec<String>) -> PeerRuntimeHandle {
    let games = root.join(name).join("games");
    game(&games, name);
    let mut config = PeerConfig::new(&games, root.join(name).join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    config.display_name = name.into();
    config.peers = peers;
    config.library_quiet_period = Duration::from_millis(200);
    start_peer(config).await.unwrap().0
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `lanspread-peer serve` child process, so it can be killed for real.
struct ChildPeer {
    child: Child,
    root: PathBuf,
    port: u16,
}

impl ChildPeer {
    fn start(root: &Path, port: u16) -> Self {
        let games = root.join("charlie/games");
        game(&games, "charlie");
        let child = Command::new(env!("CARGO_BIN_EXE_lanspread-peer"))
            .args(["serve", "--no-mdns", "--name", "charlie", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--games")
            .arg(&games)
            .arg("--data")
            .arg(root.join("charlie/data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            root: root.to_owned(),
            port,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }
}

impl Drop for ChildPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has_game(peer: &PeerRuntimeHandle, game: &str) -> bool {
    peer.catalog()
        .iter()
        .any(|e| e.game_id == game && !e.sources.is_empty())
}

async fn until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Wait for `PeerLost` of the peer named `name`; returns how long it took.
async fn lost(
    events: &mut broadcast::Receiver<PeerEvent>,
    peer_id: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(within, async {
        loop {
            if let Ok(PeerEvent::PeerLost { peer_id: id, .. }) = events.recv().await {
                if id == peer_id {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no PeerLost for {peer_id} within {within:?}"));
    started.elapsed()
}

fn peer_id_named(peer: &PeerRuntimeHandle, name: &str) -> Option<String> {
    peer.peers()
        .into_iter()
        .find(|p| p.display_name == name)
        .map(|p| p.peer_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_and_peer_exchange_find_the_party() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = format!("127.0.0.1:{port}");
    let charlie = ChildPeer::start(dir.path(), port);
    // Alpha and bravo only know charlie's address; they find each other
    // through it.
    let alpha = in_process(dir.path(), "alpha", vec![hub.clone()]).await;
    let bravo = in_process(dir.path(), "bravo", vec![hub.clone()]).await;
    let mut alpha_events = alpha.subscribe();
    let mut bravo_events = bravo.subscribe();

    for (me, others) in [
        (&alpha, ["bravo", "charlie"]),
        (&bravo, ["alpha", "charlie"]),
    ] {
        until("every game in the catalog", Duration::from_secs(20), || {
            others.iter().all(|g| has_game(me, g))
        })
        .await;
    }
    let charlie_id = peer_id_named(&alpha, "charlie").unwrap();

    // A game added at alpha reaches the others' catalogs within seconds.
    game(&dir.path().join("alpha/games"), "delta");
    let took = until("delta at bravo", Duration::from_secs(10), || {
        has_game(&bravo, "delta")
    })
    .await;
    println!("a new game reached another peer's catalog after {took:?}");

    // Killed without a goodbye: lost within 5 s at both.
    charlie.signal(libc::SIGKILL);
    let at_alpha = lost(&mut alpha_events, &charlie_id, Duration::from_secs(5)).await;
    let at_bravo = lost(&mut bravo_events, &charlie_id, Duration::from_secs(5)).await;
    println!("killed peer lost after {at_alpha:?} (alpha), {at_bravo:?} (bravo)");
    until("charlie's game gone", Duration::from_secs(2), || {
        !has_game(&alpha, "charlie")
    })
    .await;
    assert!(has_game(&alpha, "bravo"), "the others stay");

    // It comes back at the same address: found again with its games.
    let root = charlie.root.clone();
    drop(charlie);
    let charlie = ChildPeer::start(&root, port);
    for me in [&alpha, &bravo] {
        until("charlie found again", Duration::from_secs(20), || {
            has_game(me, "charlie")
        })
        .await;
    }

    // A graceful stop (SIGINT) says goodbye: lost at once.
    charlie.signal(libc::SIGINT);
    let took = lost(&mut alpha_events, &charlie_id, Duration::from_secs(2)).await;
    println!("gracefully stopped peer lost after {took:?}");
    assert!(took < Duration::from_secs(1), "goodbye took {took:?}");
    assert_eq!(charlie.port, port);

    for peer in [alpha, bravo] {
        peer.shutdown();
        let report = tokio::time::timeout(Duration::from_secs(2), peer.wait_stopped())
            .await
            .expect("stopped within 2 s");
        assert!(report.requested && report.stuck_services.is_empty());
    }
}

/// Also pins a race: a peer that listed another's games just before that one
/// finished indexing never heard of the change and kept an empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_address_is_remembered_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = in_process(dir.path(), "alpha", vec![]).await;
    let addr = alpha.local_addr().to_string();
    let bravo = in_process(dir.path(), "bravo", vec![]).await;
    bravo.add_peer(&addr).await.unwrap();
    until("bravo sees alpha's game", Duration::from_secs(10), || {
        has_game(&bravo, "alpha")
    })
    .await;
    bravo.shutdown();
    bravo.wait_stopped().await;

    // Same data dir, no --peer: the address comes back from SQLite.
    let games = dir.path().join("bravo/games");
    let mut config = PeerConfig::new(&games, dir.path().join("bravo/data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = false;
    let bravo = start_peer(config).await.unwrap().0;
    until(
        "found again without typing",
        Duration::from_secs(10),
        || has_game(&bravo, "alpha"),
    )
    .await;

    assert!(bravo.add_peer("not-a-peer-id@127.0.0.1:1").await.is_err());
    for peer in [alpha, bravo] {
        peer.shutdown();
        peer.wait_stopped().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_discovery_running_takes_under_2_s() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    fs::create_dir_all(&games).unwrap();
    let mut config = PeerConfig::new(&games, dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mdns = true;
    let peer = start_peer(config).await.unwrap().0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let discovery = peer
        .health()
        .into_iter()
        .find(|h| h.service == "discovery")
        .unwrap();
    assert_eq!(
        discovery.state,
        lanspread_peer::ServiceState::Running,
        "{discovery:?}"
    );

    let started = Instant::now();
    peer.shutdown();
    let report = peer.wait_stopped().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(report.stuck_services.is_empty(), "{report:?}");
    assert!(peer.diagnostics().mdns_enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_s_game_picture_is_fetched_and_a_deleted_game_leaves_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = in_process(dir.path(), "alpha", vec![]).await;
    let picture = b"\x89PNG\r\n\x1a\nalpha's cover".to_vec();
    let game_dir = dir.path().join("alpha/games/alpha");
    fs::write(game_dir.join("cover.png"), &picture).unwrap();
    let bravo = in_process(dir.path(), "bravo", vec![alpha.local_addr().to_string()]).await;
    let entry = |peer: &PeerRuntimeHandle| {
        peer.catalog()
            .into_iter()
            .find(|e| e.game_id == "alpha" && !e.sources.is_empty())
    };
    until(
        "bravo sees alpha's game with its picture",
        Duration::from_secs(15),
        || entry(&bravo).is_some_and(|e| e.thumbnail.is_some()),
    )
    .await;
    let hash = entry(&bravo).unwrap().thumbnail.unwrap();

    let fetched = bravo.thumbnail(&hash).await.expect("fetched from alpha");
    assert_eq!(
        (fetched.mime, fetched.bytes.as_slice()),
        ("image/png", &picture[..])
    );
    // A hash nobody lists is not found, and nothing is fetched for it.
    let unknown = lanspread_proto::Hash::of(b"nobody's").to_hex();
    assert!(bravo.thumbnail(&unknown).await.is_none());

    assert!(
        bravo.delete_game("alpha").await.is_err(),
        "bravo does not have it"
    );
    alpha.delete_game("alpha").await.unwrap();
    assert!(!game_dir.exists());
    assert!(!alpha.library().contains_key("alpha"));
    until(
        "the game leaves bravo's catalog",
        Duration::from_secs(10),
        || entry(&bravo).is_none(),
    )
    .await;
    for peer in [alpha, bravo] {
        peer.shutdown();
        peer.wait_stopped().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_runtime_frees_its_port_while_its_handle_is_still_held() {
    // The desktop app stops the runtime and starts a new one on the same
    // fixed port when settings change, before the old handle is dropped.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let start = |name: &str| {
        let games = dir.path().join(name).join("games");
        game(&games, name);
        let mut config = PeerConfig::new(&games, dir.path().join(name).join("data"));
        config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        config.mdns = false;
        start_peer(config)
    };
    let old = start("alpha").await.unwrap().0;
    let client = in_process(dir.path(), "bravo", vec![format!("127.0.0.1:{port}")]).await;
    until("connected", Duration::from_secs(10), || {
        has_game(&client, "alpha")
    })
    .await;
    old.shutdown();
    old.wait_stopped().await;
    // The endpoint's task ends on its own right after the stop.
    let deadline = Instant::now() + Duration::from_secs(2);
    let new = loop {
        match start("alpha").await {
            Ok((new, _)) => break new,
            Err(e) => {
                assert!(Instant::now() < deadline, "the port is still bound: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop(old);
    for peer in [new, client] {
        peer.shutdown();
        peer.wait_stopped().await;
    }
}
