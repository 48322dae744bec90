//! Writes the fuzz targets' seed corpora (scripts/fuzz.sh): real encodings
//! of every message kind, a few frame streams, manifests and paths, so the
//! fuzzer starts from valid input and mutates from there.
//!
//! `cargo run -p lanspread-proto --example fuzz_seeds -- DIR` writes
//! `DIR/<target>/seed-<n>` for each fuzz target.

use std::path::Path;

use lanspread_proto::manifest::{FileEntry, Manifest};
use lanspread_proto::wire::{
    DownloadStatus, ErrorCode, GameSummary, Hello, PeerRecord, PeerStatus, Request, Response,
    WireLineup, WireLineupEntry, WireReadyCheck,
};
use lanspread_proto::{Hash, PROTOCOL_VERSION};

fn hello(party: bool) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        peer_id: "abcdefghijklmnopqrstuvwxyz".into(),
        display_name: "Ана".into(),
        library_digest: Hash([3; 32]),
        party_message: party.then(|| vec![0x41; 33]),
        party_confirmation: party.then_some(Hash([4; 32])),
        listen_port: 27600,
        record_version: 1_795_000_000_000,
    }
}

fn manifests() -> Vec<Manifest> {
    let file = |path: &str, size: u64| FileEntry {
        path: path.into(),
        size,
        executable: path.starts_with("bin/"),
    };
    vec![
        Manifest {
            piece_size: 1 << 20,
            files: vec![],
            empty_dirs: vec![],
            pieces: vec![],
        },
        Manifest {
            piece_size: 1 << 20,
            files: vec![
                file("arena.pak", 3 << 20),
                file("bin/arena", 10),
                file("maps/e1m1.bsp", 0),
            ],
            empty_dirs: vec!["saves".into()],
            pieces: (0..4).map(|i| Hash([i; 32])).collect(),
        },
        Manifest {
            piece_size: 16 << 20,
            files: vec![file("a", 1), file("a b/c", 1)],
            empty_dirs: vec!["d".into(), "e/f".into()],
            pieces: vec![Hash([9; 32])],
        },
    ]
}

fn requests() -> Vec<Request> {
    let id = Hash([1; 32]);
    vec![
        Request::Hello(hello(false)),
        Request::Hello(hello(true)),
        Request::ListGames,
        Request::GetManifest { version_id: id },
        Request::GetPieces {
            version_id: id,
            pieces: vec![0, 1, 31, u32::MAX],
        },
        Request::GetThumbnail { hash: id },
        Request::WatchHaveSet { version_id: id },
        Request::Gossip(vec![record()]),
        Request::Goodbye,
        Request::Ping { nonce: 7 },
        Request::GetPeers { digest: id },
        Request::PartyConfirm { confirmation: id },
        Request::GetLineup,
    ]
}

fn record() -> PeerRecord {
    PeerRecord {
        peer_id: "abcdefghijklmnopqrstuvwxyz".into(),
        addr: "192.168.1.2:27600".parse().unwrap(),
        version: 1_795_000_000_000,
        library_digest: Hash([3; 32]),
        gone: false,
        status: Some(PeerStatus {
            lineup: 1_795_000_000_001,
            organizer: true,
            playing: vec!["arena".into()],
            downloads: vec![DownloadStatus {
                version_id: Hash([1; 32]),
                permille: 450,
                eta_secs: Some(12),
            }],
        }),
    }
}

fn responses() -> Vec<Response> {
    let summary = GameSummary {
        game_id: "arena".into(),
        version_id: Hash([1; 32]),
        title: "Arena".into(),
        description: Some("A game".into()),
        genre: Some("shooter".into()),
        min_players: Some(2),
        max_players: Some(16),
        version_label: Some("1.0".into()),
        total_size: 3 << 20,
        n_files: 3,
        thumbnail: Some(Hash([2; 32])),
        complete: true,
    };
    let mut out = vec![
        Response::Hello(hello(true)),
        Response::Games(vec![summary.clone(), summary]),
        Response::Piece {
            piece_idx: 3,
            len: 4,
        },
        Response::Thumbnail {
            mime: "image/png".into(),
            bytes: b"\x89PNG\r\n\x1a\n".to_vec(),
        },
        Response::HaveSet {
            n_pieces: 12,
            bits: vec![0xa5, 0x0f],
            fetching: vec![0x10, 0x00],
        },
        Response::HaveChanges {
            have: vec![3, 7],
            fetching: vec![9],
        },
        Response::Ok,
        Response::Pong { nonce: 7 },
        Response::Error {
            code: ErrorCode::PartyKey,
            message: "party key missing or wrong".into(),
        },
        Response::Peers(vec![record()]),
        Response::Lineup(Some(WireLineup {
            version: 1_795_000_000_001,
            organizer: true,
            entries: vec![WireLineupEntry {
                version_id: Hash([1; 32]),
                game_id: "arena".into(),
                at: Some("21:00".into()),
            }],
            ready_check: Some(WireReadyCheck {
                version_id: Hash([1; 32]),
                id: 1_795_000_000_002,
            }),
        })),
        Response::Lineup(None),
    ];
    out.extend(
        manifests()
            .into_iter()
            .map(|m| Response::Manifest(Box::new(m))),
    );
    out
}

fn write(dir: &Path, target: &str, seeds: impl IntoIterator<Item = Vec<u8>>) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus folder");
    for (n, seed) in seeds.into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{n}")), seed).expect("write a seed");
    }
}

fn main() {
    let dir = std::env::args_os().nth(1).expect("usage: fuzz_seeds DIR");
    let dir = Path::new(&dir);
    let requests: Vec<Vec<u8>> = requests().iter().map(Request::encode).collect();
    let responses: Vec<Vec<u8>> = responses().iter().map(Response::encode).collect();
    write(dir, "decode", requests.iter().chain(&responses).cloned());

    // Streams: a handshake and requests back to back; a piece header and
    // its bytes; a frame cut short.
    let mut streams = vec![requests.concat(), requests[1][..9].to_vec()];
    let mut piece = responses[2].clone();
    piece.extend_from_slice(b"data");
    piece.extend_from_slice(&responses[5]);
    streams.push(piece);
    write(dir, "decode_stream", streams);

    write(
        dir,
        "manifest",
        manifests().iter().map(Manifest::canonical_bytes),
    );
    write(
        dir,
        "path",
        [
            "arena.pak",
            "bin/arena",
            "maps/e1m1.bsp",
            "Ünïcode/ファイル.txt",
            "../escaped",
            "/etc/passwd",
            "C:/Windows",
            "a\\b",
            "CON",
            "dir/aux.txt",
            "name.",
            "a//b",
        ]
        .map(|p| p.as_bytes().to_vec()),
    );
}
