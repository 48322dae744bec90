//! The real `lanspread-peer` binary on 127.0.0.1 with `--no-mdns --peer`.
#![cfg(unix)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{output_within, peer_command, ServeChild, PEER};

/// Bound on a one-shot command that should end by itself in a few seconds.
const COMMAND_WITHIN: Duration = Duration::from_secs(60);

fn shared_game(root: &Path) -> PathBuf {
    let games = root.join("host/games");
    fs::create_dir_all(games.join("openarena/baseoa")).unwrap();
    fs::write(games.join("openarena/baseoa/pak0.pk3"), vec![42u8; 3 << 20]).unwrap();
    fs::write(games.join("openarena/readme.txt"), b"frag responsibly").unwrap();
    fs::write(
        games.join("openarena/lanspread.toml"),
        b"title = \"OpenArena\"\nversion = \"0.8.8\"\n",
    )
    .unwrap();
    games
}

/// A temp dir with a host serving the shared game on 127.0.0.1, indexed.
fn host() -> (tempfile::TempDir, PathBuf, ServeChild) {
    let dir = tempfile::tempdir().unwrap();
    let games = shared_game(dir.path());
    let serve = ServeChild::start(&games, &dir.path().join("host/data"), &[]);
    serve.indexed("openarena");
    (dir, games, serve)
}

/// `lanspread-peer download GAME` into `root/guest`, from the host at `addr`.
fn download(root: &Path, game: &str, addr: SocketAddr, wait: u32) -> Output {
    let mut command = peer_command([
        "download",
        game,
        "--no-mdns",
        "-q",
        "--wait",
        &wait.to_string(),
    ]);
    command
        .args(["--peer", &addr.to_string()])
        .arg("--games")
        .arg(root.join("guest/games"))
        .arg("--data")
        .arg(root.join("guest/data"));
    output_within(&mut command, COMMAND_WITHIN)
}

fn run(args: &[&str]) -> Output {
    output_within(&mut peer_command(args), COMMAND_WITHIN)
}

/// Runs `games` until it lists `needle`. `games` looks for a fixed `--wait`;
/// on a busy machine one look can end before the dial and listing do, so it
/// is run again, for at most 30 s.
fn games_until(addr: SocketAddr, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let out = run(&[
            "games",
            "--no-mdns",
            "-q",
            "--wait",
            "1",
            "--peer",
            &addr.to_string(),
        ]);
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        if stdout.contains(needle) {
            return stdout;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never listed: {stdout}"
        );
    }
}

#[test]
fn serve_and_games_list_the_game() {
    let (_dir, _games, host) = host();

    let listing = games_until(host.addr, "OpenArena");
    assert!(listing.contains("openarena"), "{listing}");
    assert!(listing.contains("3.0 MiB"), "{listing}");
    let row = listing.lines().find(|l| l.contains("OpenArena")).unwrap();
    assert!(row.trim_end().ends_with('1'), "one source: {row}");
    host.stop();
}

#[test]
fn serve_and_download_install_a_byte_identical_copy() {
    let (dir, games, host) = host();
    let target = dir.path().join("guest/games");
    fs::create_dir_all(&target).unwrap();

    let out = download(dir.path(), "openarena", host.addr, 20);

    assert!(out.status.success(), "{out:?}");
    for file in ["baseoa/pak0.pk3", "readme.txt", "lanspread.toml"] {
        assert_eq!(
            fs::read(games.join("openarena").join(file)).unwrap(),
            fs::read(target.join("openarena").join(file)).unwrap(),
            "{file}"
        );
    }
    host.stop();
}

#[test]
fn an_unknown_game_exits_3_within_wait() {
    let (dir, _games, host) = host();
    let target = dir.path().join("guest/games");
    fs::create_dir_all(&target).unwrap();

    let started = Instant::now();
    let out = download(dir.path(), "no-such-game", host.addr, 2);

    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // The promise of `--wait`: the 2 s it waits, plus a start and a stop
    // (at most 2 s), with room for a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no-such-game") && stderr.contains("not found"),
        "{stderr}"
    );
    host.stop();
}

#[test]
fn sigint_on_serve_exits_0_within_2_s() {
    let dir = tempfile::tempdir().unwrap();
    let games = shared_game(dir.path());
    let mut host = ServeChild::start(&games, &dir.path().join("host/data"), &[]);

    host.signal(libc::SIGINT);
    // 2 s is the product's promise: the desktop app and service managers
    // wait that long for a peer to say goodbye and stop.
    let (status, stderr) = host
        .wait_exit(Duration::from_secs(2))
        .expect("still running after 2 s");
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn bad_arguments_and_a_missing_games_dir_give_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let mut command = peer_command(["serve", "--no-mdns", "--listen", "127.0.0.1:0", "--games"]);
    command
        .arg(&missing)
        .arg("--data")
        .arg(dir.path().join("data"));
    let out = output_within(&mut command, COMMAND_WITHIN);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()) && stderr.contains("does not exist"),
        "{stderr}"
    );

    let out = run(&["serve", "--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not-an-address"), "{stderr}");

    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // A port in use, and a data folder that cannot be one: one line, exit 2.
    let games = shared_game(dir.path());
    let first = ServeChild::start(&games, &dir.path().join("first"), &[]);
    let mut command = peer_command(["serve", "--no-mdns", "--listen"]);
    command
        .arg(first.addr.to_string())
        .arg("--games")
        .arg(&games)
        .arg("--data")
        .arg(dir.path().join("second"));
    let out = output_within(&mut command, COMMAND_WITHIN);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    let not_a_folder = dir.path().join("file");
    fs::write(&not_a_folder, b"").unwrap();
    let mut command = peer_command(["serve", "--no-mdns", "--listen", "127.0.0.1:0", "--games"]);
    command
        .arg(&games)
        .arg("--data")
        .arg(not_a_folder.join("data"));
    let out = output_within(&mut command, COMMAND_WITHIN);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("data folder"), "{stderr}");

    // A broken config file: one line, exit 2.
    let config = dir.path().join("bad.toml");
    fs::write(&config, "games = [").unwrap();
    let out = output_within(
        Command::new(PEER).arg("serve").arg("--config").arg(&config),
        COMMAND_WITHIN,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
    first.stop();
}

#[test]
fn a_config_file_works_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let games = shared_game(dir.path());
    let config = dir.path().join("serve.toml");
    fs::write(
        &config,
        format!(
            "games = {:?}\ndata = {:?}\nlisten = \"127.0.0.1:1\"\nmdns = false\n",
            games.display().to_string(),
            dir.path().join("host/data").display().to_string()
        ),
    )
    .unwrap();
    let mut command = peer_command(["serve", "-q", "--listen", "127.0.0.1:0", "--config"]);
    command.arg(&config);
    let host = ServeChild::spawn(command);

    assert_ne!(host.addr.port(), 1, "--listen wins over the file");
    let listing = games_until(host.addr, "OpenArena");
    assert!(listing.contains("openarena"));
    host.stop();
}
