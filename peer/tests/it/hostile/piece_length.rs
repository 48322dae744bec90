//! Crash the downloader: a piece header that lies about its length.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanspread_proto::wire::{Request, Response};

use super::{proc_status_kib, Answer, FakeGame, HostileServer};
use crate::support::{json_lines, peer_command, wait_json, ChildGuard, MIB};

/// The downloader stays under this while a source floods it.
const VICTIM_MEMORY_KIB: u64 = 300 << 10;
/// Bytes the liar sends after its header: well above the bound.
const FLOOD: usize = 512 * MIB;

/// Bug: the downloader reserved a piece's buffer from the length in its
/// header before checking it. A source answering every `GetPieces` with a
/// header of 4 GiB and then a flood of bytes made a `lanspread-peer
/// download` grow by every byte it sent. Now a header whose length is not
/// the manifest's is refused before anything is buffered; the download
/// completes from an honest source alongside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piece_header_claiming_4_gib_reserves_nothing() {
    let data = crate::support::bytes(24 * MIB, 3);
    let game = Arc::new(FakeGame::new("arena", &[("arena.pak", &data, false)]));

    let asked = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicBool::new(false));
    let (lying, flag, ended) = (game.clone(), asked.clone(), flooded.clone());
    let hostile = HostileServer::start(move |request| match request {
        Request::GetPieces { pieces, .. } => {
            flag.store(true, Ordering::SeqCst);
            vec![
                Answer::Frame(Response::Piece {
                    piece_idx: pieces[0],
                    len: u32::MAX,
                }),
                Answer::Junk {
                    len: FLOOD,
                    ended: ended.clone(),
                },
                Answer::Hang,
            ]
        }
        other => lying.serve(other),
    })
    .await;
    // The honest source waits until the liar was asked and its flood was
    // taken or refused, so the download lasts as long as the flood.
    let (served, flag) = (game.clone(), flooded.clone());
    let honest = HostileServer::start(move |request| {
        if matches!(request, Request::GetPieces { .. }) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        served.serve(request)
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    std::fs::create_dir_all(&games).unwrap();
    let mut command = peer_command(["download", "arena", "--no-mdns", "--seed", "--json"]);
    command
        .args(["--listen", "127.0.0.1:0", "--games"])
        .arg(&games)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--peer", &hostile.as_peer(), "--peer", &honest.as_peer()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut victim = ChildGuard::spawn(&mut command);
    let pid = victim.0.id();
    let events = json_lines(victim.0.stdout.take().unwrap());
    let end = tokio::task::spawn_blocking(move || {
        wait_json(
            &events,
            "the download's end",
            Duration::from_secs(60),
            |e| {
                let kind = e["type"].as_str()?;
                let ends = [
                    "downloadCompleted",
                    "downloadFailed",
                    "downloadCancelled",
                    "downloadPeersGone",
                ];
                ends.contains(&kind).then(|| kind.to_owned())
            },
        )
    })
    .await
    .unwrap();
    assert_eq!(end, "downloadCompleted");
    assert!(
        asked.load(Ordering::SeqCst),
        "the liar was asked for pieces"
    );
    assert_eq!(std::fs::read(games.join("arena/arena.pak")).unwrap(), data);

    assert!(
        flooded.load(Ordering::SeqCst),
        "the flood was taken or refused"
    );
    let peak = proc_status_kib(pid, "VmHWM").expect("the victim runs");
    assert!(
        peak < VICTIM_MEMORY_KIB,
        "the downloader peaked at {} MiB",
        peak >> 10
    );
    victim.kill();
}
