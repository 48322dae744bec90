//! Indexing benchmark: our indexer against `b3sum` on the same files in the
//! same run, and the rescan time of an unchanged 10,000-file library.
//!
//! Run: `cargo bench -p lanspread-peer --bench indexing` (needs `b3sum` on
//! PATH; `scripts/setup.sh` installs it). Prints a Markdown table.
//! `LANSPREAD_BENCH_MIB` sets the data size (default 2048).

#[cfg(unix)]
mod bench {
    use std::fs;
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use lanspread_peer::library::monitor::Library;
    use lanspread_peer::library::Indexer;
    use lanspread_peer::store::Store;
    use tokio_util::sync::CancellationToken;

    pub fn main() {
        let mib: usize = std::env::var("LANSPREAD_BENCH_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2048);
        let dir = tempfile::tempdir().expect("temp dir");
        let games = dir.path().join("games");
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);

        // 1. Throughput: four files of pseudo-random data.
        let game = games.join("big");
        fs::create_dir_all(&game).unwrap();
        let per_file = mib / 4;
        let mut files = Vec::new();
        for i in 0..4 {
            let path = game.join(format!("data{i}.bin"));
            write_random(&path, per_file << 20, i as u32 + 1);
            files.push(path);
        }
        let bytes = (per_file << 20) as f64 * 4.0;
        // Warm the page cache for both contenders alike.
        for f in &files {
            let _ = fs::read(f).map(|b| b.len());
        }

        let b3 = measure_child(|| {
            let status = Command::new("b3sum")
                .arg("--num-threads")
                .arg(cores.to_string())
                .arg("--no-mmap")
                .args(&files)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("b3sum on PATH (scripts/setup.sh installs it)");
            assert!(status.success());
        });
        let store = Arc::new(Store::open_in_memory().unwrap());
        let indexer = Indexer::new(games.clone(), store);
        let ours = measure_self(|| {
            let (g, _) = indexer
                .index_game("big", &CancellationToken::new(), &|_, _| {})
                .unwrap();
            assert!(g.is_some());
        });
        // 2. Piece size: read + hash one file positionally, one thread,
        //    piece by piece, at several piece sizes.
        let mut piece_rows = Vec::new();
        let sample = fs::File::open(&files[0]).unwrap();
        let sample_len = (per_file << 20).min(512 << 20);
        for piece_size in [64usize << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20] {
            let mut buf = vec![0u8; piece_size];
            let t0 = Instant::now();
            let mut at = 0;
            while at < sample_len {
                lanspread_peer::fsx::read_exact_at(&sample, &mut buf, at as u64).unwrap();
                std::hint::black_box(blake3::hash(&buf));
                at += piece_size;
            }
            piece_rows.push((
                piece_size,
                sample_len as f64 / t0.elapsed().as_secs_f64() / 1e6,
            ));
        }
        fs::remove_dir_all(&game).unwrap();

        // 3. Rescan of an unchanged library: 100 games of 100 small files.
        let (n_games, per_game) = (100, 100);
        for g in 0..n_games {
            let dir = games.join(format!("game{g:03}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..per_game {
                fs::write(
                    dir.join(format!("file{f:03}.dat")),
                    [g as u8, f as u8, 1, 2, 3],
                )
                .unwrap();
                set_old_mtime(&dir.join(format!("file{f:03}.dat")));
            }
        }
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(data.path()).unwrap());
        let (events, _) = lanspread_peer::EventSink::new(16);
        let library = Library::new(
            Indexer::new(games.clone(), store),
            events,
            Duration::from_secs(1),
        );
        let cancel = CancellationToken::new();
        library.rescan(None, &cancel);
        assert_eq!(library.snapshot().len(), n_games);
        let hashed_before = library.indexer.bytes_hashed();
        let started = Instant::now();
        library.rescan(None, &cancel);
        let rescan = started.elapsed();
        assert_eq!(
            library.indexer.bytes_hashed(),
            hashed_before,
            "rescan hashed nothing"
        );

        let mbs = |secs: f64| bytes / secs / 1e6;
        println!("| measure | lanspread | b3sum | ratio |");
        println!("|---|---|---|---|");
        println!(
            "| wall MB/s ({} MiB, {cores} cores) | {:.0} | {:.0} | {:.2} |",
            mib,
            mbs(ours.wall),
            mbs(b3.wall),
            b3.wall / ours.wall
        );
        println!(
            "| MB per CPU-second | {:.0} | {:.0} | {:.2} |",
            mbs(ours.cpu),
            mbs(b3.cpu),
            b3.cpu / ours.cpu
        );
        println!(
            "| rescan, unchanged, {} files | {:.0} ms | | |",
            n_games * per_game,
            rescan.as_secs_f64() * 1000.0
        );
        println!();
        println!("| piece size | read + hash MB/s, one thread |");
        println!("|---|---|");
        for (piece_size, mbs) in piece_rows {
            println!("| {} KiB | {mbs:.0} |", piece_size >> 10);
        }
    }

    struct Cost {
        wall: f64,
        cpu: f64,
    }

    fn measure_self(f: impl FnOnce()) -> Cost {
        let (cpu0, t0) = (cpu_seconds(libc::RUSAGE_SELF), Instant::now());
        f();
        Cost {
            wall: t0.elapsed().as_secs_f64(),
            cpu: cpu_seconds(libc::RUSAGE_SELF) - cpu0,
        }
    }

    fn measure_child(f: impl FnOnce()) -> Cost {
        let (cpu0, t0) = (cpu_seconds(libc::RUSAGE_CHILDREN), Instant::now());
        f();
        Cost {
            wall: t0.elapsed().as_secs_f64(),
            cpu: cpu_seconds(libc::RUSAGE_CHILDREN) - cpu0,
        }
    }

    fn cpu_seconds(who: libc::c_int) -> f64 {
        // SAFETY: getrusage writes into the zeroed struct we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }

    fn write_random(path: &Path, len: usize, seed: u32) {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
        let mut x = seed as u64 | 1;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..len >> 20 {
            for chunk in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            out.write_all(&block).unwrap();
        }
        out.flush().unwrap();
    }

    fn set_old_mtime(path: &Path) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }
}

#[cfg(unix)]
fn main() {
    bench::main()
}

#[cfg(not(unix))]
fn main() {
    println!("skipped: this benchmark measures CPU time with getrusage, which is unix-only");
}
