//! Windows pitfalls, exercised through the peer's own functions on real
//! files. They run on every platform, and as Windows binaries under Wine in
//! `scripts/windows.sh`, where the Windows branches are the ones tested.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::download::staging;
use crate::library::Indexer;
use crate::store::Store;

/// Windows' classic `MAX_PATH`: paths longer than this fail in Win32 calls
/// unless they carry the `\\?\` verbatim prefix (Rust's std adds it to long
/// absolute paths) or the system opted in to long paths.
const MAX_PATH: usize = 260;

/// Deterministic bytes.
fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A relative game path of four 61-character folders and a 44-character
/// file name: 292 characters below the game folder alone.
fn deep_path() -> String {
    let mut rel: String = (0..4).map(|i| format!("{}{i}/", "d".repeat(60))).collect();
    rel.push_str(&format!("{}.dat", "f".repeat(40)));
    rel
}

/// The folder `temp` as the peer holds its games folder: absolute (see
/// `start_peer`), so std can give long paths the verbatim prefix.
fn games_dir(temp: &Path) -> PathBuf {
    let games = std::path::absolute(temp.join("games")).unwrap();
    std::fs::create_dir_all(&games).unwrap();
    games
}

/// Pins "paths over 260 characters install and serve": a game whose file
/// lies deeper than `MAX_PATH` is indexed, its pieces are read back as the
/// server reads them, and a copy is staged, written piece by piece, flushed
/// and renamed into place as a download installs it.
#[test]
fn paths_longer_than_max_path_index_serve_and_install() {
    let temp = tempfile::tempdir().unwrap();
    let games = games_dir(temp.path());
    let rel = deep_path();
    let source = crate::fsx::manifest_path(&games.join("deep"), &rel);
    assert!(source.as_os_str().len() > MAX_PATH, "{}", source.display());
    let content = bytes(300_000);
    std::fs::create_dir_all(source.parent().unwrap()).unwrap();
    std::fs::write(&source, &content).unwrap();

    // Index (hash) it: the manifest lists the long path.
    let store = Arc::new(Store::open_in_memory().unwrap());
    let indexer = Indexer::new(games.clone(), store);
    let (game, errors) = indexer
        .index_game("deep", &CancellationToken::new(), &|_, _| {})
        .unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let game = game.expect("the game is indexed");
    let paths: Vec<&str> = game
        .manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(paths, [rel.as_str()]);
    game.manifest.validate().expect("the manifest is valid");

    // Serve: every piece reads back from the game folder and verifies.
    let manifest = game.manifest.clone();
    let layout = manifest.layout();
    let mut buf = Vec::new();
    let mut pieces = Vec::new();
    for piece_idx in 0..layout.n_pieces() {
        staging::read_piece(&game.root, &manifest, &layout, piece_idx, &mut buf).unwrap();
        assert!(
            staging::verify(&manifest, piece_idx, &buf),
            "piece {piece_idx}"
        );
        pieces.push(buf.clone());
    }

    // Install: stage, write, flush, rename into the games folder.
    let root = staging::staging_root(&games, &game.version_id);
    let (closer, close_loop) = staging::closer();
    let closing = std::thread::spawn(move || close_loop.run());
    staging::prepare(&root, &manifest, &closer).unwrap();
    let files = staging::OpenFiles::new(root.clone(), manifest.clone(), closer);
    for (piece_idx, data) in pieces.iter().enumerate() {
        staging::write_piece(&files, &layout, piece_idx, data).unwrap();
    }
    // Every handle closed before the rename, as a download does.
    drop(files);
    // Off Linux every file was flushed as it was closed (Windows: not
    // reopened and closed again by the install, where Defender scans).
    let flushed = closing.join().unwrap();
    assert_eq!(flushed, !cfg!(target_os = "linux"));
    staging::sync_all(&root, &manifest, flushed).unwrap();
    let installed = games.join("deep-copy");
    std::fs::rename(&root, &installed).unwrap();
    let copy = crate::fsx::manifest_path(&installed, &rel);
    assert!(copy.as_os_str().len() > MAX_PATH);
    assert_eq!(std::fs::read(&copy).unwrap(), content);
}
