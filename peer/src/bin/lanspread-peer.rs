//! `lanspread-peer`: the lanspread runtime without a UI, for hosts and scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lanspread_peer::{start_peer, PeerConfig};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Share and download games on the LAN, without a window.
#[derive(Debug, Parser)]
#[command(name = "lanspread-peer", version, about)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Share a games folder until interrupted (SIGINT/SIGTERM).
    Serve {
        /// The folder of games to share: one game per top-level folder.
        #[arg(long)]
        games: PathBuf,
        /// Where identity, state and caches live [default: the platform data dir].
        #[arg(long)]
        data: Option<PathBuf>,
        /// The name other peers show for this one [default: the host name].
        #[arg(long)]
        name: Option<String>,
        /// UDP address the QUIC server listens on.
        #[arg(long, default_value_t = std::net::SocketAddr::from(([0, 0, 0, 0], lanspread_peer::config::DEFAULT_PORT)))]
        listen: std::net::SocketAddr,
        /// Upload limit in bytes per second for everything served (0 = none).
        #[arg(long, default_value_t = 0)]
        upload_limit: u64,
        /// Only peers that know this key may connect (and we only connect to them).
        #[arg(long, env = "LANSPREAD_PARTY_KEY")]
        party_key: Option<String>,
        /// A peer to dial, `[peer-id@]host[:port]`; repeat for more. Remembered.
        #[arg(long = "peer", value_name = "HOST:PORT")]
        peers: Vec<String>,
        /// Do not announce or browse with mDNS (manual peers and exchange only).
        #[arg(long)]
        no_mdns: bool,
        /// Print every event as one JSON object per line on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the games on the LAN after discovering for a while.
    Games {
        #[command(flatten)]
        look: LookArgs,
        /// Print the catalog as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the "why can't I see peers" report.
    Diagnose {
        #[command(flatten)]
        look: LookArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Options of the commands that look at the LAN without sharing anything.
#[derive(Debug, clap::Args)]
struct LookArgs {
    /// Where identity and state live [default: a fresh temporary folder].
    #[arg(long)]
    data: Option<PathBuf>,
    /// A peer to dial, `[peer-id@]host[:port]`; repeat for more.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Do not use mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Seconds to discover before printing.
    #[arg(long, default_value_t = 3)]
    wait: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lanspread-peer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lanspread-peer: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Games { look: args, json } => {
            let catalog = look(args, |h| h.catalog()).await?;
            if json {
                println!("{}", serde_json::to_string(&catalog)?);
            } else {
                print_catalog(&catalog);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose { look: args, json } => {
            let report = look(args, |h| h.diagnostics()).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_diagnostics(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            games,
            data,
            name,
            listen,
            upload_limit,
            party_key,
            peers,
            no_mdns,
            json,
        } => {
            let mut config = PeerConfig::new(games, data_dir(data)?);
            if let Some(name) = name {
                config.display_name = name;
            }
            config.listen = listen;
            config.upload_limit = upload_limit;
            config.party_key = party_key;
            config.peers = peers;
            config.mdns = !no_mdns;
            let handle = start_peer(config).await?;
            tracing::info!(peer_id = %handle.peer_id(), addr = %handle.local_addr(), "serving");
            let printer = json.then(|| print_events(handle.subscribe()));
            wait_for_signal().await?;
            tracing::info!("shutting down");
            handle.shutdown();
            let report = handle.wait_stopped().await;
            if !report.stuck_services.is_empty() {
                tracing::warn!(services = ?report.stuck_services, "aborted after the shutdown deadline");
            }
            if let Some(printer) = printer {
                printer.abort();
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Print events as JSON lines until aborted. The task is aborted and joined
/// by the caller at exit.
fn print_events(
    mut events: tokio::sync::broadcast::Receiver<lanspread_peer::PeerEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use std::io::Write;
        loop {
            match events.recv().await {
                Ok(event) => {
                    let mut out = std::io::stdout().lock();
                    if let Ok(line) = serde_json::to_string(&event) {
                        let _ = writeln!(out, "{line}");
                        let _ = out.flush();
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} events not printed: output too slow");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

/// Run a runtime that shares an empty folder, discover for `--wait` seconds,
/// and hand it to `inspect`.
async fn look<T>(
    args: LookArgs,
    inspect: impl FnOnce(&lanspread_peer::PeerRuntimeHandle) -> T,
) -> anyhow::Result<T> {
    let scratch = tempdir()?;
    let games = scratch.join("games");
    std::fs::create_dir_all(&games).context("cannot create a temporary folder")?;
    let data = args.data.unwrap_or_else(|| scratch.join("data"));
    let mut config = PeerConfig::new(games, data);
    config.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    config.mdns = !args.no_mdns;
    config.peers = args.peers;
    config.display_name = format!("{} (looking)", config.display_name);
    let handle = start_peer(config).await?;
    tokio::time::sleep(std::time::Duration::from_secs(args.wait)).await;
    let result = inspect(&handle);
    handle.shutdown();
    handle.wait_stopped().await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(result)
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lanspread-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn print_catalog(catalog: &[lanspread_peer::peers::catalog::CatalogEntry]) {
    if catalog.is_empty() {
        println!("No games found on the LAN. Try `lanspread-peer diagnose`.");
        return;
    }
    println!(
        "{:<32} {:<24} {:<14} {:>10} {:>7}",
        "TITLE", "GAME ID", "VERSION", "SIZE", "SOURCES"
    );
    for entry in catalog {
        println!(
            "{:<32} {:<24} {:<14} {:>10} {:>7}",
            entry.title,
            entry.game_id,
            &entry.version_id[..12],
            human_size(entry.total_size),
            entry.sources.len()
        );
    }
}

fn print_diagnostics(report: &lanspread_peer::peers::diagnostics::Diagnostics) {
    println!("peer id        {}", report.peer_id);
    println!("listening on   {} (UDP)", report.bound_addr);
    let mdns = match (&report.mdns_enabled, &report.discovery) {
        (false, _) => "off".to_owned(),
        (true, Some(h)) => format!(
            "{:?}{}",
            h.state,
            h.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
        (true, None) => "not running".to_owned(),
    };
    println!("mDNS           {mdns}");
    println!("interfaces");
    for i in &report.interfaces {
        let used = if i.used_for_discovery {
            "used"
        } else {
            "skipped"
        };
        println!("  {:<16} {:<40} {used}", i.name, i.addr);
    }
    println!("peers");
    if report.peers.is_empty() {
        println!("  none");
    }
    for p in &report.peers {
        let addr = p.addr.map(|a| a.to_string()).unwrap_or_default();
        println!(
            "  {:<26} {:<20} {:<22} {:?} {}",
            p.peer_id,
            p.display_name,
            addr,
            p.state,
            p.last_error.clone().unwrap_or_default()
        );
    }
    for a in report.addresses.iter().filter(|a| a.last_error.is_some()) {
        println!(
            "  {:<26} failed: {}",
            a.addr,
            a.last_error.clone().unwrap_or_default()
        );
    }
    for hint in &report.hints {
        println!("hint: {hint}");
    }
}

fn data_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(dir) => Ok(dir),
        None => dirs::data_dir()
            .map(|d| d.join("lanspread"))
            .context("no platform data folder is known here; pass --data DIR"),
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
