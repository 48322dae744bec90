//! Indexing real folders in temp dirs.

use std::fs;
use std::path::Path;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    games: PathBuf,
    indexer: Indexer,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let games = dir.path().join("games");
        fs::create_dir_all(&games).unwrap();
        let store = Arc::new(Store::open_in_memory().unwrap());
        Self {
            indexer: Indexer::new(games.clone(), store),
            games,
            _dir: dir,
        }
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.games.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn index(&self, game: &str) -> (LocalGame, Vec<ScanError>) {
        let (game, errors) = self
            .indexer
            .index_game(game, &CancellationToken::new(), &|_, _| {})
            .unwrap();
        (game.expect("game exists"), errors)
    }
}

/// Deterministic pseudo-random bytes.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn paths(game: &LocalGame) -> Vec<&str> {
    game.manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect()
}

/// Concatenate the game's files in manifest order and hash each piece.
fn expected_pieces(game: &LocalGame) -> Vec<Hash> {
    let mut all = Vec::new();
    for idx in 0..game.manifest.files.len() {
        all.extend(fs::read(game.file_path(idx)).unwrap());
    }
    all.chunks(game.manifest.piece_size as usize)
        .map(Hash::of)
        .collect()
}

const MIB: usize = 1 << 20;

#[test]
fn builds_a_manifest_with_pieces_across_files() {
    let f = Fixture::new();
    f.write("g/z.bin", &bytes(MIB + 7, 1));
    f.write("g/a/small.txt", b"hello");
    f.write("g/empty", b"");
    f.write("g/b.bin", &bytes(2 * MIB, 2));
    fs::create_dir_all(f.games.join("g/saves/slot1")).unwrap();

    let (game, errors) = f.index("g");

    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(paths(&game), ["a/small.txt", "b.bin", "empty", "z.bin"]);
    assert_eq!(game.manifest.empty_dirs, ["saves/slot1"]);
    assert_eq!(game.total_size, 3 * MIB as u64 + 12);
    assert_eq!(game.manifest.pieces, expected_pieces(&game));
    assert_eq!(game.manifest.n_pieces(), 4);
    assert_eq!(game.metadata.title, "g");
    game.manifest.validate().unwrap();
}

#[test]
fn version_id_is_stable_across_scans_and_copies() {
    let f = Fixture::new();
    for copy in ["one", "two"] {
        f.write(&format!("{copy}/data/pak0.pk3"), &bytes(3 * MIB + 5, 9));
        f.write(&format!("{copy}/game.exe"), &bytes(1000, 3));
        f.write(&format!("{copy}/readme.txt"), b"frag");
    }
    let (one, _) = f.index("one");
    let (one_again, _) = f.index("one");
    let (two, _) = f.index("two");
    assert_eq!(one.version_id, one_again.version_id);
    assert_eq!(one.version_id, two.version_id);

    // A fresh cache (another peer) agrees too.
    let other = Indexer::new(f.games.clone(), Arc::new(Store::open_in_memory().unwrap()));
    let (fresh, _) = other
        .index_game("two", &CancellationToken::new(), &|_, _| {})
        .unwrap();
    assert_eq!(fresh.unwrap().version_id, one.version_id);
}

#[test]
fn changing_one_byte_changes_exactly_the_pieces_covering_it() {
    let f = Fixture::new();
    let mut data = bytes(5 * MIB, 4);
    f.write("g/a.bin", &bytes(MIB / 2, 5));
    f.write("g/b.bin", &data);
    let (before, _) = f.index("g");

    // b.bin starts at MIB/2; its byte 2*MIB sits at 2.5 MiB: piece 2.
    data[2 * MIB] ^= 0xff;
    // Same size, and make sure the mtime moves even on coarse clocks.
    f.write("g/b.bin", &data);
    bump_mtime(&f.games.join("g/b.bin"));
    let (after, _) = f.index("g");

    let changed: Vec<usize> = (0..before.manifest.n_pieces())
        .filter(|&i| before.manifest.pieces[i] != after.manifest.pieces[i])
        .collect();
    assert_eq!(changed, [2]);
    assert_ne!(before.version_id, after.version_id);
    assert_eq!(after.manifest.pieces, expected_pieces(&after));
}

fn bump_mtime(path: &Path) {
    let file = fs::File::options().write(true).open(path).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(10);
    file.set_modified(later).unwrap();
}

fn set_old_mtime(path: &Path) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

#[test]
fn the_cache_prevents_rehashing() {
    let f = Fixture::new();
    f.write("g/a.bin", &bytes(3 * MIB, 1));
    f.write("g/b.bin", &bytes(2 * MIB, 2));
    // Old mtimes: fresh ones are deliberately not trusted (racy window).
    set_old_mtime(&f.games.join("g/a.bin"));
    set_old_mtime(&f.games.join("g/b.bin"));

    let (first, _) = f.index("g");
    assert_eq!(f.indexer.bytes_hashed(), 5 * MIB as u64);

    let (second, _) = f.index("g");
    assert_eq!(
        f.indexer.bytes_hashed(),
        5 * MIB as u64,
        "nothing re-hashed"
    );
    assert_eq!(first.version_id, second.version_id);

    // Touch b.bin (same size): only the pieces overlapping it are read again.
    let mut b = bytes(2 * MIB, 2);
    b[0] ^= 1;
    f.write("g/b.bin", &b);
    set_old_mtime(&f.games.join("g/b.bin"));
    bump_mtime(&f.games.join("g/b.bin"));
    let (third, _) = f.index("g");
    assert_eq!(f.indexer.bytes_hashed(), 7 * MIB as u64);
    assert_eq!(third.manifest.pieces, expected_pieces(&third));
}

#[test]
fn a_fresh_game_waits_out_the_settle_time_but_an_unchanged_one_does_not() {
    let f = Fixture::new();
    f.write("g/a.bin", &bytes(MIB, 1));
    let settling = Indexer::new(f.games.clone(), f.indexer.store.clone())
        .with_settle(Duration::from_secs(7200));
    let cancel = CancellationToken::new();
    let fresh = settling.index_game("g", &cancel, &|_, _| {});
    assert!(matches!(fresh, Err(IndexError::Changed(_))), "just written");

    // Indexed once without settling, with a trusted mtime (an hour old,
    // still inside the two-hour settle time): a later scan finds it exactly
    // as recorded and offers it at once.
    set_old_mtime(&f.games.join("g/a.bin"));
    f.index("g");
    let again = settling.index_game("g", &cancel, &|_, _| {}).unwrap();
    assert!(again.0.is_some());

    // Touched again: it waits.
    f.write("g/a.bin", &bytes(MIB, 2));
    let touched = settling.index_game("g", &cancel, &|_, _| {});
    assert!(matches!(touched, Err(IndexError::Changed(_))));
}

#[test]
fn a_recently_modified_file_is_not_trusted_from_the_cache() {
    let f = Fixture::new();
    f.write("g/a.bin", &bytes(MIB, 1));
    f.index("g");
    f.index("g");
    // Its mtime is within the racy window, so it was hashed both times.
    assert_eq!(f.indexer.bytes_hashed(), 2 * MIB as u64);
}

#[test]
fn zero_byte_games_and_empty_files() {
    let f = Fixture::new();
    f.write("g/empty1", b"");
    f.write("g/dir/empty2", b"");
    fs::create_dir_all(f.games.join("h")).unwrap();

    let (g, errors) = f.index("g");
    assert!(errors.is_empty());
    assert_eq!(paths(&g), ["dir/empty2", "empty1"]);
    assert_eq!(g.manifest.n_pieces(), 0);
    g.manifest.validate().unwrap();

    let (h, _) = f.index("h");
    assert!(h.manifest.files.is_empty());
    assert_eq!(h.total_size, 0);
    assert_ne!(g.version_id, h.version_id);
}

#[test]
fn files_over_4_gib() {
    let f = Fixture::new();
    let big = (4u64 << 30) + 3;
    let path = f.games.join("g/huge.bin");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Sparse: reads as zeros without using the disk.
    let file = fs::File::create(&path).unwrap();
    file.set_len(big).unwrap();
    crate::fsx::write_all_at(&file, b"end", big - 3).unwrap();
    drop(file);

    let (game, _) = f.index("g");

    assert_eq!(game.total_size, big);
    assert_eq!(game.manifest.files[0].size, big);
    let n = game.manifest.n_pieces();
    assert_eq!(n as u64, big.div_ceil(MIB as u64));
    let zero_piece = Hash::of(&vec![0u8; MIB]);
    assert_eq!(game.manifest.pieces[0], zero_piece);
    let mut last = vec![0u8; 3];
    last.copy_from_slice(b"end");
    assert_eq!(game.manifest.pieces[n - 1], Hash::of(&last));
}

#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_are_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    f.write("g/ok.txt", b"ok");
    let bad = f
        .games
        .join("g")
        .join(std::ffi::OsStr::from_bytes(b"bad\xff.txt"));
    fs::write(bad, b"x").unwrap();

    let (game, errors) = f.index("g");
    assert_eq!(paths(&game), ["ok.txt"]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("UTF-8"), "{errors:?}");
}

#[cfg(unix)]
#[test]
fn names_illegal_on_windows_are_reported_and_skipped() {
    let f = Fixture::new();
    f.write("g/ok.txt", b"ok");
    f.write("g/aux.txt", b"x");
    f.write("g/what?.txt", b"x");
    f.write("g/dir/trailing.", b"x");

    let (game, errors) = f.index("g");
    assert_eq!(paths(&game), ["ok.txt"]);
    let mut reported: Vec<_> = errors.iter().map(|e| e.path.clone().unwrap()).collect();
    reported.sort();
    assert_eq!(reported, ["aux.txt", "dir/trailing.", "what?.txt"]);
    assert!(errors.iter().all(|e| e.message.contains("Windows")));
    // `dir` held only a skipped file: it is kept as an empty folder.
    assert_eq!(game.manifest.empty_dirs, ["dir"]);
}

#[cfg(unix)]
#[test]
fn symlinks_are_never_followed() {
    let f = Fixture::new();
    f.write("g/real.txt", b"real");
    let outside = f.games.parent().unwrap().join("secret.txt");
    fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, f.games.join("g/escape.txt")).unwrap();
    std::os::unix::fs::symlink(f.games.join("g/real.txt"), f.games.join("g/inside.txt")).unwrap();
    std::os::unix::fs::symlink("/", f.games.join("g/root")).unwrap();

    let (game, errors) = f.index("g");
    assert_eq!(paths(&game), ["real.txt"]);
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e.message.contains("symbolic link")));
}

#[cfg(target_os = "linux")]
#[test]
fn unreadable_files_are_reported_and_skipped() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.write("g/ok.txt", b"ok");
    f.write("g/locked.bin", b"secret");
    fs::set_permissions(
        f.games.join("g/locked.bin"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();

    // Root reads everything; drop that power on a thread of our own
    // (capabilities are per thread on Linux, and inherited by its children).
    let (game, errors) = std::thread::scope(|s| {
        s.spawn(|| {
            for cap in [
                caps::Capability::CAP_DAC_OVERRIDE,
                caps::Capability::CAP_DAC_READ_SEARCH,
            ] {
                let _ = caps::drop(None, caps::CapSet::Effective, cap);
            }
            f.index("g")
        })
        .join()
        .unwrap()
    });
    assert_eq!(paths(&game), ["ok.txt"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path.as_deref(), Some("locked.bin"));
    assert!(errors[0].message.contains("cannot read"));
}

#[test]
fn a_game_that_changes_while_hashed_is_not_indexed() {
    let f = Fixture::new();
    f.write("g/a.bin", &bytes(4 * MIB, 1));
    let path = f.games.join("g/a.bin");
    let changed = std::sync::atomic::AtomicBool::new(false);
    let result = f
        .indexer
        .index_game("g", &CancellationToken::new(), &|_, _| {
            // Still being copied in: the file grows after the first piece.
            if !changed.swap(true, Ordering::SeqCst) {
                let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
                std::io::Write::write_all(&mut file, b"more").unwrap();
            }
        });
    assert!(matches!(result, Err(IndexError::Changed(_))), "{result:?}");
}

#[test]
fn indexing_stops_when_cancelled() {
    let f = Fixture::new();
    f.write("g/a.bin", &bytes(8 * MIB, 1));
    let cancel = CancellationToken::new();
    let result = f.indexer.index_game("g", &cancel, &|_, _| cancel.cancel());
    assert!(matches!(result, Err(IndexError::Cancelled)), "{result:?}");
    assert!(f.indexer.bytes_hashed() < 8 * MIB as u64);
}

#[test]
fn metadata_and_thumbnail() {
    let f = Fixture::new();
    let png = b"\x89PNG\r\n\x1a\n-not-really-but-magic-is-enough";
    f.write("g/art/cover.png", png);
    f.write(
        "g/lanspread.toml",
        b"title = \"Unreal Tournament\"\nthumbnail = \"art/cover.png\"\nmax_players = 16\n",
    );
    let (game, errors) = f.index("g");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(game.metadata.title, "Unreal Tournament");
    let thumb = game.thumbnail.clone().unwrap();
    assert_eq!(thumb.mime, "image/png");
    assert_eq!(thumb.hash, Hash::of(png));
    // The metadata file is part of the game: a downloaded copy has it too.
    assert!(paths(&game).contains(&"lanspread.toml"));
}

#[test]
fn a_bad_metadata_file_is_a_soft_error() {
    let f = Fixture::new();
    f.write("g/lanspread.toml", b"title = [broken");
    f.write("g/cover.jpg", b"GIF89a not a jpeg");
    let (game, errors) = f.index("g");
    assert_eq!(game.metadata.title, "g");
    assert!(game.thumbnail.is_none());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].message.contains("lanspread.toml"));
    assert!(errors[1].message.contains("not a png"));
}

#[test]
fn lists_games_but_not_hidden_folders_or_files() {
    let f = Fixture::new();
    f.write("b/x", b"");
    f.write("a/x", b"");
    f.write(".lanspread-staging/partial/x", b"");
    f.write("stray-file.zip", b"");
    let (games, errors) = f.indexer.list_games();
    assert_eq!(games, ["a", "b"]);
    assert!(errors.is_empty());
}

#[test]
fn a_removed_game_is_gone() {
    let f = Fixture::new();
    f.write("g/a", b"1");
    f.index("g");
    fs::remove_dir_all(f.games.join("g")).unwrap();
    let (game, _) = f
        .indexer
        .index_game("g", &CancellationToken::new(), &|_, _| {})
        .unwrap();
    assert!(game.is_none());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
    /// Piece hashes equal BLAKE3 over the files laid end to end, whatever
    /// the sizes (including empty files).
    #[test]
    fn pieces_hash_the_concatenated_files(
        sizes in proptest::collection::vec(proptest::prop_oneof![
            proptest::strategy::Just(0usize), 0usize..3000, 0usize..(3 * MIB)], 1..8),
    ) {
        let f = Fixture::new();
        for (i, size) in sizes.iter().enumerate() {
            f.write(&format!("g/f{i:02}"), &bytes(*size, i as u8));
        }
        let (game, _) = f.index("g");
        proptest::prop_assert_eq!(game.manifest.pieces.clone(), expected_pieces(&game));
        proptest::prop_assert_eq!(game.total_size, sizes.iter().sum::<usize>() as u64);
    }
}

/// Issue 13: a folder whose names are one on Windows and macOS is
/// reported, not offered as a manifest others cannot install.
#[test]
fn names_that_collide_on_windows_and_macos_are_reported_not_offered() {
    let f = Fixture::new();
    f.write("g/Save.dat", b"a");
    f.write("g/save.dat", b"b");
    f.write("h/cafe\u{301}/x", b"a");
    f.write("h/caf\u{e9}/y", b"b");
    for game in ["g", "h"] {
        if fs::read_dir(f.games.join(game)).unwrap().count() != 2 {
            // This file system merges the two names itself (macOS, Windows).
            println!("skipped {game}: the file system folds these names into one");
            continue;
        }
        let (found, errors) = f
            .indexer
            .index_game(game, &CancellationToken::new(), &|_, _| {})
            .unwrap();
        assert!(found.is_none(), "{game} offered");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.starts_with("not offered: `")
                && errors[0].message.contains("one name"),
            "{errors:?}"
        );
    }
}

/// Issue 13: a game of more empty folders than any receiver accepts is
/// reported at indexing, and a too-long description is cut, not fatal.
#[test]
fn over_cap_games_are_reported_and_long_metadata_is_cut() {
    use lanspread_proto::manifest::MAX_EMPTY_DIRS;
    let f = Fixture::new();
    let mut list = scan::FileList {
        empty_dirs: (0..=MAX_EMPTY_DIRS).map(|i| format!("d{i:05}")).collect(),
        ..Default::default()
    };
    let why = check_listing(&list).unwrap_err();
    assert!(why.contains("empty folders"), "{why}");
    list.empty_dirs.pop();
    assert_eq!(check_listing(&list), Ok(()));

    let description = "d".repeat(5 << 20);
    f.write(
        "m/lanspread.toml",
        format!("description = \"{description}\"\n").as_bytes(),
    );
    let (game, errors) = f.index("m");
    assert_eq!(
        game.metadata.description.as_ref().map(String::len),
        Some(lanspread_proto::wire::MAX_DESCRIPTION_BYTES)
    );
    assert!(errors[0].message.contains("description"), "{errors:?}");
}
