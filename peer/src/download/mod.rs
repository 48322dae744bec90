//! The download engine: many sources at once, every piece verified before it
//! counts, progress persisted as pieces land, cancellable between pieces, and
//! installed by one rename only when every piece verified.
//!
//! - `queue.rs`: which downloads run, which wait, and what is remembered
//!   across restarts;
//! - `job.rs`: one download, from its manifest to the install;
//! - `swarm.rs`: fetching the pieces from every source at once;
//! - the pure parts: `scheduler.rs` (which piece from which source) and
//!   `rate.rs` (rates and ETA);
//! - `staging.rs`: the blocking disk work on the staging folder;
//! - `files.rs`: the staging files kept open across pieces, and the thread
//!   that closes them.

mod files;
mod job;
mod piece_buf;
mod queue;
pub mod rate;
pub mod scheduler;
pub mod staging;
mod swarm;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lanspread_proto::{Manifest, VersionId};
use tokio_util::sync::CancellationToken;

use crate::events::{EventSink, FailureCode, PeerEvent};
use crate::library::monitor::Library;
use crate::offer::Offer;
use crate::peers::dialer::Dialer;
use crate::peers::PeerDirectory;
use crate::store::Store;
use crate::tasks::RuntimeTasks;
use queue::Queue;

/// Why a download could not start or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DownloadError {
    pub code: FailureCode,
    pub message: String,
}

impl DownloadError {
    fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn io(what: &str, e: std::io::Error) -> Self {
        let code = match e.kind() {
            std::io::ErrorKind::StorageFull => FailureCode::NoSpace,
            std::io::ErrorKind::PermissionDenied => FailureCode::PermissionDenied,
            std::io::ErrorKind::NotFound => FailureCode::GamesDirMissing,
            _ => FailureCode::Io,
        };
        let hint = match code {
            FailureCode::NoSpace => "; free some space, the download resumes where it stopped",
            FailureCode::PermissionDenied => "; check the games folder's permissions",
            FailureCode::GamesDirMissing => "; the games folder is gone",
            _ => "",
        };
        Self::new(code, format!("{what}: {e}{hint}"))
    }

    /// The runtime has stopped and takes no more downloads.
    pub fn stopped() -> Self {
        Self::new(FailureCode::RuntimeStopped, "the peer runtime has stopped")
    }
}

/// A download waiting for, or holding, a slot.
struct Job {
    pub version_id: VersionId,
    pub game_id: String,
    pub title: String,
    /// Known when the download resumes; fetched from a source otherwise.
    pub manifest: Option<Manifest>,
}

/// How a download ended, short of an error.
enum End {
    Completed,
    Cancelled,
    PeersGone,
}

/// What the engine is built from.
pub(crate) struct EngineParts {
    pub games_dir: PathBuf,
    pub store: Arc<Store>,
    pub library: Arc<Library>,
    pub directory: Arc<PeerDirectory>,
    pub offer: Arc<Offer>,
    pub events: EventSink,
    pub tasks: RuntimeTasks,
    /// The runtime token: each download holds a child of it.
    pub token: CancellationToken,
    /// Downloads that run at once; more wait in the queue.
    pub parallel: usize,
    /// A source measured faster (bytes per second) gets a second connection.
    pub second_connection_at: u64,
    /// Games lanspread started that still run: their updates wait.
    pub running: Arc<crate::games::RunningGames>,
    /// Opens extra connections to fast sources; moved into the engine.
    pub dialer: Option<Arc<Dialer>>,
}

/// The download engine, shared by the runtime.
pub struct Engine {
    parts: EngineParts,
    // A std Mutex: queue bookkeeping only, never held across an await.
    queue: Mutex<Queue>,
    /// Taken away at shutdown ([`Engine::release_endpoint`]): the handle
    /// outlives the runtime and must not hold its endpoint.
    dialer: Mutex<Option<Arc<Dialer>>>,
    /// Queue snapshots are written one at a time, each taken inside it, so
    /// the last write is always the latest queue. A tokio Mutex: held across
    /// the store write.
    queue_writes: tokio::sync::Mutex<()>,
}

impl Engine {
    pub(crate) fn new(mut parts: EngineParts) -> Self {
        parts.parallel = parts.parallel.max(1);
        Self {
            dialer: Mutex::new(parts.dialer.take()),
            parts,
            queue: Mutex::default(),
            queue_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// The games lanspread started that still run.
    pub fn running(&self) -> &Arc<crate::games::RunningGames> {
        &self.parts.running
    }

    /// Drop our hold on the endpoint (shutdown, once every download has
    /// stopped): no more extra connections.
    pub(crate) fn release_endpoint(&self) {
        self.dialer.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// What opens extra connections, while the runtime runs.
    fn dialer(&self) -> Option<Arc<Dialer>> {
        self.dialer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: PeerEvent) {
        self.parts.events.emit(event);
    }

    /// Run `work` with the store on the blocking pool (tracked): SQLite
    /// never runs on the async threads.
    async fn with_store<T, F>(&self, what: &'static str, work: F) -> Result<T, DownloadError>
    where
        F: FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.parts.store.clone();
        match self
            .parts
            .tasks
            .spawn_blocking(what, move || work(&store))
            .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(DownloadError::new(FailureCode::Io, format!("{what}: {e}"))),
            Err(e) => Err(DownloadError::new(FailureCode::Io, format!("{what}: {e}"))),
        }
    }

    /// A store write whose failure only costs a resume; logged.
    async fn record(
        &self,
        what: &'static str,
        work: impl FnOnce(&Store) -> Result<(), crate::store::StoreError> + Send + 'static,
    ) {
        if let Err(e) = self.with_store(what, work).await {
            tracing::warn!("{e}");
        }
    }
}
