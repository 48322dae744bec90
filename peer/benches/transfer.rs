//! Transfer benchmark, in one run on loopback: one game's pieces streamed over
//! one connection by our server, against a bare quinn stream of the same file
//! (read in 1 MiB chunks and written as they are read) with the same TLS and
//! transport settings. Each server runs in its own child process so its CPU
//! time can be read from /proc.
//!
//! Run: `cargo bench -p lanspread-peer --bench transfer`
//! (`LANSPREAD_BENCH_MIB` sets the size, default 1024;
//! `LANSPREAD_BENCH_BARE=memory` makes the bare server send one buffer from
//! memory over and over instead of reading the file: an upper bound no file
//! server reaches). Prints Markdown.

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod bench {
    use super::common;
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use lanspread_peer::net::bind_endpoint;
    use lanspread_peer::net::client::{connect, ClientHello};
    use lanspread_peer::net::identity::Identity;
    use lanspread_peer::{start_peer, PeerConfig};
    use lanspread_proto::wire::{Request, Response, MAX_PIECES_PER_REQUEST};
    use lanspread_proto::Hash;

    const ROUNDS: usize = 5;

    /// One round: (wall seconds, server CPU seconds) for bare, then ours.
    type Round = ((f64, f64), (f64, f64));

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        match args.get(1).map(String::as_str) {
            Some("--serve-ours") => runtime.block_on(serve_ours(&args[2])),
            Some("--serve-bare") => runtime.block_on(common::serve_bare(args[2].clone())),
            _ => runtime.block_on(drive()),
        }
    }

    fn mib() -> usize {
        std::env::var("LANSPREAD_BENCH_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024)
    }

    /// Child: a real peer sharing `games`; prints its address.
    async fn serve_ours(games: &str) {
        let data = tempfile::tempdir().unwrap();
        let mut config = PeerConfig::new(games, data.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.mdns = false;
        let (peer, mut events) = start_peer(config).await.unwrap();
        // Serve once the game is indexed: the library announces it.
        while peer.library().is_empty() {
            match events.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("the peer stopped before indexing: {e}"),
            }
        }
        println!("{}", peer.local_addr());
        // Run until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
        peer.shutdown();
        peer.wait_stopped().await;
    }

    fn spawn(args: &[&str]) -> (Child, SocketAddr) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line.trim().parse().unwrap())
    }

    fn cpu_seconds(pid: u32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15; after the `)` they are 12 and 13.
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    fn stop(mut child: Child) {
        drop(child.stdin.take());
        let _ = child.wait();
    }

    async fn drive() {
        let mib = mib();
        let bytes = mib << 20;
        let dir = tempfile::tempdir().unwrap();
        let game = dir.path().join("games/big");
        std::fs::create_dir_all(&game).unwrap();
        common::write_random(&game.join("data.bin"), mib, 0x2545_f491_4f6c_dd1d);

        let games = dir.path().join("games");
        let (ours_child, ours_addr) = spawn(&["--serve-ours", games.to_str().unwrap()]);
        let bare_source = match std::env::var("LANSPREAD_BENCH_BARE").as_deref() {
            Ok("memory") => format!("memory:{bytes}"),
            _ => format!("file:{}", game.join("data.bin").display()),
        };
        let (bare_child, bare_addr) = spawn(&["--serve-bare", &bare_source]);
        let identity = Identity::ephemeral();
        let endpoint = bind_endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let hello = || ClientHello {
            identity: &identity,
            display_name: "bench".into(),
            library_digest: Hash([0; 32]),
            record_version: 1,
            party_key: None,
            listen_port: 0,
        };

        let ours = connect(&endpoint, ours_addr, None, hello()).await.unwrap();
        let Response::Games(list) = ours.request(&Request::ListGames).await.unwrap() else {
            panic!()
        };
        let version_id = list[0].version_id;
        let Response::Manifest(manifest) = ours
            .request(&Request::GetManifest { version_id })
            .await
            .unwrap()
        else {
            panic!()
        };
        let n_pieces = manifest.n_pieces() as u32;
        let bare_conn = common::bare_connection(bare_addr).await;

        let mut rows: Vec<Round> = Vec::new();
        for _ in 0..ROUNDS {
            // Bare: one stream, all bytes.
            let cpu0 = cpu_seconds(bare_child.id());
            let t0 = Instant::now();
            assert_eq!(common::bare_fetch(&bare_conn).await, bytes);
            let bare = (
                t0.elapsed().as_secs_f64(),
                cpu_seconds(bare_child.id()) - cpu0,
            );

            // Ours: every piece, batches of MAX_PIECES_PER_REQUEST, two in flight.
            let cpu0 = cpu_seconds(ours_child.id());
            let t0 = Instant::now();
            let batches: Vec<Vec<u32>> = (0..n_pieces)
                .collect::<Vec<_>>()
                .chunks(MAX_PIECES_PER_REQUEST)
                .map(<[u32]>::to_vec)
                .collect();
            let mut got = 0usize;
            for pair in batches.chunks(2) {
                let mut fetches = Vec::new();
                for batch in pair {
                    let conn = ours.clone();
                    let batch = batch.clone();
                    fetches.push(tokio::spawn(async move {
                        let mut n = 0;
                        conn.get_pieces(version_id, batch, |_, d| n += d.len())
                            .await
                            .unwrap();
                        n
                    }));
                }
                for f in fetches {
                    got += f.await.unwrap();
                }
            }
            assert_eq!(got, bytes);
            let ours_cost = (
                t0.elapsed().as_secs_f64(),
                cpu_seconds(ours_child.id()) - cpu0,
            );
            rows.push((bare, ours_cost));
        }
        stop(ours_child);
        stop(bare_child);

        let total = |pick: fn(&Round) -> f64| rows.iter().map(pick).sum::<f64>();
        let (bare_wall, ours_wall) = (total(|r| r.0 .0), total(|r| r.1 .0));
        let (bare_cpu, ours_cpu) = (total(|r| r.0 .1), total(|r| r.1 .1));
        let mbs = |secs: f64| bytes as f64 / secs / 1e6;
        println!("| round | bare MB/s | ours MB/s | ours/bare | bare server CPU-s/GB | ours CPU-s/GB | ours/bare CPU |");
        println!("|---|---|---|---|---|---|---|");
        let gb = bytes as f64 / 1e9;
        for (i, (bare, ours)) in rows.iter().enumerate() {
            println!(
                "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                i + 1,
                mbs(bare.0),
                mbs(ours.0),
                bare.0 / ours.0,
                bare.1 / gb,
                ours.1 / gb,
                ours.1 / bare.1
            );
        }
        let n = ROUNDS as f64;
        println!(
            "| all {ROUNDS} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            mbs(bare_wall / n),
            mbs(ours_wall / n),
            bare_wall / ours_wall,
            bare_cpu / n / gb,
            ours_cpu / n / gb,
            ours_cpu / bare_cpu
        );
    }
}

#[cfg(target_os = "linux")]
fn main() {
    bench::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("skipped: this benchmark reads server CPU time from /proc (Linux only)");
}
