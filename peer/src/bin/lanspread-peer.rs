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
