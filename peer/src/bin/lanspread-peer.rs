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
#[command(
    name = "lanspread-peer",
    version,
    about,
    after_help = "Exit codes: 0 success; 2 usage error or bad argument; 3 game not found on the \
                  LAN within --wait; 4 download failed (integrity, disk, peers gone); 130 interrupted."
)]
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
        /// A TOML file with any of the flags below (`games = "/srv/games"`,
        /// `upload_limit = 50000000`, `peers = ["host:27600"]`, ...); flags
        /// given on the command line win.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The folder of games to share: one game per top-level folder.
        #[arg(long)]
        games: Option<PathBuf>,
        /// Where identity, state and caches live [default: the platform data dir].
        #[arg(long)]
        data: Option<PathBuf>,
        /// The name other peers show for this one [default: the host name].
        #[arg(long)]
        name: Option<String>,
        /// UDP address the QUIC server listens on [default: 0.0.0.0:27600].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Upload limit in bytes per second for everything served [default: 0 = none].
        #[arg(long)]
        upload_limit: Option<u64>,
        /// Only peers that know this key may connect (and we only connect to them).
        #[arg(long, env = "LANSPREAD_PARTY_KEY")]
        party_key: Option<String>,
        /// A peer to dial, `[peer-id@]host[:port]`; repeat for more. Remembered.
        #[arg(long = "peer", value_name = "HOST:PORT")]
        peers: Vec<String>,
        /// Do not announce or browse with mDNS (manual peers and exchange only).
        #[arg(long)]
        no_mdns: bool,
        /// Run as the party's organizer: publish the lineup of `lineup set`
        /// (under a party key only an organizer's lineup is taken).
        #[arg(long)]
        organizer: bool,
        /// Queue the games of the lineup by themselves ("keep me ready").
        #[arg(long)]
        keep_ready: bool,
        /// Print every event as one JSON object per line on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Tonight's lineup: set the one a `serve` with the same --data
    /// publishes, or show the LAN's.
    Lineup {
        #[command(subcommand)]
        action: LineupAction,
    },
    /// Print the ready board: every peer's state for each lineup game.
    Ready {
        #[command(flatten)]
        look: LookArgs,
        /// Print the board as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a game from the LAN into a games folder.
    Download {
        /// The game id (its folder name) or a version id.
        game: String,
        /// The games folder to install into (it is shared meanwhile).
        #[arg(long)]
        games: PathBuf,
        /// Where identity, state and caches live [default: the platform data dir].
        #[arg(long)]
        data: Option<PathBuf>,
        /// A peer to dial, `[peer-id@]host[:port]`; repeat for more.
        #[arg(long = "peer", value_name = "HOST:PORT")]
        peers: Vec<String>,
        /// Do not use mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// Seconds to wait for a source of the game.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Keep serving after the download, like `serve`, until interrupted.
        #[arg(long)]
        seed: bool,
        /// UDP address to listen on while downloading and seeding.
        #[arg(long, default_value_t = std::net::SocketAddr::from(([0, 0, 0, 0], 0)))]
        listen: std::net::SocketAddr,
        /// Only peers that know this key may connect (and we only connect to them).
        #[arg(long, env = "LANSPREAD_PARTY_KEY")]
        party_key: Option<String>,
        /// Upload limit in bytes per second for what we serve meanwhile (0 = none).
        #[arg(long, default_value_t = 0)]
        upload_limit: u64,
        /// One connection per source, however fast (by default a source
        /// faster than a gigabit link gets a second one).
        #[arg(long)]
        one_connection_per_source: bool,
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

#[derive(Debug, Subcommand)]
enum LineupAction {
    /// Replace the lineup with these games, in order: `GAME[@TIME]` each, a
    /// game id or version id and an optional time (`quake3@21:00`). A
    /// running `serve --organizer` with this --data publishes it within a
    /// second.
    Set {
        #[arg(required = true, value_name = "GAME[@TIME]")]
        games: Vec<String>,
        /// The data folder of the peer that publishes it [default: the platform data dir].
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Withdraw the lineup.
    Clear {
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Print the lineups on the LAN.
    Show {
        #[command(flatten)]
        look: LookArgs,
        /// Print them as JSON.
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

// Long on purpose: one arm per subcommand, each the few lines of flag
// handling that command needs; the work is in the library.
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Download {
            game,
            games,
            data,
            peers,
            no_mdns,
            wait,
            seed,
            listen,
            party_key,
            upload_limit,
            one_connection_per_source,
            json,
        } => {
            let mut config = PeerConfig::new(games, data_dir(data)?);
            config.listen = listen;
            config.upload_limit = upload_limit;
            if one_connection_per_source {
                config.second_connection_at = u64::MAX;
            }
            config.peers = peers;
            config.mdns = !no_mdns;
            config.party_key = party_key;
            download(config, &game, wait, seed, json).await
        }
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
        Command::Lineup { action } => lineup(action).await,
        Command::Ready { look: args, json } => {
            let board = look(args, |h| h.ready_board()).await?;
            if json {
                println!("{}", serde_json::to_string(&board)?);
            } else {
                print_board(&board);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            config: file,
            games,
            data,
            name,
            listen,
            upload_limit,
            party_key,
            peers,
            no_mdns,
            organizer,
            keep_ready,
            json,
        } => {
            let file = match file {
                Some(path) => ServeFile::load(&path)?,
                None => ServeFile::default(),
            };
            let games = games.or(file.games).ok_or_else(|| {
                anyhow::anyhow!("no games folder: pass --games DIR (or `games` in --config)")
            })?;
            let mut config = PeerConfig::new(games, data_dir(data.or(file.data))?);
            if let Some(name) = name.or(file.name) {
                config.display_name = name;
            }
            if let Some(listen) = listen.or(file.listen) {
                config.listen = listen;
            }
            config.upload_limit = upload_limit.or(file.upload_limit).unwrap_or(0);
            config.party_key = party_key.or(file.party_key);
            config.peers = if peers.is_empty() { file.peers } else { peers };
            config.mdns = !no_mdns && file.mdns.unwrap_or(true);
            config.organizer = organizer || file.organizer.unwrap_or(false);
            config.keep_ready = keep_ready || file.keep_ready.unwrap_or(false);
            let (handle, events) = start_peer(config).await?;
            let signals = StopSignals::listen()?;
            // One plain line whatever the log level (`-q` too): scripts wait
            // for it to know the port is bound (and that a signal now stops
            // the peer gracefully), and read the address from it.
            eprintln!("serving on {} as {}", handle.local_addr(), handle.peer_id());
            let printer = json.then(|| print_events(events));
            signals.recv().await?;
            // Quitting takes these away from peers still fetching them:
            // said, and the shutdown goes on (a host that stops, stops).
            for last in handle.last_copies() {
                let peers = if last.fetching == 1 {
                    "peer is"
                } else {
                    "peers are"
                };
                tracing::warn!(
                    "{} {peers} still fetching {} from us, and no other peer has all of it",
                    last.fetching,
                    last.title
                );
            }
            tracing::info!("shutting down");
            handle.shutdown();
            let report = handle.wait_stopped().await;
            if !report.stragglers.is_empty() {
                tracing::warn!(stragglers = ?report.stragglers, "not stopped by the shutdown deadline");
            }
            stop_printer(printer).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Shut the runtime down and exit with `code`.
async fn finish(
    handle: &lanspread_peer::PeerRuntimeHandle,
    printer: Option<tokio::task::JoinHandle<()>>,
    code: u8,
) -> ExitCode {
    handle.shutdown();
    handle.wait_stopped().await;
    stop_printer(printer).await;
    ExitCode::from(code)
}

/// End the event printer and wait for it: its join point.
async fn stop_printer(printer: Option<tokio::task::JoinHandle<()>>) {
    if let Some(printer) = printer {
        printer.abort();
        let _ = printer.await;
    }
}

/// Print events as JSON lines until aborted. A plain `tokio::spawn` because
/// the runtime's tracker is not the binary's; the caller owns the handle and
/// joins it in `stop_printer` on every exit path.
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
    let (handle, _) = start_peer(config).await?;
    tokio::time::sleep(std::time::Duration::from_secs(args.wait)).await;
    let result = inspect(&handle);
    handle.shutdown();
    handle.wait_stopped().await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(result)
}

async fn lineup(action: LineupAction) -> anyhow::Result<ExitCode> {
    use lanspread_peer::party::{parse_lineup_arg, LineupFile};
    match action {
        LineupAction::Set { games, data } => {
            let data = data_dir(data)?;
            let games = games.iter().map(|g| parse_lineup_arg(g)).collect();
            let file = LineupFile::replace(&data, games).map_err(|e| anyhow::anyhow!(e))?;
            eprintln!(
                "lineup of {} games saved in {}; a `serve --organizer --data {}` publishes it",
                file.games.len(),
                data.display(),
                data.display()
            );
        }
        LineupAction::Clear { data } => {
            let data = data_dir(data)?;
            LineupFile::replace(&data, Vec::new()).map_err(|e| anyhow::anyhow!(e))?;
            eprintln!("lineup withdrawn");
        }
        LineupAction::Show { look: args, json } => {
            let lineups = look(args, |h| h.lineups()).await?;
            if json {
                println!("{}", serde_json::to_string(&lineups)?);
            } else {
                print_lineups(&lineups);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_lineups(lineups: &[lanspread_peer::events::Lineup]) {
    if lineups.is_empty() {
        println!("No lineup on the LAN.");
        return;
    }
    if lineups.len() > 1 {
        println!("{} conflicting lineups:", lineups.len());
    }
    for lineup in lineups {
        let role = if lineup.organizer {
            "organizer"
        } else {
            "not an organizer"
        };
        let gone = if lineup.present { "" } else { ", gone" };
        println!(
            "by {} ({}{gone}) [{}]",
            lineup.publisher_name, role, lineup.publisher
        );
        for (i, entry) in lineup.entries.iter().enumerate() {
            println!(
                "  {:>2}. {:<32} {:<8} {:<24} {:>10}",
                i + 1,
                entry.title,
                entry.at.as_deref().unwrap_or(""),
                entry.game_id,
                human_size(entry.total_size)
            );
        }
    }
}

fn print_board(board: &lanspread_peer::events::ReadyBoard) {
    use lanspread_peer::events::ReadyState;
    if board.games.is_empty() {
        println!("No lineup on the LAN.");
        return;
    }
    for game in &board.games {
        // The looking peer itself is no attendee.
        let peers: Vec<_> = game.peers.iter().filter(|p| !p.us).collect();
        let ready = peers
            .iter()
            .filter(|p| matches!(p.state, ReadyState::Ready | ReadyState::Playing))
            .count();
        let at = game
            .at
            .as_deref()
            .map(|at| format!(" at {at}"))
            .unwrap_or_default();
        println!("{}{at}: {ready} / {} ready", game.title, peers.len());
        for p in peers {
            let state = match p.state {
                ReadyState::Ready => "ready".to_owned(),
                ReadyState::Playing => "playing".to_owned(),
                ReadyState::Outdated => "outdated".to_owned(),
                ReadyState::Missing => "missing".to_owned(),
                ReadyState::Downloading => {
                    let eta = p
                        .eta_secs
                        .map(|s| format!(", {s} s left"))
                        .unwrap_or_default();
                    format!("downloading {:.0} %{eta}", p.percent.unwrap_or(0.0))
                }
            };
            println!("  {:<24} {:<26} {state}", p.name, p.peer_id);
        }
    }
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

fn print_catalog(catalog: &[lanspread_peer::events::CatalogEntry]) {
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
            &entry.version_id.to_hex()[..12],
            human_size(entry.total_size),
            entry.sources.len()
        );
        for note in catalog_notes(entry) {
            println!("    {note}");
        }
    }
}

/// What the catalog says about an entry beyond its columns, in words: why
/// it is refused, which names its sources disagree on, what was cut.
fn catalog_notes(entry: &lanspread_peer::events::CatalogEntry) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(reason) = &entry.refused {
        notes.push(format!("refused: {reason}"));
    }
    if let Some(conflict) = &entry.conflict {
        if conflict.game_ids.len() > 1 {
            notes.push(format!(
                "sources disagree on the game id: `{}` (download it by the id you choose)",
                conflict.game_ids.join("`, `")
            ));
        }
        if conflict.titles.len() > 1 {
            notes.push(format!(
                "sources disagree on the title: “{}”",
                conflict.titles.join("”, “")
            ));
        }
    }
    notes.extend(entry.notes.iter().cloned());
    notes
}

fn print_diagnostics(report: &lanspread_peer::events::Diagnostics) {
    println!("peer id        {}", report.peer_id);
    println!("listening on   {} (UDP)", report.bound_addr);
    let buffers = &report.udp_buffers;
    println!(
        "UDP buffers    receive {} KiB, send {} KiB granted (asked {} KiB)",
        buffers.recv / 1024,
        buffers.send / 1024,
        buffers.asked / 1024
    );
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
        let used = match &i.skipped_because {
            None => "used".to_owned(),
            Some(reason) => format!("skipped: {reason}"),
        };
        println!("  {:<16} {:<40} {used}", i.name, i.addr);
    }
    if let Some(firewall) = &report.firewall {
        println!("firewall");
        if let Some(error) = &firewall.error {
            println!("  not checked: {error}");
        }
        for n in &firewall.networks {
            println!(
                "  network {:<20} {:<16} {}",
                n.name, n.interface, n.category
            );
        }
        println!("  on for         {}", firewall.enabled_profiles.join(", "));
        for rule in &firewall.rules {
            println!("  allowed by     {rule}");
        }
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

/// The `serve --config` file: every key optional, flags win.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    games: Option<PathBuf>,
    data: Option<PathBuf>,
    name: Option<String>,
    listen: Option<std::net::SocketAddr>,
    upload_limit: Option<u64>,
    party_key: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    mdns: Option<bool>,
    organizer: Option<bool>,
    keep_ready: Option<bool>,
}

impl ServeFile {
    fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
    }
}

/// Exit codes, as `--help` and the README list them.
mod exit {
    pub const NOT_FOUND: u8 = 3;
    pub const FAILED: u8 = 4;
    pub const INTERRUPTED: u8 = 130;
}

// Long on purpose: the CLI download in order (wait for a source, start,
// follow its events on a progress bar, seed); each exit path says its code.
async fn download(
    config: PeerConfig,
    target: &str,
    wait: u64,
    seed: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use lanspread_peer::{FailureCode, PeerEvent};

    let (handle, first_events) = start_peer(config).await?;
    // The printer shows every event from the start; the download below
    // follows its own events, which begin only once it is asked for.
    let mut events = handle.subscribe();
    let printer = json.then(|| print_events(first_events));

    // Wait for what the download needs: a game id resolves only to a
    // version a complete source offers (another downloader alone does not
    // say which version to get); a version id is enough with any source.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    let found = |h: &lanspread_peer::PeerRuntimeHandle| {
        h.catalog().iter().any(|e| {
            let by_version = e.version_id.to_hex() == target;
            let named = e.game_id == target
                || e.conflict
                    .as_ref()
                    .is_some_and(|c| c.game_ids.iter().any(|id| id == target));
            (named && (!e.sources.is_empty() || e.installed))
                || (by_version && (!e.sources.is_empty() || !e.partial_sources.is_empty()))
        })
    };
    loop {
        if found(&handle) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("lanspread-peer: game `{target}` not found on the LAN within {wait} s; check `lanspread-peer games` or `diagnose`");
            return Ok(finish(&handle, printer, exit::NOT_FOUND).await);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(finish(&handle, printer, exit::INTERRUPTED).await),
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
    let version_id = match handle.download(target).await {
        Ok(v) => v,
        Err(e) if e.code == FailureCode::AlreadyInstalled => {
            eprintln!("lanspread-peer: {e}");
            return Ok(finish(&handle, printer, 0).await);
        }
        Err(e) if e.code == FailureCode::NotFound => {
            eprintln!("lanspread-peer: {e}");
            return Ok(finish(&handle, printer, exit::NOT_FOUND).await);
        }
        Err(e) => {
            eprintln!("lanspread-peer: cannot download `{target}`: {e}");
            return Ok(finish(&handle, printer, exit::FAILED).await);
        }
    };
    let vid = version_id;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    };
    let outcome = loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                // A stopped runtime has nothing left to cancel.
                let _ = handle.cancel_download(version_id, false).await;
                break exit::INTERRUPTED;
            }
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => break exit::FAILED,
        };
        match event {
            PeerEvent::DownloadStarted {
                version_id,
                title,
                bytes_total,
                ..
            } if version_id == vid => {
                bar.set_length(bytes_total);
                bar.set_message(title);
            }
            PeerEvent::DownloadProgress {
                version_id,
                bytes_done,
                bytes_total,
                sources,
                ..
            } if version_id == vid => {
                bar.set_length(bytes_total);
                bar.set_position(bytes_done);
                let title = bar.message();
                let title = title.split(" (").next().unwrap_or("").to_owned();
                bar.set_message(format!("{title} ({} sources)", sources.len()));
            }
            PeerEvent::DownloadCompleted {
                version_id,
                game_id,
            } if version_id == vid => {
                bar.finish_and_clear();
                if !json {
                    eprintln!("lanspread-peer: {game_id} installed and verified");
                }
                break 0;
            }
            PeerEvent::DownloadFailed {
                version_id,
                message,
                ..
            } if version_id == vid => {
                bar.abandon();
                eprintln!("lanspread-peer: download failed: {message}");
                break exit::FAILED;
            }
            PeerEvent::DownloadPeersGone { version_id, .. } if version_id == vid => {
                bar.abandon();
                eprintln!(
                    "lanspread-peer: every source left; run the same command again to resume"
                );
                break exit::FAILED;
            }
            PeerEvent::DownloadCancelled { version_id, .. } if version_id == vid => {
                break exit::INTERRUPTED;
            }
            PeerEvent::DownloadWaiting {
                version_id,
                message,
                ..
            } if version_id == vid => {
                bar.println(format!("lanspread-peer: {message}"));
            }
            _ => {}
        }
    };
    if outcome == 0 && seed {
        if !json {
            eprintln!("lanspread-peer: seeding; Ctrl-C to stop");
        }
        wait_for_signal().await?;
    }
    Ok(finish(&handle, printer, outcome).await)
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
    StopSignals::listen()?.recv().await
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere). On unix they are caught from
/// `listen` on, so one that arrives before `recv` is awaited is not lost and
/// does not kill the process: `serve` listens before it says it is serving.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<Self> {
        #[cfg(unix)]
        let signals = {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            }
        };
        #[cfg(not(unix))]
        let signals = Self {};
        Ok(signals)
    }

    async fn recv(self) -> anyhow::Result<()> {
        #[cfg(unix)]
        {
            let Self {
                mut interrupt,
                mut terminate,
            } = self;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")?;
        Ok(())
    }
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
