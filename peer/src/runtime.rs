//! The supervised peer runtime and its handle: [`start_peer`] opens the
//! disk state, binds the endpoint and starts the services; the
//! [`PeerRuntimeHandle`] is the only way in and out. The command loop and
//! the shutdown sequence live in `runtime/command_loop.rs`.

mod command_loop;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use lanspread_proto::{Hash, PeerId, VersionId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::PeerConfig;
use crate::download::{DownloadError, Engine, EngineParts};
use crate::events::{
    CatalogEntry, Diagnostics, DownloadInfo, EventSink, FailureCode, GameMode, HealthSnapshot,
    LastCopy, Lineup, LineupFetch, PeerEvent, PeerInfo, ReadyBoard, UdpBuffers,
};
use crate::games::{self, GameActionError};
use crate::health::HealthBoard;
use crate::library::metadata::Thumbnail;
use crate::library::monitor::{self, Library};
use crate::library::scan::ScanError;
use crate::library::{Indexer, LibrarySnapshot};
use crate::net::identity::{Identity, IdentityError};
use crate::net::limiter::UploadLimiter;
use crate::net::server::{self, ServerState};
use crate::net::{bind_watched_endpoint, tls, BoundEndpoint};
use crate::offer::Offer;
use crate::party::{self, LineupDraftEntry, Party, PartyError, PartyParts};
use crate::peers::diagnostics::{self, FirewallCheck};
use crate::peers::dialer::Dialer;
use crate::peers::discovery::{self, Discovery};
use crate::peers::liveness::{self, Liveness};
use crate::peers::thumbnails::{self, ThumbnailCache};
use crate::peers::PeerDirectory;
use crate::store::{Store, StoreError};
use crate::supervisor::{Backoff, ServiceContext, SupervisionPolicy, Supervisor};
use crate::tasks::RuntimeTasks;
use command_loop::CommandLoop;

/// Events buffered per subscriber before a slow one starts missing some
/// (it then sees `RecvError::Lagged` and can resynchronise from snapshots).
const EVENT_CAPACITY: usize = 1024;
/// Commands waiting for the command loop; senders wait when it is full.
const COMMAND_CAPACITY: usize = 64;

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("games folder {0} does not exist or is not a folder; create it or choose another")]
    GamesDirMissing(PathBuf),
    #[error("cannot create the data folder {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The cause comes from the OS error code ([`crate::net::BindCause`]).
    #[error("cannot listen on {addr}: {error}; {}", crate::net::BindCause::of(.error))]
    Bind {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A request to the running peer.
#[derive(Debug)]
pub enum PeerCommand {
    /// Reply with the health of every service.
    Health(oneshot::Sender<HealthSnapshot>),
    /// Download a game (game id or version id); replies with the version id.
    Download {
        target: String,
        reply: oneshot::Sender<Result<VersionId, DownloadError>>,
    },
    /// Cancel a download; with `delete` its staging data goes too.
    CancelDownload {
        version_id: VersionId,
        delete: bool,
        reply: oneshot::Sender<bool>,
    },
    /// Add a peer by `[peer-id@]host[:port]`, remember it, and dial it.
    AddPeer {
        address: String,
        reply: oneshot::Sender<Result<(), AddPeerError>>,
    },
}

/// Why a typed peer address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddPeerError {
    #[error("`{0}` is not a peer id (26 letters and digits 2-7)")]
    BadPeerId(String),
    #[error("cannot resolve `{address}`: {reason}")]
    Unresolved { address: String, reason: String },
    #[error("cannot remember the peer: {0}")]
    Store(String),
    #[error("the peer runtime has stopped")]
    RuntimeStopped,
}

impl AddPeerError {
    /// What a front end branches on.
    pub fn code(&self) -> FailureCode {
        match self {
            Self::BadPeerId(_) => FailureCode::BadPeerId,
            Self::Unresolved { .. } => FailureCode::Unresolved,
            Self::Store(_) => FailureCode::Io,
            Self::RuntimeStopped => FailureCode::RuntimeStopped,
        }
    }
}

/// Split `[peer-id@]host[:port]`; the port defaults to [`crate::config::DEFAULT_PORT`].
pub fn parse_peer_address(text: &str) -> Result<(String, Option<PeerId>), AddPeerError> {
    let text = text.trim();
    let (id, host) = match text.split_once('@') {
        Some((id, host)) => (
            Some(PeerId::parse(id).ok_or_else(|| AddPeerError::BadPeerId(id.to_owned()))?),
            host,
        ),
        None => (None, text),
    };
    if host.is_empty() {
        return Err(AddPeerError::Unresolved {
            address: text.to_owned(),
            reason: "empty address".into(),
        });
    }
    let port = crate::config::DEFAULT_PORT;
    let host = if host.parse::<std::net::SocketAddr>().is_ok() {
        host.to_owned()
    } else if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        std::net::SocketAddr::new(ip, port).to_string()
    } else {
        match host.rsplit_once(':') {
            Some((name, p)) if p.parse::<u16>().is_ok() && !name.contains(':') => host.to_owned(),
            _ => format!("{host}:{port}"),
        }
    };
    Ok((host, id))
}

/// The cloneable way to send commands to a running peer.
#[derive(Debug, Clone)]
pub struct PeerCommandSender(mpsc::Sender<PeerCommand>);

impl PeerCommandSender {
    /// Queue a command. Fails only once the runtime has stopped.
    pub async fn send(&self, command: PeerCommand) -> Result<(), RuntimeStopped> {
        self.0.send(command).await.map_err(|_| RuntimeStopped)
    }
}

/// The runtime has stopped and takes no more commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer runtime has stopped")]
pub struct RuntimeStopped;

impl RuntimeStopped {
    pub fn code(&self) -> FailureCode {
        FailureCode::RuntimeStopped
    }
}

/// How the runtime ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// True when the stop followed [`PeerRuntimeHandle::shutdown`]; false after a
    /// failure (a `Required` service, or the command channel closing unasked).
    pub requested: bool,
    /// Everything that had not stopped by the deadline, by name: tasks
    /// (services, downloads, connections, blocking disk work; the async
    /// ones were aborted), and `udp-socket` when the port was still held.
    pub stragglers: Vec<String>,
}

/// The front of a running peer: commands in, events out, health, shutdown.
pub struct PeerRuntimeHandle {
    commands: PeerCommandSender,
    events: EventSink,
    health: HealthBoard,
    library: Arc<Library>,
    server: Arc<ServerState>,
    directory: Arc<PeerDirectory>,
    engine: Arc<Engine>,
    tasks: RuntimeTasks,
    local_addr: std::net::SocketAddr,
    mdns: bool,
    mdns_interfaces: Vec<String>,
    udp_buffers: UdpBuffers,
    firewall: Arc<FirewallCheck>,
    /// Stops a firewall check still running at shutdown.
    firewall_token: CancellationToken,
    thumbnails: Arc<ThumbnailCache>,
    party: Arc<Party>,
    shutdown_token: CancellationToken,
    shutdown_requested: Arc<AtomicBool>,
    /// Holds the command loop, the runtime's last join point.
    root: TaskTracker,
    stopped: watch::Receiver<Option<StopReport>>,
}

impl PeerRuntimeHandle {
    pub fn sender(&self) -> PeerCommandSender {
        self.commands.clone()
    }

    /// Receive every event from now on. [`start_peer`] hands back a receiver
    /// subscribed before anything started; this one is for later listeners.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    pub fn health(&self) -> HealthSnapshot {
        self.health.snapshot()
    }

    /// This install's peer id.
    pub fn peer_id(&self) -> &PeerId {
        self.server.identity.peer_id()
    }

    /// The address the QUIC server is bound to.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Piece bytes this peer has sent to others since start.
    pub fn bytes_served(&self) -> u64 {
        self.server.bytes_served.load(Ordering::Relaxed)
    }

    /// Connections `peer` holds to our server now.
    pub fn connections_from(&self, peer: &PeerId) -> usize {
        self.server.connections_from(peer)
    }

    /// Change the upload limit (bytes per second, 0 = none) at once; game
    /// mode caps seeding below it while a game runs.
    pub fn set_upload_limit(&self, bytes_per_sec: u64) {
        self.party.set_upload_limit(bytes_per_sec);
    }

    /// The rate the upload limiter applies now (bytes per second, 0 =
    /// none): the upload limit, or game mode's cap.
    pub fn upload_rate(&self) -> u64 {
        self.server.limiter.rate()
    }

    /// Every lineup on the LAN: ours first, then organizers', present
    /// publishers, newest. More than one publisher: conflicting lineups,
    /// shown side by side.
    pub fn lineups(&self) -> Vec<Lineup> {
        self.party.lineups()
    }

    /// Publish our lineup (empty: withdraw it). Under a party key only an
    /// organizer may.
    pub fn publish_lineup(&self, entries: Vec<LineupDraftEntry>) -> Result<Lineup, PartyError> {
        self.party.publish(entries)
    }

    /// Queue every game of a lineup (`publisher`'s, or the one shown
    /// first) that is neither installed nor downloading.
    pub async fn get_lineup(&self, publisher: Option<PeerId>) -> Result<LineupFetch, PartyError> {
        self.party.fetch_lineup(publisher.as_ref()).await
    }

    /// Every present peer's state for each game of the lineup shown first.
    pub fn ready_board(&self) -> ReadyBoard {
        self.party.ready_board()
    }

    /// Ask every attendee to get a game of our lineup ready.
    pub fn ready_check(&self, version_id: VersionId) -> Result<(), PartyError> {
        self.party.ready_check(version_id)
    }

    /// Games only we have complete while present peers still fetch them:
    /// what quitting now would take away.
    pub fn last_copies(&self) -> Vec<LastCopy> {
        self.party.last_copies()
    }

    /// Whether a game started from lanspread runs, and the seeding cap.
    pub fn game_mode(&self) -> GameMode {
        self.party.game_mode()
    }

    /// "Keep me ready": queue the followed lineup's games by themselves.
    pub fn set_keep_ready(&self, keep: bool) {
        self.party.set_keep_ready(keep);
    }

    /// Seeding while a game runs, in percent of the upload limit (1-100).
    pub fn set_game_mode_upload_percent(&self, percent: u32) {
        self.party.set_game_mode_upload_percent(percent);
    }

    /// The games this peer shares (only games with a complete manifest).
    pub fn library(&self) -> Arc<LibrarySnapshot> {
        self.library.snapshot()
    }

    /// Watch the shared library change.
    pub fn subscribe_library(&self) -> watch::Receiver<Arc<LibrarySnapshot>> {
        self.library.subscribe()
    }

    /// Problems of the last scan (unreadable files, bad metadata, ...).
    pub fn scan_errors(&self) -> Vec<ScanError> {
        self.library.scan_errors()
    }

    /// Bytes read for hashing since start (the hash cache keeps it low).
    pub fn bytes_hashed(&self) -> u64 {
        self.library.indexer.bytes_hashed()
    }

    /// Ask the runtime to stop. Returns at once; see [`Self::wait_stopped`].
    pub fn shutdown(&self) {
        self.shutdown_requested.store(true, Ordering::SeqCst);
        self.shutdown_token.cancel();
    }

    /// Every peer known, connected or not.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.directory.peers()
    }

    /// The LAN catalog: every version of every game, with its sources.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.directory.catalog()
    }

    /// The "why can't I see peers" report.
    pub fn diagnostics(&self) -> Diagnostics {
        let discovery = self
            .health
            .snapshot()
            .into_iter()
            .find(|h| h.service == "discovery");
        // The report shows the last check; this one is for the next look.
        self.firewall.refresh(
            &self.tasks,
            self.firewall_token.clone(),
            self.local_addr.port(),
        );
        diagnostics::report(
            &self.directory,
            diagnostics::Facts {
                bound_addr: self.local_addr,
                mdns_enabled: self.mdns,
                discovery,
                allowed_interfaces: &self.mdns_interfaces,
                udp_buffers: self.udp_buffers,
                firewall: self.firewall.last(),
            },
        )
    }

    /// Start downloading `target` (a game id, or a version id in hex).
    pub async fn download(&self, target: &str) -> Result<VersionId, DownloadError> {
        let (reply, answer) = oneshot::channel();
        let command = PeerCommand::Download {
            target: target.to_owned(),
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| DownloadError::stopped())?;
        answer.await.map_err(|_| DownloadError::stopped())?
    }

    /// Cancel a download between pieces; `delete` also removes its staging
    /// data. Answers whether there was such a download.
    pub async fn cancel_download(
        &self,
        version_id: VersionId,
        delete: bool,
    ) -> Result<bool, RuntimeStopped> {
        let (reply, answer) = oneshot::channel();
        let command = PeerCommand::CancelDownload {
            version_id,
            delete,
            reply,
        };
        self.commands.send(command).await?;
        answer.await.map_err(|_| RuntimeStopped)
    }

    /// Downloads running or queued.
    pub fn downloads(&self) -> Vec<DownloadInfo> {
        self.engine.downloads()
    }

    /// Add a peer by `[peer-id@]host[:port]`; it is remembered and dialled.
    pub async fn add_peer(&self, address: &str) -> Result<(), AddPeerError> {
        let (reply, answer) = oneshot::channel();
        let command = PeerCommand::AddPeer {
            address: address.to_owned(),
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| AddPeerError::RuntimeStopped)?;
        answer.await.map_err(|_| AddPeerError::RuntimeStopped)?
    }

    /// The folder this peer shares and installs into.
    pub fn games_dir(&self) -> &Path {
        self.library.indexer.games_dir()
    }

    /// The game picture with `hash`: ours, or fetched from a peer that lists
    /// it and checked against the hash.
    pub async fn thumbnail(&self, hash: &Hash) -> Option<Thumbnail> {
        let local = self.library.snapshot();
        thumbnails::thumbnail(*hash, &local, &self.directory, &self.thumbnails).await
    }

    /// The folder of an installed game.
    pub fn game_folder(&self, game_id: &str) -> Result<PathBuf, GameActionError> {
        games::folder(&self.library.snapshot(), game_id)
    }

    /// Start an installed game's program (see [`games::launch`]).
    pub fn launch_game(&self, game_id: &str) -> Result<(), GameActionError> {
        games::launch(&self.library.snapshot(), game_id, self.engine.running())
    }

    /// Delete an installed game's folder (on the blocking pool); the library
    /// drops it and peers are told at once.
    pub async fn delete_game(&self, game_id: &str) -> Result<(), GameActionError> {
        let library = self.library.clone();
        let cancel = self.shutdown_token.clone();
        let game_id = game_id.to_owned();
        self.tasks
            .spawn_blocking(format!("delete {game_id}"), move || {
                games::delete(&library.snapshot(), &game_id)?;
                library.rescan(Some(vec![game_id]), &cancel);
                Ok(())
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Resolves once every task has finished (or was aborted after the
    /// deadline) and the UDP port is free. Cancel-safe: dropping it and
    /// calling again is fine.
    pub async fn wait_stopped(&self) -> StopReport {
        self.root.wait().await;
        self.stopped.borrow().clone().unwrap_or(StopReport {
            requested: false,
            stragglers: vec!["command-loop".into()],
        })
    }

    /// The stop report, without holding the handle.
    #[cfg(test)]
    fn stop_watch(&self) -> (TaskTracker, watch::Receiver<Option<StopReport>>) {
        (self.root.clone(), self.stopped.clone())
    }
}

/// Wait for the report of a runtime whose handle may be gone.
#[cfg(test)]
async fn wait_for_stop(
    (root, stopped): (TaskTracker, watch::Receiver<Option<StopReport>>),
) -> StopReport {
    root.wait().await;
    stopped
        .borrow()
        .clone()
        .expect("published before the loop ends")
}

type ServiceFn =
    Arc<dyn Fn(ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// A long-lived service the runtime starts under the supervisor.
pub(crate) struct ServiceSpec {
    name: &'static str,
    policy: SupervisionPolicy,
    run: ServiceFn,
}

impl ServiceSpec {
    pub(crate) fn new<F, Fut>(name: &'static str, policy: SupervisionPolicy, run: F) -> Self
    where
        F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            name,
            policy,
            run: Arc::new(move |ctx| Box::pin(run(ctx))),
        }
    }
}

/// What the default services are built from.
pub(crate) struct Parts {
    library: Arc<Library>,
    endpoint: quinn::Endpoint,
    server: Arc<ServerState>,
    liveness: Arc<Liveness>,
    discovery: Option<Arc<Discovery>>,
    party: Arc<Party>,
    tasks: RuntimeTasks,
}

fn default_services(parts: &Parts) -> Vec<ServiceSpec> {
    let (library, indexing) = (parts.library.clone(), parts.tasks.clone());
    let (endpoint, server, tasks) = (
        parts.endpoint.clone(),
        parts.server.clone(),
        parts.tasks.clone(),
    );
    let live = parts.liveness.clone();
    let mut services = vec![
        ServiceSpec::new("quic-server", SupervisionPolicy::Required, move |ctx| {
            server::run(ctx, endpoint.clone(), server.clone(), tasks.clone())
        }),
        ServiceSpec::new(
            "liveness",
            SupervisionPolicy::Restart(Backoff::DEFAULT),
            move |ctx| liveness::run(ctx, live.clone()),
        ),
        ServiceSpec::new(
            "library-monitor",
            SupervisionPolicy::Restart(Backoff::DEFAULT),
            move |ctx| monitor::run(ctx, library.clone(), indexing.clone()),
        ),
    ];
    let party = parts.party.clone();
    services.push(ServiceSpec::new(
        "party",
        SupervisionPolicy::Restart(Backoff::DEFAULT),
        move |ctx| party::run(ctx, party.clone()),
    ));
    if let Some(found) = parts.discovery.clone() {
        services.push(ServiceSpec::new(
            "discovery",
            SupervisionPolicy::Restart(Backoff::DEFAULT),
            move |ctx| discovery::run(ctx, found.clone()),
        ));
    }
    services
}

/// Start a peer runtime on the current tokio runtime. The receiver is
/// subscribed before any service starts: it misses no event.
pub async fn start_peer(
    config: PeerConfig,
) -> Result<(PeerRuntimeHandle, broadcast::Receiver<PeerEvent>), StartError> {
    start_with_services(config, default_services).await
}

/// What start reads from and creates on disk.
struct DiskState {
    store: Arc<Store>,
    identity: Arc<Identity>,
    /// `[id@]host:port` remembered from earlier runs.
    remembered_peers: Vec<String>,
}

/// Blocking: check the games folder, create the data folder, open the
/// database and the identity key.
fn open_disk_state(config: &PeerConfig) -> Result<DiskState, StartError> {
    if !config.games_dir.is_dir() {
        return Err(StartError::GamesDirMissing(config.games_dir.clone()));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|error| StartError::DataDir {
        path: config.data_dir.clone(),
        error,
    })?;
    let store = Store::open(&config.data_dir)?;
    let identity = Identity::load_or_create(&config.data_dir)?;
    let remembered_peers = match store.manual_peers() {
        Ok(stored) => stored
            .into_iter()
            .map(|(address, id)| match id {
                Some(id) if !address.contains('@') => format!("{id}@{address}"),
                _ => address,
            })
            .collect(),
        Err(e) => {
            tracing::warn!("cannot read remembered peers: {e}");
            Vec::new()
        }
    };
    Ok(DiskState {
        store: Arc::new(store),
        identity: Arc::new(identity),
        remembered_peers,
    })
}

// Long on purpose: the runtime's wiring, in dependency order, read top
// to bottom; every part is built by its own module, this only connects them.
pub(crate) async fn start_with_services(
    config: PeerConfig,
    services: impl FnOnce(&Parts) -> Vec<ServiceSpec>,
) -> Result<(PeerRuntimeHandle, broadcast::Receiver<PeerEvent>), StartError> {
    let mut config = config.with_display_name_fitted();
    // Absolute folders: on Windows, std reaches paths longer than MAX_PATH
    // (260) by giving absolute paths the `\\?\` prefix, and every game path
    // is joined below these.
    for dir in [&mut config.games_dir, &mut config.data_dir] {
        if let Ok(absolute) = std::path::absolute(&*dir) {
            *dir = absolute;
        }
    }
    let tasks = RuntimeTasks::new();
    let disk = {
        let config = config.clone();
        tasks
            .spawn_blocking("open the data folder", move || open_disk_state(&config))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?
    };
    let DiskState {
        store,
        identity,
        remembered_peers,
    } = disk;
    let (events, first_subscriber) = EventSink::new(EVENT_CAPACITY);
    let directory = Arc::new(PeerDirectory::new(
        identity.peer_id().clone(),
        events.clone(),
    ));
    let library = Arc::new(Library::new(
        Indexer::new(config.games_dir.clone(), store.clone())
            .with_settle(config.library_quiet_period),
        events.clone(),
        config.library_quiet_period,
    ));
    let offer = Arc::new(Offer::new(library.clone()));
    let BoundEndpoint {
        endpoint,
        closed: socket_closed,
        buffers: udp_buffers,
    } = bind_watched_endpoint(config.listen, Some(tls::server_config(&identity)?)).map_err(
        |error| StartError::Bind {
            addr: config.listen,
            error,
        },
    )?;
    let local_addr = endpoint.local_addr().map_err(|error| StartError::Bind {
        addr: config.listen,
        error,
    })?;
    tracing::info!(peer_id = %identity.peer_id(), %local_addr, "peer starting");
    let party_key = config.party_key.as_deref().map(tls::party_key);
    let limiter = Arc::new(UploadLimiter::new(config.upload_limit));
    let server_state = Arc::new(ServerState::new(
        identity.clone(),
        config.display_name.clone(),
        offer.clone(),
        party_key,
        limiter.clone(),
        directory.clone(),
        local_addr.port(),
    ));
    let runtime_token = CancellationToken::new();
    let health = HealthBoard::new(events.clone());
    let supervisor = Supervisor::new(
        tasks.clone(),
        runtime_token.clone(),
        health.clone(),
        events.clone(),
    );
    let dialer = Arc::new(Dialer {
        directory: directory.clone(),
        endpoint: endpoint.clone(),
        identity: identity.clone(),
        display_name: config.display_name.clone(),
        party_key,
        listen_port: local_addr.port(),
    });
    let engine = Arc::new(Engine::new(EngineParts {
        games_dir: config.games_dir.clone(),
        store: store.clone(),
        library: library.clone(),
        directory: directory.clone(),
        offer: offer.clone(),
        events: events.clone(),
        tasks: tasks.clone(),
        token: runtime_token.clone(),
        parallel: config.parallel_downloads,
        second_connection_at: config.second_connection_at,
        running: Arc::default(),
        dialer: Some(dialer.clone()),
    }));
    let liveness = Arc::new(Liveness {
        directory: directory.clone(),
        dialer,
        library: library.clone(),
        offer: offer.clone(),
        lost_after: config.lost_after,
    });
    let discovery = config.mdns.then(|| {
        Arc::new(Discovery {
            directory: directory.clone(),
            display_name: config.display_name.clone(),
            listen_port: local_addr.port(),
            ipv6: local_addr.is_ipv6(),
            interfaces: config.mdns_interfaces.clone(),
        })
    });
    let party = Arc::new(Party::new(PartyParts {
        data_dir: config.data_dir.clone(),
        display_name: config.display_name.clone(),
        organizer: config.organizer,
        party_key: party_key.is_some(),
        keep_ready: config.keep_ready,
        game_mode_upload_percent: config.game_mode_upload_percent,
        upload_limit: config.upload_limit,
        limiter,
        directory: directory.clone(),
        offer,
        engine: engine.clone(),
        events: events.clone(),
    }));
    let parts = Parts {
        library: library.clone(),
        endpoint: endpoint.clone(),
        server: server_state.clone(),
        liveness,
        discovery,
        party: party.clone(),
        tasks: tasks.clone(),
    };
    for spec in services(&parts) {
        let run = spec.run;
        supervisor.spawn_supervised_service(spec.name, spec.policy, move |ctx| run(ctx));
    }
    drop(parts);

    // Peers given at start, and those remembered from earlier runs.
    for address in &config.peers {
        if let Err(e) = parse_peer_address(address) {
            tracing::warn!("ignoring peer `{address}`: {e}");
        }
    }
    let mut manual = config.peers.clone();
    manual.extend(remembered_peers);
    let firewall = Arc::new(FirewallCheck::in_current_runtime());
    let firewall_token = runtime_token.child_token();
    firewall.refresh(&tasks, firewall_token.clone(), local_addr.port());
    let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let shutdown_requested = Arc::new(AtomicBool::new(false));
    let shutdown_token = CancellationToken::new();
    let (stopped_tx, stopped_rx) = watch::channel(None);
    let command_loop = CommandLoop {
        commands: command_rx,
        runtime_token,
        shutdown_token: shutdown_token.clone(),
        shutdown_requested: shutdown_requested.clone(),
        directory: directory.clone(),
        engine: engine.clone(),
        store,
        endpoint,
        socket_closed,
        manual,
        supervisor,
        tasks: tasks.clone(),
        events: events.clone(),
        health: health.clone(),
        shutdown_deadline: config.shutdown_deadline,
    };
    // The command loop outlives every service: it runs the shutdown sequence
    // and publishes the stop report, so its tracker (held by the handle) is
    // the runtime's last join point.
    let root = TaskTracker::new();
    root.spawn(async move {
        let report = command_loop.run().await;
        stopped_tx.send_replace(Some(report));
    });
    root.close();

    let handle = PeerRuntimeHandle {
        commands: PeerCommandSender(command_tx),
        events,
        health,
        library,
        server: server_state,
        directory,
        engine,
        tasks,
        local_addr,
        mdns: config.mdns,
        mdns_interfaces: config.mdns_interfaces,
        udp_buffers,
        firewall,
        firewall_token,
        thumbnails: Arc::default(),
        party,
        shutdown_token,
        shutdown_requested,
        root,
        stopped: stopped_rx,
    };
    Ok((handle, first_subscriber))
}

#[cfg(test)]
mod tests;
