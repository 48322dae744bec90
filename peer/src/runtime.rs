//! The supervised peer runtime and its handle.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lanspread_proto::{Hash, VersionId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::PeerConfig;
use crate::download::{DownloadError, DownloadInfo, DownloadRegistry, Engine};
use crate::events::PeerEvent;
use crate::games::{self, GameActionError};
use crate::health::{HealthBoard, HealthSnapshot};
use crate::library::metadata::Thumbnail;
use crate::library::monitor::{self, Library};
use crate::library::scan::ScanError;
use crate::library::{Indexer, LibrarySnapshot};
use crate::net::identity::{Identity, IdentityError, PeerId};
use crate::net::limiter::UploadLimiter;
use crate::net::server::{self, close_code, ServerState};
use crate::net::{bind_endpoint, tls};
use crate::peers::catalog::CatalogEntry;
use crate::peers::diagnostics::{self, Diagnostics};
use crate::peers::discovery::{self, Discovery};
use crate::peers::liveness::{self, Liveness};
use crate::peers::thumbnails::{self, ThumbnailCache};
use crate::peers::{PeerDirectory, PeerInfo, Source};
use crate::store::{Store, StoreError};
use crate::supervisor::{Backoff, ServiceContext, SupervisionPolicy, Supervisor};

/// Events buffered per subscriber before a slow one starts missing some
/// (it then sees `RecvError::Lagged` and can resynchronise from snapshots).
const EVENT_CAPACITY: usize = 1024;
/// Commands waiting for the command loop; senders wait when it is full.
const COMMAND_CAPACITY: usize = 64;

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("games folder {0} does not exist or is not a folder; create it or choose another")]
    GamesDirMissing(std::path::PathBuf),
    #[error("cannot create the data folder {path}: {error}")]
    DataDir {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(
        "cannot listen on {addr}: {error}; is another lanspread running? Choose another address"
    )]
    Bind {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// How long shutdown waits for peers to acknowledge our Goodbye.
const GOODBYE_WAIT: Duration = Duration::from_millis(300);

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

/// Resolve a typed address and hand it to the directory.
async fn add_manual_peer(
    directory: &PeerDirectory,
    store: &Store,
    text: &str,
) -> Result<(), AddPeerError> {
    let (host, expected) = parse_peer_address(text)?;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&host)
        .await
        .map_err(|e| AddPeerError::Unresolved {
            address: host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let Some(addr) = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
    else {
        return Err(AddPeerError::Unresolved {
            address: host,
            reason: "no address".into(),
        });
    };
    store
        .add_manual_peer(text.trim(), expected.as_ref().map(PeerId::as_str))
        .map_err(|e| AddPeerError::Store(e.to_string()))?;
    directory.add_candidate(addr, expected, Source::Manual);
    Ok(())
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
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the peer runtime has stopped")]
pub struct RuntimeStopped;

/// How the runtime ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// True when the stop followed [`PeerRuntimeHandle::shutdown`]; false after a
    /// failure (a `Required` service, or the command channel closing unasked).
    pub requested: bool,
    /// Services that ignored cancellation past the deadline and were aborted.
    pub stuck_services: Vec<String>,
}

/// The front of a running peer: commands in, events out, health, shutdown.
pub struct PeerRuntimeHandle {
    commands: PeerCommandSender,
    events: broadcast::Sender<PeerEvent>,
    health: HealthBoard,
    library: Arc<Library>,
    server: Arc<ServerState>,
    directory: Arc<PeerDirectory>,
    engine: Arc<Engine>,
    local_addr: std::net::SocketAddr,
    mdns: bool,
    mdns_interfaces: Vec<String>,
    thumbnails: Arc<ThumbnailCache>,
    shutdown_token: CancellationToken,
    shutdown_requested: Arc<AtomicBool>,
    stopped: watch::Receiver<Option<StopReport>>,
}

impl PeerRuntimeHandle {
    pub fn sender(&self) -> PeerCommandSender {
        self.commands.clone()
    }

    /// Receive every event from now on.
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
        self.server
            .bytes_served
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Change the upload limit (bytes per second, 0 = none) at once.
    pub fn set_upload_limit(&self, bytes_per_sec: u64) {
        self.server.limiter.set_rate(bytes_per_sec);
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
        diagnostics::report(
            &self.directory,
            self.local_addr,
            self.mdns,
            discovery,
            &self.mdns_interfaces,
        )
    }

    /// Start downloading `target` (a game id, or a version id in hex).
    pub async fn download(&self, target: &str) -> Result<VersionId, DownloadError> {
        let (reply, answer) = oneshot::channel();
        let command = PeerCommand::Download {
            target: target.to_owned(),
            reply,
        };
        let stopped = || DownloadError {
            code: crate::download::DownloadCode::Io,
            message: "the runtime has stopped".into(),
        };
        self.commands.send(command).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Cancel a download between pieces; `delete` also removes its staging data.
    pub async fn cancel_download(&self, version_id: VersionId, delete: bool) -> bool {
        let (reply, answer) = oneshot::channel();
        let command = PeerCommand::CancelDownload {
            version_id,
            delete,
            reply,
        };
        if self.commands.send(command).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
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
        let stopped = || AddPeerError::Store("the runtime has stopped".into());
        self.commands.send(command).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The folder this peer shares and installs into.
    pub fn games_dir(&self) -> &std::path::Path {
        self.library.indexer.games_dir()
    }

    /// The game picture with `hash` (hex, as the catalog gives it): ours, or
    /// fetched from a peer that lists it and checked against the hash.
    pub async fn thumbnail(&self, hash: &str) -> Option<Thumbnail> {
        let hash = Hash::from_hex(hash)?;
        let local = self.library.snapshot();
        thumbnails::thumbnail(hash, &local, &self.directory, &self.thumbnails).await
    }

    /// The folder of an installed game.
    pub fn game_folder(&self, game_id: &str) -> Result<PathBuf, GameActionError> {
        games::folder(&self.library.snapshot(), game_id)
    }

    /// Start an installed game's program (see [`games::launch`]).
    pub fn launch_game(&self, game_id: &str) -> Result<(), GameActionError> {
        games::launch(&self.library.snapshot(), game_id)
    }

    /// Delete an installed game's folder; the library drops it and peers are
    /// told at once.
    pub async fn delete_game(&self, game_id: &str) -> Result<(), GameActionError> {
        let library = self.library.clone();
        let cancel = self.shutdown_token.clone();
        let game_id = game_id.to_owned();
        tokio::task::spawn_blocking(move || {
            games::delete(&library.snapshot(), &game_id)?;
            library.rescan(Some(vec![game_id]), &cancel);
            Ok(())
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Resolves once every task has finished (or was aborted after the
    /// deadline). Cancel-safe: dropping it and calling again is fine.
    pub async fn wait_stopped(&self) -> StopReport {
        wait_for_stop(self.stopped.clone()).await
    }

    #[cfg(test)]
    fn stop_watch(&self) -> watch::Receiver<Option<StopReport>> {
        self.stopped.clone()
    }
}

async fn wait_for_stop(mut stopped: watch::Receiver<Option<StopReport>>) -> StopReport {
    if let Ok(report) = stopped.wait_for(Option::is_some).await {
        return report.clone().expect("checked by wait_for");
    }
    // The sender is dropped only after it published a report.
    stopped.borrow().clone().unwrap_or(StopReport {
        requested: false,
        stuck_services: Vec::new(),
    })
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
}

fn default_services(parts: &Parts) -> Vec<ServiceSpec> {
    let library = parts.library.clone();
    let (endpoint, server) = (parts.endpoint.clone(), parts.server.clone());
    let live = parts.liveness.clone();
    let mut services = vec![
        ServiceSpec::new("quic-server", SupervisionPolicy::Required, move |ctx| {
            server::run(ctx, endpoint.clone(), server.clone())
        }),
        ServiceSpec::new(
            "liveness",
            SupervisionPolicy::Restart(Backoff::DEFAULT),
            move |ctx| liveness::run(ctx, live.clone()),
        ),
        ServiceSpec::new(
            "library-monitor",
            SupervisionPolicy::Restart(Backoff::DEFAULT),
            move |ctx| monitor::run(ctx, library.clone()),
        ),
    ];
    if let Some(found) = parts.discovery.clone() {
        services.push(ServiceSpec::new(
            "discovery",
            SupervisionPolicy::Restart(Backoff::DEFAULT),
            move |ctx| discovery::run(ctx, found.clone()),
        ));
    }
    services
}

/// Start a peer runtime on the current tokio runtime.
pub async fn start_peer(config: PeerConfig) -> Result<PeerRuntimeHandle, StartError> {
    start_with_services(config, default_services)
}

pub(crate) fn start_with_services(
    config: PeerConfig,
    services: impl FnOnce(&Parts) -> Vec<ServiceSpec>,
) -> Result<PeerRuntimeHandle, StartError> {
    let config = config.with_display_name_fitted();
    if !config.games_dir.is_dir() {
        return Err(StartError::GamesDirMissing(config.games_dir));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|error| StartError::DataDir {
        path: config.data_dir.clone(),
        error,
    })?;

    let store = Arc::new(Store::open(&config.data_dir)?);
    let identity = Arc::new(Identity::load_or_create(&config.data_dir)?);
    let (events, _) = broadcast::channel(EVENT_CAPACITY);
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
    let runtime_token = CancellationToken::new();
    let tasks = TaskTracker::new();
    let health = HealthBoard::new(events.clone());
    let supervisor = Supervisor::new(
        tasks.clone(),
        runtime_token.clone(),
        health.clone(),
        events.clone(),
    );
    let server_state = Arc::new(ServerState::new(
        identity.clone(),
        config.display_name.clone(),
        library.clone(),
        config.party_key.as_deref().map(tls::party_key),
        Arc::new(UploadLimiter::new(config.upload_limit)),
        directory.clone(),
        0,
    ));
    let endpoint =
        bind_endpoint(config.listen, Some(tls::server_config(&identity)?)).map_err(|error| {
            StartError::Bind {
                addr: config.listen,
                error,
            }
        })?;
    let local_addr = endpoint.local_addr().map_err(|error| StartError::Bind {
        addr: config.listen,
        error,
    })?;
    tracing::info!(peer_id = %identity.peer_id(), %local_addr, "peer starting");
    let registry = Arc::new(DownloadRegistry::default());
    let server_state = Arc::new(
        Arc::into_inner(server_state)
            .expect("not shared yet")
            .with_listen_port(local_addr.port())
            .with_downloads(registry.clone()),
    );
    let engine = Arc::new(Engine::new(
        config.games_dir.clone(),
        store.clone(),
        library.clone(),
        directory.clone(),
        events.clone(),
        tasks.clone(),
        runtime_token.clone(),
        config.parallel_downloads,
        registry,
    ));
    let liveness = Arc::new(Liveness {
        directory: directory.clone(),
        endpoint: endpoint.clone(),
        identity: identity.clone(),
        library: library.clone(),
        display_name: config.display_name.clone(),
        party_key: config.party_key.as_deref().map(tls::party_key),
        listen_port: local_addr.port(),
        lost_after: config.lost_after,
    });
    let discovery = config.mdns.then(|| {
        Arc::new(Discovery {
            directory: directory.clone(),
            display_name: config.display_name.clone(),
            listen_port: local_addr.port(),
            interfaces: config.mdns_interfaces.clone(),
        })
    });
    let parts = Parts {
        library: library.clone(),
        endpoint: endpoint.clone(),
        server: server_state.clone(),
        liveness,
        discovery,
    };
    for spec in services(&parts) {
        let run = spec.run;
        supervisor.spawn_supervised_service(spec.name, spec.policy, move |ctx| run(ctx));
    }

    let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let shutdown_requested = Arc::new(AtomicBool::new(false));
    let shutdown_token = CancellationToken::new();
    // Peers given at start, and those remembered from earlier runs.
    for address in &config.peers {
        if let Err(e) = parse_peer_address(address) {
            tracing::warn!("ignoring peer `{address}`: {e}");
        }
    }
    let mut manual: Vec<String> = config.peers.clone();
    match store.manual_peers() {
        Ok(stored) => manual.extend(stored.into_iter().map(|(address, id)| match id {
            Some(id) if !address.contains('@') => format!("{id}@{address}"),
            _ => address,
        })),
        Err(e) => tracing::warn!("cannot read remembered peers: {e}"),
    }
    let (stopped_tx, stopped_rx) = watch::channel(None);
    let command_loop = CommandLoop {
        commands: command_rx,
        runtime_token: runtime_token.clone(),
        shutdown_token: shutdown_token.clone(),
        shutdown_requested: shutdown_requested.clone(),
        directory: directory.clone(),
        engine: engine.clone(),
        store,
        endpoint,
        manual,
        supervisor,
        tasks,
        events: events.clone(),
        health: health.clone(),
        shutdown_deadline: config.shutdown_deadline,
    };
    // The command loop outlives every service: it runs the shutdown sequence
    // and publishes the stop report, so it is the runtime's last join point.
    let root = TaskTracker::new();
    root.spawn(async move {
        let report = command_loop.run().await;
        stopped_tx.send_replace(Some(report));
    });
    root.close();

    Ok(PeerRuntimeHandle {
        commands: PeerCommandSender(command_tx),
        events,
        health,
        library,
        server: server_state,
        directory,
        engine,
        local_addr,
        mdns: config.mdns,
        mdns_interfaces: config.mdns_interfaces,
        thumbnails: Arc::default(),
        shutdown_token,
        shutdown_requested,
        stopped: stopped_rx,
    })
}

struct CommandLoop {
    commands: mpsc::Receiver<PeerCommand>,
    runtime_token: CancellationToken,
    shutdown_token: CancellationToken,
    shutdown_requested: Arc<AtomicBool>,
    directory: Arc<PeerDirectory>,
    engine: Arc<Engine>,
    store: Arc<Store>,
    endpoint: quinn::Endpoint,
    /// `[id@]host:port` to add at start.
    manual: Vec<String>,
    supervisor: Supervisor,
    tasks: TaskTracker,
    events: broadcast::Sender<PeerEvent>,
    health: HealthBoard,
    shutdown_deadline: Duration,
}

impl CommandLoop {
    async fn run(mut self) -> StopReport {
        self.engine.resume_saved();
        for address in std::mem::take(&mut self.manual) {
            let (directory, store) = (self.directory.clone(), self.store.clone());
            self.tasks.spawn(async move {
                if let Err(e) = add_manual_peer(&directory, &store, &address).await {
                    tracing::warn!("peer `{address}`: {e}");
                }
            });
        }
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown_token.cancelled() => break,
                _ = self.runtime_token.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None if self.shutdown_requested.load(Ordering::SeqCst) => break,
                    None => {
                        let _ = self.events.send(PeerEvent::RuntimeFailed {
                            component: "command-loop".into(),
                            error: "the command channel closed without a shutdown request".into(),
                        });
                        break;
                    }
                },
            }
        }
        self.shutdown().await
    }

    fn handle_command(&mut self, command: PeerCommand) {
        match command {
            PeerCommand::Health(reply) => {
                // The asker may have given up; that is not our failure.
                let _ = reply.send(self.health.snapshot());
            }
            PeerCommand::Download { target, reply } => {
                let _ = reply.send(self.engine.start(&target));
            }
            PeerCommand::CancelDownload {
                version_id,
                delete,
                reply,
            } => {
                let _ = reply.send(self.engine.cancel(&version_id, delete));
            }
            PeerCommand::AddPeer { address, reply } => {
                let (directory, store) = (self.directory.clone(), self.store.clone());
                let token = self.runtime_token.clone();
                self.tasks.spawn(async move {
                    let added = token
                        .run_until_cancelled(add_manual_peer(&directory, &store, &address))
                        .await;
                    if let Some(result) = added {
                        let _ = reply.send(result);
                    }
                });
            }
        }
    }

    async fn shutdown(self) -> StopReport {
        // Shutdown order:
        // 1. Stop accepting: no new connections, no new commands (queued ones
        //    are dropped with their reply channels: `RuntimeStopped`).
        self.endpoint.set_server_config(None);
        drop(self.commands);
        // 2. Goodbye to every connected peer, so they drop us at once.
        self.directory.goodbye_all(GOODBYE_WAIT).await;
        // 3. Cancel the runtime token: downloads stop between pieces, every
        //    service stops, and the server closes the endpoint.
        self.runtime_token.cancel();
        // 4. Wait for every task under the deadline, then abort and report the
        //    services that ignored cancellation.
        self.tasks.close();
        let deadline = tokio::time::Instant::now() + self.shutdown_deadline;
        let stuck_services = match tokio::time::timeout_at(deadline, self.tasks.wait()).await {
            Ok(()) => Vec::new(),
            Err(_) => self.supervisor.abort_stragglers(),
        };
        // 5. Release the UDP port, so a new runtime (the desktop app restarts
        //    one when settings change) can bind it while this handle lives:
        //    drop the connections we hold and let the closed ones drain.
        self.directory.forget_connections();
        self.endpoint.close(
            quinn::VarInt::from_u32(close_code::SHUTDOWN),
            b"shutting down",
        );
        let _ = tokio::time::timeout_at(deadline, self.endpoint.wait_idle()).await;
        StopReport {
            requested: self.shutdown_requested.load(Ordering::SeqCst),
            stuck_services,
        }
    }
}

#[cfg(test)]
mod tests;
