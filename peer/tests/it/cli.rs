//! The real `lanspread-peer` binary on 127.0.0.1 with `--no-mdns --peer`.
#![cfg(unix)]

use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PEER: &str = env!("CARGO_BIN_EXE_lanspread-peer");

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Serve(Child);

impl Serve {
    fn start(games: &Path, data: &Path, port: u16) -> Self {
        let child = Command::new(PEER)
            .args([
                "serve",
                "--no-mdns",
                "-q",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--games")
            .arg(games)
            .arg("--data")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Serve(child)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shared_game(root: &Path) -> std::path::PathBuf {
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

/// A temp dir with a host serving the shared game on 127.0.0.1.
fn host() -> (tempfile::TempDir, std::path::PathBuf, u16, Serve) {
    let dir = tempfile::tempdir().unwrap();
    let games = shared_game(dir.path());
    let port = free_port();
    let serve = Serve::start(&games, &dir.path().join("host/data"), port);
    (dir, games, port, serve)
}

/// `lanspread-peer download GAME` into `root/guest`, from the host at `port`.
fn download(root: &Path, game: &str, port: u16, wait: u32) -> Output {
    Command::new(PEER)
        .args([
            "download",
            game,
            "--no-mdns",
            "-q",
            "--wait",
            &wait.to_string(),
        ])
        .args(["--peer", &format!("127.0.0.1:{port}")])
        .arg("--games")
        .arg(root.join("guest/games"))
        .arg("--data")
        .arg(root.join("guest/data"))
        .output()
        .unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(PEER).args(args).output().unwrap()
}

/// Runs `games` until it lists `needle` (the host indexes after a quiet period).
fn games_until(port: u16, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let out = run(&[
            "games",
            "--no-mdns",
            "-q",
            "--wait",
            "1",
            "--peer",
            &format!("127.0.0.1:{port}"),
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
    let (_dir, _games, port, _host) = host();

    let listing = games_until(port, "OpenArena");
    assert!(listing.contains("openarena"), "{listing}");
    assert!(listing.contains("3.0 MiB"), "{listing}");
    let row = listing.lines().find(|l| l.contains("OpenArena")).unwrap();
    assert!(row.trim_end().ends_with('1'), "one source: {row}");
}

#[test]
fn serve_and_download_install_a_byte_identical_copy() {
    let (dir, games, port, _host) = host();
    games_until(port, "OpenArena");
    let target = dir.path().join("guest/games");
    fs::create_dir_all(&target).unwrap();

    let out = download(dir.path(), "openarena", port, 20);

    assert!(out.status.success(), "{out:?}");
    for file in ["baseoa/pak0.pk3", "readme.txt", "lanspread.toml"] {
        assert_eq!(
            fs::read(games.join("openarena").join(file)).unwrap(),
            fs::read(target.join("openarena").join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn an_unknown_game_exits_3_within_wait() {
    let (dir, _games, port, _host) = host();
    let target = dir.path().join("guest/games");
    fs::create_dir_all(&target).unwrap();

    let started = Instant::now();
    let out = download(dir.path(), "no-such-game", port, 2);

    assert_eq!(out.status.code(), Some(3), "{out:?}");
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
}

#[test]
fn sigint_on_serve_exits_0_within_2_s() {
    let dir = tempfile::tempdir().unwrap();
    let games = shared_game(dir.path());
    let mut host = Serve::start(&games, &dir.path().join("host/data"), free_port());
    std::thread::sleep(Duration::from_millis(1500));

    let started = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(host.0.id() as libc::pid_t, libc::SIGINT) };
    let status = loop {
        if let Some(status) = host.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still running after 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bad_arguments_and_a_missing_games_dir_give_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = Command::new(PEER)
        .args(["serve", "--no-mdns", "--listen", "127.0.0.1:0", "--games"])
        .arg(&missing)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
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
    let port = free_port();
    let _first = Serve::start(&games, &dir.path().join("first"), port);
    std::thread::sleep(Duration::from_millis(800));
    let out = Command::new(PEER)
        .args([
            "serve",
            "--no-mdns",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--games",
        ])
        .arg(&games)
        .arg("--data")
        .arg(dir.path().join("second"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    let not_a_folder = dir.path().join("file");
    fs::write(&not_a_folder, b"").unwrap();
    let out = Command::new(PEER)
        .args(["serve", "--no-mdns", "--listen", "127.0.0.1:0", "--games"])
        .arg(&games)
        .arg("--data")
        .arg(not_a_folder.join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("data folder"), "{stderr}");

    // A broken config file: one line, exit 2.
    let config = dir.path().join("bad.toml");
    fs::write(&config, "games = [").unwrap();
    let out = Command::new(PEER)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}

#[test]
fn a_config_file_works_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let games = shared_game(dir.path());
    let port = free_port();
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
    let mut child = Command::new(PEER)
        .args([
            "serve",
            "-q",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let listing = games_until(port, "OpenArena");
    let _ = child.kill();
    let _ = child.wait();
    assert!(listing.contains("openarena"));
}
