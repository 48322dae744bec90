//! Download benchmarks, each a ratio measured in one run on loopback:
//! - one source: our download (verify + write + fsync) against a bare quinn
//!   stream of the same file, at 2 GiB and 4 GiB, with the downloader's peak
//!   RSS at both sizes;
//! - 10,000 small files against one file of the same total size;
//! - swarm: one seed and eight downloaders, every upload capped at R: time
//!   until all eight are done against the ideal F/R;
//! - real games: Debian's data packages of two open-source games (fetched
//!   with `apt-get download` into a cache outside the checkout, extracted
//!   with `dpkg-deb -x`), ~5k files and ~16k mostly small files: each one's
//!   rate and their ratio, with the downloader's and the server's CPU
//!   seconds per GB. Skipped, saying why, when the packages cannot be had;
//! - one 1 GiB file (`gib`): the downloader's and the server's CPU seconds
//!   per GB against a bare quinn client and server moving the same bytes
//!   (each side its own process, its CPU from `/proc` or its own
//!   `getrusage`), and the download's time against `curl` from
//!   `python3 -m http.server` followed by one fsync of the file.
//!
//! Run: `cargo bench -p lanspread-peer --bench download` (Linux: it reads
//! /proc). Every peer is a `lanspread-peer` process. Prints Markdown.
//! `LANSPREAD_BENCH_ONLY=one`, `layout`, `swarm`, `real` or `gib` runs one part alone.

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod bench {
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::common;

    const PEER: &str = env!("CARGO_BIN_EXE_lanspread-peer");

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        if args.get(1).map(String::as_str) == Some("--serve-bare") {
            runtime.block_on(common::serve_bare(args[2].clone()));
            return;
        }
        if args.get(1).map(String::as_str) == Some("--fetch-bare") {
            // A bare quinn client as its own process: fetch one stream, or
            // with `CONNECTIONS LEN` the file split over that many
            // connections, then print the bytes and this process's CPU
            // seconds.
            let addr: SocketAddr = args[2].parse().unwrap();
            let got = runtime.block_on(async {
                match (args.get(3), args.get(4)) {
                    (Some(n), Some(len)) => {
                        let conns = common::bare_connections(addr, n.parse().unwrap()).await;
                        common::bare_fetch_split(&conns, len.parse().unwrap()).await
                    }
                    _ => common::bare_fetch(&common::bare_connection(addr).await).await,
                }
            });
            println!("{got} {}", own_cpu_secs());
            return;
        }
        runtime.block_on(drive());
    }

    /// CPU seconds (user + system) this process has used.
    fn own_cpu_secs() -> f64 {
        // SAFETY: getrusage fills the struct we own.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    }

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    struct Proc(Child);

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn serve(games: &Path, data: &Path, port: u16, upload_limit: u64) -> Proc {
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
            .args(["--upload-limit", &upload_limit.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Proc(child)
    }

    /// Wait until `lanspread-peer games` sees `game` at `port`.
    fn wait_offered(port: u16, game: &str) {
        let started = Instant::now();
        loop {
            let out = Command::new(PEER)
                .args(["games", "--no-mdns", "-q", "--wait", "1", "--peer"])
                .arg(format!("127.0.0.1:{port}"))
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(game) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{game} never offered"
            );
        }
    }

    struct Run {
        started: Instant,
        /// DownloadStarted to DownloadCompleted.
        took: Duration,
        /// Peak resident set of the downloader (VmHWM), bytes.
        peak_rss: u64,
    }

    fn vm_hwm(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024
    }

    /// Start `lanspread-peer download` as a process; its JSON events go to the
    /// returned reader.
    fn start_download(
        game: &str,
        dir: &Path,
        peers: &[String],
        extra: &[&str],
    ) -> (Proc, BufReader<std::process::ChildStdout>) {
        let mut cmd = Command::new(PEER);
        cmd.args([
            "download",
            game,
            "--no-mdns",
            "-q",
            "--json",
            "--wait",
            "60",
        ])
        .arg("--games")
        .arg(dir.join("games"))
        .arg("--data")
        .arg(dir.join("data"))
        .args(extra)
        .stdout(Stdio::piped());
        for p in peers {
            cmd.args(["--peer", p]);
        }
        std::fs::create_dir_all(dir.join("games")).unwrap();
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        (Proc(child), out)
    }

    /// Follow a download's events until it completes.
    fn follow(proc: &Proc, out: &mut BufReader<std::process::ChildStdout>) -> Run {
        let mut started = None;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "downloader ended early"
            );
            if line.contains("\"type\":\"downloadStarted\"") {
                started = Some(Instant::now());
            } else if line.contains("\"type\":\"downloadCompleted\"") {
                let started = started.expect("started first");
                return Run {
                    started,
                    took: started.elapsed(),
                    peak_rss: vm_hwm(proc.0.id()),
                };
            } else if line.contains("\"type\":\"downloadFailed\"") || line.contains("PeersGone") {
                panic!("download failed: {line}");
            }
        }
    }

    fn download_once(game: &str, dir: &Path, peers: &[String]) -> Run {
        let _ = std::fs::remove_dir_all(dir);
        let (proc, mut out) = start_download(game, dir, peers, &[]);
        let run = follow(&proc, &mut out);
        drop(proc);
        let _ = std::fs::remove_dir_all(dir);
        run
    }

    fn spawn_bare(file: &Path) -> (Proc, SocketAddr) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve-bare")
            .arg(format!("file:{}", file.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        (Proc(child), line.trim().parse().unwrap())
    }

    async fn drive() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().to_path_buf();
        let mib = |m: usize| m as f64 * 1048576.0;

        let only = std::env::var("LANSPREAD_BENCH_ONLY").unwrap_or_default();
        let (run_one, run_layout, run_swarm, run_real) = match only.as_str() {
            "one" => (true, false, false, false),
            "layout" => (false, true, false, false),
            "swarm" => (false, false, true, false),
            "real" => (false, false, false, true),
            "gib" => (false, false, false, false),
            _ => (true, true, true, true),
        };
        if only.is_empty() || only == "gib" {
            one_gib(&root);
        }
        // One source, 2 GiB and 4 GiB.
        let src = root.join("src/games");
        let mut rows = Vec::new();
        let (mut one, mut many) = (None, None);
        let (n_files, file_size) = (10_000usize, 16usize << 10);
        let total = n_files * file_size;
        let port = free_port();
        let seed_addr = vec![format!("127.0.0.1:{port}")];
        std::fs::create_dir_all(&src).unwrap();
        let _seed = (run_one || run_layout).then(|| serve(&src, &root.join("src/data"), port, 0));
        if run_one {
            for size in [2048usize, 4096] {
                let game = format!("big{size}");
                std::fs::create_dir_all(src.join(&game)).unwrap();
                common::write_random(&src.join(&game).join("data.bin"), size, size as u64);
            }
            for size in [2048usize, 4096] {
                let game = format!("big{size}");
                wait_offered(port, &game);
                let file = src.join(&game).join("data.bin");
                let (bare_proc, bare_addr) = spawn_bare(&file);
                let bare_conn = common::bare_connection(bare_addr).await;
                let t0 = Instant::now();
                let got = common::bare_fetch(&bare_conn).await;
                let bare = t0.elapsed();
                assert_eq!(got, size << 20);
                let copy = root.join("bare-copy.bin");
                let t0 = Instant::now();
                let got = common::bare_fetch_to_file(&bare_conn, &copy).await;
                let bare_disk = t0.elapsed();
                assert_eq!(got, size << 20);
                let _ = std::fs::remove_file(&copy);
                drop(bare_proc);
                let ours = download_once(&game, &root.join("dst"), &seed_addr);
                rows.push((size, bare, bare_disk, ours));
            }
        }
        if run_layout {
            // Many small files against one file of the same size.
            std::fs::create_dir_all(src.join("many")).unwrap();
            for i in 0..n_files {
                let dir = src.join("many").join(format!("d{:03}", i / 100));
                std::fs::create_dir_all(&dir).unwrap();
                let mut data = vec![(i % 251) as u8; file_size];
                data[..8].copy_from_slice(&(i as u64).to_le_bytes());
                std::fs::write(dir.join(format!("f{i:05}.dat")), data).unwrap();
            }
            std::fs::create_dir_all(src.join("one")).unwrap();
            common::write_random(&src.join("one").join("data.bin"), total >> 20, 99);
            wait_offered(port, "many");
            wait_offered(port, "one");
            one = Some(download_once("one", &root.join("dst"), &seed_addr));
            many = Some(download_once("many", &root.join("dst"), &seed_addr));
        }

        if !rows.is_empty() {
            println!("| one source | bare quinn MB/s | bare quinn to disk MB/s | ours MB/s | ours/bare | ours/bare to disk | downloader peak RSS |");
            println!("|---|---|---|---|---|---|---|");
        }
        for (size, bare, bare_disk, ours) in &rows {
            println!(
                "| {} GiB | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} MiB |",
                size / 1024,
                mib(*size) / bare.as_secs_f64() / 1e6,
                mib(*size) / bare_disk.as_secs_f64() / 1e6,
                mib(*size) / ours.took.as_secs_f64() / 1e6,
                bare.as_secs_f64() / ours.took.as_secs_f64(),
                bare_disk.as_secs_f64() / ours.took.as_secs_f64(),
                ours.peak_rss as f64 / 1048576.0
            );
        }
        println!();
        if let (Some(one), Some(many)) = (&one, &many) {
            println!("| layout | MB/s | ratio to one file |");
            println!("|---|---|---|");
            let rate = |run: &Run| total as f64 / run.took.as_secs_f64() / 1e6;
            println!(
                "| one file of {} MiB | {:.0} | 1.00 |",
                total >> 20,
                rate(one)
            );
            println!(
                "| {n_files} files of {} KiB | {:.0} | {:.2} |",
                file_size >> 10,
                rate(many),
                one.took.as_secs_f64() / many.took.as_secs_f64()
            );
            println!();
        }
        if run_swarm {
            swarm(&root);
        }
        if run_real {
            real_games(&root);
        }
    }

    /// CPU seconds (user + system) a process has used so far.
    fn cpu_secs(pid: u32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf reads a constant of the system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / hz
    }

    /// Regular files below `dir` and their bytes (links not followed).
    fn count_files(dir: &Path) -> (usize, u64) {
        let mut total = (0, 0);
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                let (n, b) = count_files(&entry.path());
                total = (total.0 + n, total.1 + b);
            } else if meta.is_file() {
                total = (total.0 + 1, total.1 + meta.len());
            }
        }
        total
    }

    /// The two Debian packages: (game id, package).
    const REAL_GAMES: [(&str, &str); 2] = [
        ("supertuxkart", "supertuxkart-data"),
        ("wesnoth", "wesnoth-1.16-data"),
    ];

    /// Fetch (once, into a cache outside the checkout) and extract the real
    /// games below `games`. `Err`: why they cannot be had here.
    fn fetch_real_games(games: &Path) -> Result<(), String> {
        let cache = std::env::var_os("LANSPREAD_BENCH_DEBS")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/lanspread/bench-debs"))
            })
            .ok_or("no HOME and no LANSPREAD_BENCH_DEBS for the package cache")?;
        std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
        for (game, package) in REAL_GAMES {
            let find = || {
                std::fs::read_dir(&cache).ok().and_then(|entries| {
                    entries.flatten().map(|e| e.path()).find(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                        })
                    })
                })
            };
            if find().is_none() {
                let status = Command::new("apt-get")
                    .args(["download", package])
                    .current_dir(&cache)
                    .stdout(Stdio::null())
                    .status()
                    .map_err(|e| format!("cannot run apt-get: {e}"))?;
                if !status.success() {
                    return Err(format!("`apt-get download {package}` failed ({status})"));
                }
            }
            let deb = find().ok_or(format!("{package}: no .deb after apt-get download"))?;
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(games.join(game))
                .status()
                .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
            if !status.success() {
                return Err(format!("`dpkg-deb -x {}` failed ({status})", deb.display()));
            }
        }
        Ok(())
    }

    /// Each real game served by one peer and downloaded by another, twice,
    /// alternating; rates and CPU per GB over both rounds.
    fn real_games(root: &Path) {
        let games = root.join("real/games");
        std::fs::create_dir_all(&games).unwrap();
        if let Err(why) = fetch_real_games(&games) {
            println!("real games: skipped: {why}");
            return;
        }
        let port = free_port();
        let seed = serve(&games, &root.join("real/data"), port, 0);
        let peers = vec![format!("127.0.0.1:{port}")];
        for (game, _) in REAL_GAMES {
            wait_offered(port, game);
        }
        // Per game: files, bytes, seconds, downloader CPU-s, server CPU-s.
        let mut totals = [(0usize, 0u64, 0.0f64, 0.0f64, 0.0f64); 2];
        // Each download gets a folder of its own, all removed at the end: on
        // an ext4 without a journal (this machine's disk) a new file skips
        // every inode freed in the last seconds to minutes, one check each,
        // so 16k files created just after 16k were deleted cost ~20 times
        // the CPU (`recently_deleted` in the kernel's profile).
        let dst = root.join("real/dst");
        for round in 0..2 {
            for (i, (game, _)) in REAL_GAMES.iter().enumerate() {
                let dir = dst.join(format!("{round}-{i}"));
                let server_before = cpu_secs(seed.0.id());
                let (proc, mut out) = start_download(game, &dir, &peers, &[]);
                let run = follow(&proc, &mut out);
                let downloader = cpu_secs(proc.0.id());
                let server = cpu_secs(seed.0.id()) - server_before;
                drop(proc);
                let installed = dir.join("games").join(game);
                let (files, bytes) = count_files(&installed);
                let t = &mut totals[i];
                *t = (
                    files,
                    t.1 + bytes,
                    t.2 + run.took.as_secs_f64(),
                    t.3 + downloader,
                    t.4 + server,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dst);
        println!("| real game | files | MB | MB/s | downloader CPU-s/GB | server CPU-s/GB |");
        println!("|---|---|---|---|---|---|");
        let rate = |t: &(usize, u64, f64, f64, f64)| t.1 as f64 / t.2 / 1e6;
        for ((game, package), t) in REAL_GAMES.iter().zip(&totals) {
            let gb = t.1 as f64 / 1e9;
            println!(
                "| {game} (`{package}`) | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
                t.0,
                t.1 as f64 / 2e6,
                rate(t),
                t.3 / gb,
                t.4 / gb
            );
        }
        println!();
        println!(
            "many-file game / few-file game rate: {:.2}",
            rate(&totals[1]) / rate(&totals[0])
        );
        println!();
    }

    /// One round of [`one_gib`]: CPU seconds per GB of each side, and
    /// seconds.
    struct GibRound {
        bare_client: f64,
        bare_server: f64,
        downloader: f64,
        server: f64,
        /// The bare client's process, start to exit (like curl's).
        bare: f64,
        /// The same with the file split over two connections.
        bare_two: f64,
        ours: f64,
        /// Ours with one connection per source.
        ours_one: f64,
        curl: Option<f64>,
    }

    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    /// One 1 GiB file, three rounds: a bare quinn server and client (each
    /// its own process), then our server and downloader, then `curl` from
    /// `python3 -m http.server` and one fsync. CPU per GB of each side, and
    /// the download's time against curl's; medians of the rounds.
    fn one_gib(root: &Path) {
        const MIB: usize = 1024;
        const ROUNDS: usize = 3;
        let games = root.join("gib/games");
        std::fs::create_dir_all(games.join("gib")).unwrap();
        let file = games.join("gib").join("data.bin");
        common::write_random(&file, MIB, 1024);
        let gb = (MIB << 20) as f64 / 1e9;
        let port = free_port();
        let seed = serve(&games, &root.join("gib/data"), port, 0);
        let peers = vec![format!("127.0.0.1:{port}")];
        wait_offered(port, "gib");
        let http = (Command::new("curl").arg("--version").output().is_ok())
            .then(|| {
                let http_port = free_port();
                let child = Command::new("python3")
                    .args(["-m", "http.server", "--bind", "127.0.0.1"])
                    .arg(http_port.to_string())
                    .arg("--directory")
                    .arg(games.join("gib"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()?;
                let proc = Proc(child);
                let url = format!("http://127.0.0.1:{http_port}/data.bin");
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(10) {
                    let head = Command::new("curl").args(["-sfI", &url]).output().ok()?;
                    if head.status.success() {
                        return Some((proc, url));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                None
            })
            .flatten();
        // Per round: bare client, bare server, our downloader, our server
        // (CPU-s/GB), our seconds, curl + fsync seconds.
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let (bare_proc, bare_addr) = spawn_bare(&file);
            let server_before = cpu_secs(bare_proc.0.id());
            let bare_started = Instant::now();
            let out = Command::new(std::env::current_exe().unwrap())
                .arg("--fetch-bare")
                .arg(bare_addr.to_string())
                .output()
                .unwrap();
            let bare = bare_started.elapsed().as_secs_f64();
            let bare_server = cpu_secs(bare_proc.0.id()) - server_before;
            let out = String::from_utf8_lossy(&out.stdout);
            let (got, bare_client) = out.trim().split_once(' ').unwrap();
            assert_eq!(got.parse::<usize>().unwrap(), MIB << 20);
            let bare_client: f64 = bare_client.parse().unwrap();
            let bare_started = Instant::now();
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--fetch-bare", &bare_addr.to_string(), "2"])
                .arg((MIB << 20).to_string())
                .output()
                .unwrap();
            let bare_two = bare_started.elapsed().as_secs_f64();
            drop(bare_proc);
            let out = String::from_utf8_lossy(&out.stdout);
            let (got, _) = out.trim().split_once(' ').unwrap();
            assert_eq!(got.parse::<usize>().unwrap(), MIB << 20);

            let dir = root.join("gib/dst");
            let _ = std::fs::remove_dir_all(&dir);
            let server_before = cpu_secs(seed.0.id());
            let (proc, mut out) = start_download("gib", &dir, &peers, &[]);
            let run = follow(&proc, &mut out);
            let downloader = cpu_secs(proc.0.id());
            let server = cpu_secs(seed.0.id()) - server_before;
            drop(proc);
            let _ = std::fs::remove_dir_all(&dir);
            // The same download kept to one connection per source.
            let (proc, mut out) =
                start_download("gib", &dir, &peers, &["--one-connection-per-source"]);
            let ours_one = follow(&proc, &mut out).took.as_secs_f64();
            drop(proc);
            let _ = std::fs::remove_dir_all(&dir);

            let curl = http.as_ref().map(|(_, url)| {
                let dst = root.join("gib/curl.bin");
                let t0 = Instant::now();
                let status = Command::new("curl")
                    .args(["-s", "-o"])
                    .arg(&dst)
                    .arg(url)
                    .status()
                    .unwrap();
                assert!(status.success());
                std::fs::File::open(&dst).unwrap().sync_all().unwrap();
                let took = t0.elapsed().as_secs_f64();
                assert_eq!(std::fs::metadata(&dst).unwrap().len(), (MIB << 20) as u64);
                let _ = std::fs::remove_file(&dst);
                took
            });
            rounds.push(GibRound {
                bare_client: bare_client / gb,
                bare_server: bare_server / gb,
                downloader: downloader / gb,
                server: server / gb,
                bare,
                bare_two,
                ours: run.took.as_secs_f64(),
                ours_one,
                curl,
            });
        }
        println!("| 1 GiB, round | bare client CPU-s/GB | downloader CPU-s/GB | downloader/bare | bare server CPU-s/GB | server CPU-s/GB | server/bare | bare quinn s | bare quinn, 2 connections s | ours s | ours, 1 connection s | curl + fsync s | curl/ours | curl/ours, 1 connection | curl/bare quinn |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (i, r) in rounds.iter().enumerate() {
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
                i + 1,
                r.bare_client,
                r.downloader,
                r.downloader / r.bare_client,
                r.bare_server,
                r.server,
                r.server / r.bare_server,
                r.bare,
                r.bare_two,
                r.ours,
                r.ours_one,
                r.curl.map_or("-".into(), |c| format!("{c:.2}")),
                r.curl.map_or("-".into(), |c| format!("{:.2}", c / r.ours)),
                r.curl.map_or("-".into(), |c| format!("{:.2}", c / r.ours_one)),
                r.curl.map_or("-".into(), |c| format!("{:.2}", c / r.bare)),
            );
        }
        let m = |f: &dyn Fn(&GibRound) -> f64| median(rounds.iter().map(f).collect());
        let curl = |f: &dyn Fn(&GibRound) -> f64| {
            http.as_ref()
                .map_or("-".to_owned(), |_| format!("{:.2}", m(f)))
        };
        println!(
            "| median | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
            m(&|r| r.bare_client),
            m(&|r| r.downloader),
            m(&|r| r.downloader / r.bare_client),
            m(&|r| r.bare_server),
            m(&|r| r.server),
            m(&|r| r.server / r.bare_server),
            m(&|r| r.bare),
            m(&|r| r.bare_two),
            m(&|r| r.ours),
            m(&|r| r.ours_one),
            curl(&|r| r.curl.unwrap_or(0.0)),
            curl(&|r| r.curl.unwrap_or(0.0) / r.ours),
            curl(&|r| r.curl.unwrap_or(0.0) / r.ours_one),
            curl(&|r| r.curl.unwrap_or(0.0) / r.bare),
        );
        if http.is_none() {
            println!("curl comparison: skipped: curl or python3's http.server cannot run here");
        }
        println!();
    }

    /// Swarm: 1 seed + 8 downloaders, uploads capped at R.
    fn swarm(root: &Path) {
        const F_MIB: usize = 64;
        const R: u64 = 8 << 20;
        let swarm_src = root.join("swarm/games");
        std::fs::create_dir_all(swarm_src.join("swarm")).unwrap();
        common::write_random(&swarm_src.join("swarm").join("data.bin"), F_MIB, 5);
        let seed_port = free_port();
        let _swarm_seed = serve(&swarm_src, &root.join("swarm/data"), seed_port, R);
        wait_offered(seed_port, "swarm");
        let ports: Vec<u16> = (0..8).map(|_| free_port()).collect();
        let mut everyone: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        everyone.push(format!("127.0.0.1:{seed_port}"));
        let mut downloads = Vec::new();
        let t0 = Instant::now();
        for (i, port) in ports.iter().enumerate() {
            let dir = root.join(format!("swarm/d{i}"));
            let listen = format!("127.0.0.1:{port}");
            let rate = R.to_string();
            let extra = ["--seed", "--listen", &listen, "--upload-limit", &rate];
            downloads.push(start_download("swarm", &dir, &everyone, &extra));
        }
        let runs: Vec<Run> = downloads
            .iter_mut()
            .map(|(proc, out)| follow(proc, out))
            .collect();
        let launched = t0.elapsed();
        let first_start = runs.iter().map(|r| r.started).min().unwrap();
        let all_done = runs
            .iter()
            .map(|r| r.started + r.took - first_start)
            .max()
            .unwrap();
        let slowest = runs.iter().map(|r| r.took).max().unwrap();
        drop(downloads);
        let ideal = F_MIB as f64 * 1048576.0 / R as f64;

        println!("| swarm | value |");
        println!("|---|---|");
        println!("| game size F | {F_MIB} MiB |");
        println!("| upload cap R (every peer) | {} MiB/s |", R >> 20);
        println!("| ideal F/R | {ideal:.1} s |");
        println!(
            "| all 8 done, first start to last finish | {:.1} s |",
            all_done.as_secs_f64()
        );
        println!(
            "| the same from launching the 8 processes | {:.1} s |",
            launched.as_secs_f64()
        );
        println!(
            "| slowest download (started to done) | {:.1} s |",
            slowest.as_secs_f64()
        );
        println!(
            "| all done / ideal | {:.2} |",
            all_done.as_secs_f64() / ideal
        );
        println!(
            "| one host serving everyone would take | {:.1} s (8.00) |",
            ideal * 8.0
        );
    }
}

#[cfg(target_os = "linux")]
fn main() {
    bench::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("skipped: this benchmark reads /proc (Linux only)");
}
