//! Fetching one download's pieces from every source at once.
//!
//! [`Swarm`] is the loop's state; each `handle_*` method is one arm of its
//! `select!`. Sources are the connected peers that list the version,
//! complete or partial (for partial ones, their have-set, which each one
//! sends again as it changes: one `WatchHaveSet` stream per partial source). Each source gets one [`Worker`] (two for a fast one,
//! and two more on a second connection for one faster than a gigabit link)
//! asking for batches of pieces. Pieces arrive into a bounded channel, are
//! verified and written on blocking threads, and only then count.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lanspread_proto::wire::{ErrorCode, Response};
use lanspread_proto::{Layout, Manifest, PeerId, PieceSet, VersionId};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::piece_buf::{self, PieceBuf};
use super::rate::RateMeter;
use super::scheduler::{self, PieceScheduler, Verdict};
use super::{staging, DownloadError, End, Engine};
use crate::events::PeerEvent;
use crate::net::client::{PeerConnection, RequestError};
use crate::net::close_code;
use crate::offer::PieceStatus;

/// Request streams per source: one, and a second for a source measured
/// faster than [`FAST_SOURCE`] (while one stream's pieces are read off the
/// wire the next request is on its way). A slow, rate-capped source gets one:
/// more would only spread its upload over more pieces at once, and a party
/// swarms faster when each piece finishes sooner.
const MAX_STREAMS_PER_SOURCE: usize = 2;
const FAST_SOURCE: f64 = 32.0 * 1024.0 * 1024.0;
/// Time allowed to open a second connection to a fast source
/// (`PeerConfig::second_connection_at`). One attempt per source while it
/// stays a source; it carries [`MAX_STREAMS_PER_SOURCE`] more streams and is
/// closed when the download ends.
const SECOND_CONNECTION_DIAL: Duration = Duration::from_secs(2);
/// Pieces per request: about half a second of data at the source's measured
/// rate, within these bounds. The first request to a source asks for one:
/// at a rush every downloader asks the seed before it knows what the others
/// fetch, and two each doubled the pieces the seed sent twice.
const MIN_BATCH: usize = 1;
const START_BATCH: usize = 1;
const MAX_BATCH: usize = lanspread_proto::wire::MAX_PIECES_PER_REQUEST;
/// Pieces received and waiting to be verified and written, at most. With
/// pieces of at most 16 MiB this bounds a download's buffers whatever the
/// game's size.
const MAX_PENDING_WRITES: usize = 4;
/// How long a download waits for a first source before giving up.
pub(super) const FIRST_SOURCE_WAIT: Duration = Duration::from_secs(15);
/// How long a download goes on with no source at all before it ends with
/// `DownloadPeersGone`. Liveness has declared them lost already; this covers
/// a peer that is dialled again at once (a blip, not a departure).
const NO_SOURCE_GRACE: Duration = Duration::from_secs(4);
/// Progress events per download, at most one per this interval (4 per second).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The source set is looked at again this often.
pub(super) const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// Written data is flushed to disk in the background this often, so the
/// final flush before install has little left to do (large writes also
/// start their own writeback at once: see [`staging::write_piece`]). The
/// pieces written before a flush are recorded in SQLite after it, in one
/// transaction.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Receive buffers kept for reuse, at most: enough for the pieces waiting
/// to be written, those in the arrivals channel, and one being read by each
/// stream. A fresh buffer a piece costs the kernel zeroing its pages.
const POOLED_BUFFERS: usize = 2 * MAX_PENDING_WRITES + 4;
/// A have-set watch gets this long for its first answer.
const HAVE_SET_TIMEOUT: Duration = Duration::from_secs(2);
/// A source whose have-set watch ended is watched again after this long at
/// the soonest.
const WATCH_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// A have-set watch is read no faster than one frame per this long: an
/// honest source sends one per `wire::WATCH_GAP_MS` at most, and a flood from
/// a hostile one waits in QUIC's flow control, not in the swarm's loop.
const WATCH_READ_GAP: Duration = Duration::from_millis(lanspread_proto::wire::WATCH_GAP_MS / 2);
/// Have-sets received and waiting for the swarm's loop, at most.
const PENDING_HAVE_SETS: usize = 64;

/// The one record of a download's pieces, verified and in flight: the swarm
/// and its workers schedule from it, and the server answers other
/// downloaders from it (as [`PieceStatus`]).
pub(super) struct SharedScheduler {
    scheduler: Mutex<PieceScheduler>,
    /// The scheduler's generation, for those watching what it has.
    changes: watch::Sender<u64>,
}

impl SharedScheduler {
    pub(super) fn new(scheduler: PieceScheduler) -> Self {
        Self {
            changes: watch::Sender::new(scheduler.generation()),
            scheduler: Mutex::new(scheduler),
        }
    }

    /// Held for bookkeeping only, never across an await. Watchers hear of
    /// what changed when it is let go.
    fn lock(&self) -> Locked<'_> {
        let guard = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        Locked {
            before: guard.generation(),
            guard,
            changes: &self.changes,
        }
    }
}

/// The scheduler, locked; see [`SharedScheduler::lock`].
struct Locked<'a> {
    guard: std::sync::MutexGuard<'a, PieceScheduler>,
    before: u64,
    changes: &'a watch::Sender<u64>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = PieceScheduler;

    fn deref(&self) -> &PieceScheduler {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut PieceScheduler {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let now = self.guard.generation();
        if now != self.before {
            self.changes.send_replace(now);
        }
    }
}

impl PieceStatus for SharedScheduler {
    fn sets(&self) -> (PieceSet, PieceSet) {
        let s = self.lock();
        (s.have().clone(), s.fetching())
    }

    fn has(&self, piece: usize) -> bool {
        self.lock().have().contains(piece)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

struct Arrival {
    peer: PeerId,
    piece: usize,
    data: PieceBuf,
}

/// Piece buffers, reused from one received piece to the next; aligned for
/// direct writes (see `piece_buf`).
#[derive(Default)]
pub(super) struct BufferPool(Mutex<Vec<PieceBuf>>);

impl BufferPool {
    /// A buffer to receive into (empty when the pool is).
    fn take(&self) -> PieceBuf {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Give a buffer back; beyond [`POOLED_BUFFERS`] it is freed.
    fn give(&self, buf: PieceBuf) {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOLED_BUFFERS && buf.capacity() > 0 {
            pool.push(buf);
        }
    }
}

struct WriteResult {
    piece: usize,
    peer: PeerId,
    len: u64,
    /// `Ok(false)`: the piece failed verification.
    outcome: Result<bool, DownloadError>,
}

/// What a partial source has, and what it is fetching now.
#[derive(Clone)]
struct Availability {
    have: PieceSet,
    fetching: PieceSet,
}

/// A source ready to get workers: complete (`None`) or with its have-set.
type ReadySource = (PeerId, PeerConnection, Option<Availability>);

/// The workers fetching from one source.
#[derive(Default)]
struct SourceWorkers {
    /// On the directory's connection to it.
    primary: Vec<AbortHandle>,
    second: Second,
}

/// A download's own second connection to a fast source.
#[derive(Default)]
enum Second {
    #[default]
    None,
    Dialing,
    Open {
        conn: PeerConnection,
        workers: Vec<AbortHandle>,
    },
    /// The dial failed, or every worker on it ended: not tried again while
    /// the source stays.
    Given,
}

impl SourceWorkers {
    fn retain_running(&mut self) {
        self.primary.retain(|h| !h.is_finished());
        if let Second::Open { workers, .. } = &mut self.second {
            workers.retain(|h| !h.is_finished());
            if workers.is_empty() {
                self.close_second();
            }
        }
    }

    fn close_second(&mut self) {
        if let Second::Open { conn, workers } = std::mem::replace(&mut self.second, Second::Given) {
            for handle in workers {
                handle.abort();
            }
            conn.connection
                .close(close_code::UNNEEDED.into(), b"download over");
        }
    }

    fn stop(mut self) {
        self.close_second();
        for handle in self.primary {
            handle.abort();
        }
    }
}

/// When the download last had a source, to end it once every source is
/// gone for longer than the grace period.
struct SourceWatch {
    last_seen: Instant,
    ever_had_one: bool,
}

/// One download's fetching loop.
pub(super) struct Swarm {
    engine: Arc<Engine>,
    game_id: String,
    vid: VersionId,
    manifest: Arc<Manifest>,
    layout: Arc<Layout>,
    /// The staging files kept open across pieces, and their root.
    files: Arc<staging::OpenFiles>,
    buffers: Arc<BufferPool>,
    /// Pieces written since the last flush: recorded after the next one.
    unrecorded: Vec<usize>,
    scheduler: Arc<SharedScheduler>,
    token: CancellationToken,
    arrivals_tx: mpsc::Sender<Arrival>,
    arrivals: mpsc::Receiver<Arrival>,
    /// Pieces verified so far: each one wakes the workers, so one receiving
    /// a piece that just came from another source stops (the endgame's
    /// second copy).
    verified: watch::Sender<usize>,
    workers: JoinSet<()>,
    worker_handles: HashMap<PeerId, SourceWorkers>,
    /// Second connections being opened.
    seconds: JoinSet<(PeerId, Option<PeerConnection>)>,
    /// Verify-and-write jobs on the blocking pool (tracked by the runtime).
    writes: FuturesUnordered<JoinHandle<WriteResult>>,
    /// One have-set watch per partial source (`watching` says whose).
    watches: JoinSet<()>,
    watching: HashMap<PeerId, AbortHandle>,
    /// When a source's watch last ended, to watch it again not too soon.
    watch_ended: HashMap<PeerId, Instant>,
    have_sets_tx: mpsc::Sender<ReadySource>,
    have_sets: mpsc::Receiver<ReadySource>,
    ready: Vec<ReadySource>,
    flushing: Option<JoinHandle<()>>,
    rates: RateMeter,
    bytes_done: u64,
    sources: SourceWatch,
    /// Where the pieces came from, for the log line at the end.
    tally: SourceTally,
}

/// Pieces received from complete and from partial sources, and those that
/// came twice (endgame), logged at the end.
#[derive(Default)]
struct SourceTally {
    from_complete: u64,
    from_partial: u64,
    twice: u64,
}

impl Swarm {
    pub(super) fn new(
        engine: Arc<Engine>,
        game_id: &str,
        manifest: Arc<Manifest>,
        layout: Arc<Layout>,
        files: staging::OpenFiles,
        scheduler: Arc<SharedScheduler>,
        token: CancellationToken,
    ) -> Self {
        let bytes_done = scheduler
            .lock()
            .have()
            .iter()
            .map(|p| layout.piece_len(p))
            .sum();
        let (arrivals_tx, arrivals) = mpsc::channel(MAX_PENDING_WRITES);
        let (have_sets_tx, have_sets) = mpsc::channel(PENDING_HAVE_SETS);
        Self {
            engine,
            game_id: game_id.to_owned(),
            vid: manifest.version_id(),
            manifest,
            layout,
            files: Arc::new(files),
            buffers: Arc::default(),
            unrecorded: Vec::new(),
            scheduler,
            token,
            arrivals_tx,
            arrivals,
            verified: watch::Sender::new(0),
            workers: JoinSet::new(),
            worker_handles: HashMap::new(),
            seconds: JoinSet::new(),
            writes: FuturesUnordered::new(),
            watches: JoinSet::new(),
            watching: HashMap::new(),
            watch_ended: HashMap::new(),
            have_sets_tx,
            have_sets,
            ready: Vec::new(),
            flushing: None,
            rates: RateMeter::new(std::time::Instant::now()),
            bytes_done,
            sources: SourceWatch {
                last_seen: Instant::now(),
                ever_had_one: false,
            },
            tally: SourceTally::default(),
        }
    }

    /// Fetch until every piece verified, the download is cancelled, or every
    /// source is gone. Writes in progress always finish first.
    pub(super) async fn run(mut self) -> Result<End, DownloadError> {
        if self.scheduler.lock().is_complete() {
            return Ok(End::Completed);
        }
        let mut refresh = tokio::time::interval(REFRESH_EVERY);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let result = loop {
            tokio::select! {
                biased;
                _ = self.token.cancelled() => break Ok(End::Cancelled),
                Some(done) = self.writes.next() => {
                    let Ok(done) = done else { continue };
                    match self.handle_written(done) {
                        Ok(true) => break Ok(End::Completed),
                        Ok(false) => {}
                        Err(e) => break Err(e),
                    }
                }
                Some(arrival) = self.arrivals.recv(), if self.writes.len() < MAX_PENDING_WRITES => {
                    self.handle_arrival(arrival);
                }
                Some(_) = self.workers.join_next() => {}
                Some(Ok((peer, conn))) = self.seconds.join_next() => {
                    self.handle_second_connection(peer, conn);
                }
                _ = flush.tick() => self.handle_flush_tick(),
                Some(source) = self.have_sets.recv() => self.ready.push(source),
                Some(ended) = self.watches.join_next_with_id() => self.handle_watch_ended(ended),
                _ = refresh.tick() => {
                    if self.handle_refresh_tick() {
                        break Ok(End::PeersGone);
                    }
                }
                _ = progress.tick() => self.handle_progress_tick(),
            }
            self.start_ready_workers();
        };
        self.finish(&result).await;
        result
    }

    /// A piece was verified and written, or failed. `Ok(true)`: every piece
    /// is here.
    fn handle_written(&mut self, done: WriteResult) -> Result<bool, DownloadError> {
        let mut scheduler = self.scheduler.lock();
        match done.outcome {
            Ok(true) => {
                if scheduler.have().contains(done.piece) {
                    self.tally.twice += 1;
                } else {
                    self.bytes_done += done.len;
                    self.rates.handle_bytes(&done.peer, done.len);
                    self.unrecorded.push(done.piece);
                    tracing::trace!(piece = done.piece, peer = %done.peer, "piece verified");
                    if scheduler.is_complete_source(&done.peer) {
                        self.tally.from_complete += 1;
                    } else {
                        self.tally.from_partial += 1;
                    }
                }
                scheduler.handle_piece_done(done.piece);
                self.verified.send_modify(|n| *n += 1);
                Ok(scheduler.is_complete())
            }
            Ok(false) => {
                tracing::warn!(peer = %done.peer, piece = done.piece, "piece failed verification");
                if scheduler.handle_bad_piece(done.piece, &done.peer) == Verdict::Banned {
                    drop(scheduler);
                    self.stop_workers_of(&done.peer);
                    self.engine.emit(PeerEvent::SourceBanned {
                        version_id: self.vid,
                        peer_id: done.peer,
                        reason: format!(
                            "sent {} pieces that failed verification",
                            scheduler::MAX_BAD_PIECES
                        ),
                    });
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// A piece arrived: verify and write it on a blocking thread.
    fn handle_arrival(&mut self, arrival: Arrival) {
        let (manifest, layout, files, buffers) = (
            self.manifest.clone(),
            self.layout.clone(),
            self.files.clone(),
            self.buffers.clone(),
        );
        let write = self
            .engine
            .parts
            .tasks
            .spawn_blocking(format!("write a piece of {}", self.game_id), move || {
                verify_and_write(&files, &manifest, &layout, &buffers, arrival)
            });
        self.writes.push(write);
    }

    /// Start a background flush of written data unless one still runs; the
    /// pieces written before it are recorded after it.
    fn handle_flush_tick(&mut self) {
        if self.flushing.as_ref().is_none_or(|f| f.is_finished()) {
            let work = self.flush_and_record();
            self.flushing = Some(
                self.engine
                    .parts
                    .tasks
                    .spawn_blocking(format!("flush {}", self.game_id), work),
            );
        }
    }

    /// Blocking work: flush what is written, then record the pieces written
    /// so far in one transaction. A piece is recorded only once its data
    /// was flushed (where one call flushes it all: Linux); a resume reads
    /// every recorded piece back and verifies it in any case.
    fn flush_and_record(&mut self) -> impl FnOnce() + Send + 'static {
        let (root, vid, store) = (
            self.files.root().to_path_buf(),
            self.vid,
            self.engine.parts.store.clone(),
        );
        let pieces = std::mem::take(&mut self.unrecorded);
        move || {
            if let Err(e) = staging::sync_file_system(&root) {
                tracing::warn!("cannot flush the download: {e}");
                return;
            }
            if pieces.is_empty() {
                return;
            }
            if let Err(e) = store.add_pieces(&vid, &pieces) {
                tracing::warn!("cannot record downloaded pieces: {e}");
            }
        }
    }

    /// Look at the sources again: drop the gone ones, ask partial ones what
    /// they have, queue complete ones. `true`: no source for too long.
    fn handle_refresh_tick(&mut self) -> bool {
        let sources = self.engine.parts.directory.sources_of(&self.vid);
        let current: HashSet<PeerId> = sources.iter().map(|(id, _, _)| id.clone()).collect();
        // Sources gone, and sources whose workers all ended (their stream
        // failed): drop now; still-present ones come back below.
        for workers in self.worker_handles.values_mut() {
            workers.retain_running();
        }
        let gone: Vec<PeerId> = self
            .worker_handles
            .iter()
            .filter(|(id, workers)| !current.contains(*id) || workers.primary.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.stop_workers_of(&id);
            if !current.contains(&id) {
                self.scheduler.lock().handle_source_gone(&id);
            } else {
                // Watched again below: its whole set starts new workers.
                self.stop_watching(&id);
            }
        }
        self.watching.retain(|id, watch| {
            let keep = current.contains(id);
            if !keep {
                watch.abort();
            }
            keep
        });
        for (id, conn, complete) in sources {
            if complete {
                self.stop_watching(&id);
                self.ready.push((id, conn, None));
            } else if !self.watching.contains_key(&id)
                && self
                    .watch_ended
                    .get(&id)
                    .is_none_or(|at| at.elapsed() >= WATCH_AGAIN_AFTER)
            {
                // Watched off the loop: a slow peer never holds up the
                // pieces arriving from others.
                let watch = follow_have_set(
                    id.clone(),
                    conn,
                    self.vid,
                    self.manifest.n_pieces(),
                    self.have_sets_tx.clone(),
                );
                let handle = self.watches.spawn(watch);
                self.watching.insert(id, handle);
            }
        }
        let any = self.scheduler.lock().active_sources().next().is_some()
            && !self.worker_handles.is_empty();
        if any {
            self.sources.ever_had_one = true;
            self.sources.last_seen = Instant::now();
            return false;
        }
        let grace = if self.sources.ever_had_one {
            NO_SOURCE_GRACE
        } else {
            FIRST_SOURCE_WAIT
        };
        self.sources.last_seen.elapsed() > grace
    }

    fn stop_watching(&mut self, peer: &PeerId) {
        if let Some(watch) = self.watching.remove(peer) {
            watch.abort();
        }
    }

    /// A have-set watch ended (or was aborted): its source is watched again
    /// at the next look, not sooner than [`WATCH_AGAIN_AFTER`]. An aborted
    /// watch's entry is already gone, maybe replaced by a newer watch of the
    /// same source, which stays.
    fn handle_watch_ended(&mut self, ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match ended {
            Ok((id, ())) => id,
            Err(e) => e.id(),
        };
        let peer = self
            .watching
            .iter()
            .find(|(_, handle)| handle.id() == id)
            .map(|(peer, _)| peer.clone());
        if let Some(peer) = peer {
            self.watching.remove(&peer);
            self.watch_ended.insert(peer, Instant::now());
        }
    }

    /// Rates, ETA and a progress event.
    fn handle_progress_tick(&mut self) {
        let workers = &self.worker_handles;
        self.rates
            .handle_tick(std::time::Instant::now(), |peer| workers.contains_key(peer));
        let total = self.manifest.total_size();
        self.engine.emit(PeerEvent::DownloadProgress {
            version_id: self.vid,
            game_id: self.game_id.clone(),
            bytes_done: self.bytes_done,
            bytes_total: total,
            bytes_per_sec: self.rates.total(),
            eta_secs: self.rates.eta_secs(total.saturating_sub(self.bytes_done)),
            sources: self.rates.sources(),
        });
    }

    /// Sources ready to use: update what they have, start their workers.
    fn start_ready_workers(&mut self) {
        for (id, conn, have) in std::mem::take(&mut self.ready) {
            let complete = have.is_none();
            {
                let mut scheduler = self.scheduler.lock();
                if scheduler.is_banned(&id) {
                    continue;
                }
                match have {
                    Some(Availability { have, fetching }) => {
                        scheduler.handle_source(id.clone(), Some(have));
                        scheduler.handle_source_fetching(&id, fetching);
                    }
                    None => scheduler.handle_source(id.clone(), None),
                }
            }
            let rate = self.rates.capacity(&id);
            let wanted = if rate >= FAST_SOURCE {
                MAX_STREAMS_PER_SOURCE
            } else {
                1
            };
            if !self.worker_handles.contains_key(&id) {
                tracing::debug!(game = %self.game_id, peer = %id, complete, "new source");
            }
            let running = self.worker_handles.get(&id).map_or(0, |w| w.primary.len());
            if running < wanted {
                let handles: Vec<AbortHandle> = (running..wanted)
                    .map(|_| self.spawn_worker(&id, &conn, rate))
                    .collect();
                self.worker_handles
                    .entry(id.clone())
                    .or_default()
                    .primary
                    .extend(handles);
            }
            if rate > self.engine.parts.second_connection_at as f64 {
                self.dial_second(&id, &conn);
            }
        }
    }

    fn spawn_worker(&mut self, id: &PeerId, conn: &PeerConnection, rate: f64) -> AbortHandle {
        let piece_size = self.manifest.piece_size as f64;
        // Until a source is measured, start small: a slow source then
        // holds few pieces, a fast one grows within a request or two.
        let batch = ((rate * 0.5 / piece_size) as usize).clamp(START_BATCH, MAX_BATCH);
        let worker = Worker {
            conn: conn.clone(),
            peer: id.clone(),
            vid: self.vid,
            scheduler: self.scheduler.clone(),
            arrivals: self.arrivals_tx.clone(),
            verified: self.verified.subscribe(),
            buffers: self.buffers.clone(),
            batch,
            piece_size: self.manifest.piece_size as u64,
            layout: self.layout.clone(),
        };
        self.workers.spawn(worker.run())
    }

    /// Open a second connection to a fast source, off the loop, once.
    fn dial_second(&mut self, id: &PeerId, conn: &PeerConnection) {
        let Some(workers) = self.worker_handles.get_mut(id) else {
            return;
        };
        if !matches!(workers.second, Second::None) {
            return;
        }
        let Some(dialer) = self.engine.dialer() else {
            workers.second = Second::Given;
            return;
        };
        workers.second = Second::Dialing;
        let (id, addr) = (id.clone(), conn.connection.remote_address());
        self.seconds.spawn(async move {
            let dial = dialer.connect(addr, Some(id.clone()));
            let conn = match tokio::time::timeout(SECOND_CONNECTION_DIAL, dial).await {
                Ok(Ok(conn)) => Some(conn),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %id, "no second connection: {e}");
                    None
                }
                Err(_) => None,
            };
            (id, conn)
        });
    }

    /// A second connection opened (or not): its workers start while the
    /// source is still one of ours; otherwise it is closed at once.
    fn handle_second_connection(&mut self, id: PeerId, conn: Option<PeerConnection>) {
        let rate = self.rates.capacity(&id);
        let banned = self.scheduler.lock().is_banned(&id);
        let wanted = self
            .worker_handles
            .get(&id)
            .is_some_and(|w| matches!(w.second, Second::Dialing));
        let Some(conn) = conn else {
            if let Some(workers) = self.worker_handles.get_mut(&id) {
                workers.second = Second::Given;
            }
            return;
        };
        if !wanted || banned {
            conn.connection
                .close(close_code::UNNEEDED.into(), b"not needed");
            return;
        }
        tracing::debug!(peer = %id, "second connection open");
        let handles = (0..MAX_STREAMS_PER_SOURCE)
            .map(|_| self.spawn_worker(&id, &conn, rate))
            .collect();
        if let Some(workers) = self.worker_handles.get_mut(&id) {
            workers.second = Second::Open {
                conn,
                workers: handles,
            };
        }
    }

    fn stop_workers_of(&mut self, peer: &PeerId) {
        if let Some(workers) = self.worker_handles.remove(peer) {
            workers.stop();
        }
    }

    /// Stop the workers, let writes in progress finish (a write is never
    /// interrupted half-way), hand the open files to the closer, record
    /// the last pieces after a last flush unless the download completed
    /// (the install flushes next), and report 100 % on completion.
    async fn finish(mut self, result: &Result<End, DownloadError>) {
        tracing::debug!(
            game = %self.game_id,
            from_complete = self.tally.from_complete,
            from_partial = self.tally.from_partial,
            twice = self.tally.twice,
            "pieces received"
        );
        self.workers.abort_all();
        self.seconds.abort_all();
        for (_, workers) in self.worker_handles.drain() {
            workers.stop();
        }
        self.arrivals.close();
        if let Some(flushing) = self.flushing.take() {
            let _ = flushing.await;
        }
        while let Some(done) = self.writes.next().await {
            if let Ok(WriteResult {
                piece,
                outcome: Ok(true),
                ..
            }) = done
            {
                if !self.scheduler.lock().have().contains(piece) {
                    self.unrecorded.push(piece);
                }
            }
        }
        self.files.close_all();
        // A completed download is flushed whole by the install next (one
        // flush of the file system, not two); one that stops keeps what it
        // has for a resume.
        if !matches!(result, Ok(End::Completed)) && !self.unrecorded.is_empty() {
            let work = self.flush_and_record();
            let _ = self
                .engine
                .parts
                .tasks
                .spawn_blocking(format!("flush {}", self.game_id), work)
                .await;
        }
        if matches!(result, Ok(End::Completed)) {
            let total = self.manifest.total_size();
            self.engine.emit(PeerEvent::DownloadProgress {
                version_id: self.vid,
                game_id: self.game_id.clone(),
                bytes_done: total,
                bytes_total: total,
                bytes_per_sec: self.rates.total(),
                eta_secs: Some(0),
                sources: Vec::new(),
            });
        }
    }
}

/// Blocking: verify an arrived piece and write it; its buffer goes back to
/// the pool. Recorded later, after a flush (see `flush_and_record`).
fn verify_and_write(
    files: &staging::OpenFiles,
    manifest: &Manifest,
    layout: &Layout,
    buffers: &BufferPool,
    arrival: Arrival,
) -> WriteResult {
    let len = arrival.data.len() as u64;
    let outcome = if layout.piece_len(arrival.piece) != len
        || !staging::verify(manifest, arrival.piece, &arrival.data)
    {
        Ok(false)
    } else {
        staging::write_piece(files, layout, arrival.piece, &arrival.data)
            .map_err(|e| DownloadError::io("cannot write a piece", e))
            .map(|()| true)
    };
    buffers.give(arrival.data);
    WriteResult {
        piece: arrival.piece,
        peer: arrival.peer,
        len,
        outcome,
    }
}

/// Watch what a partial source has, passing each new state to the swarm
/// (`have_sets`), until the source ends the watch, sends something wrong,
/// or the watch is aborted.
async fn follow_have_set(
    peer: PeerId,
    conn: PeerConnection,
    vid: VersionId,
    n_pieces: usize,
    have_sets: mpsc::Sender<ReadySource>,
) {
    if let Err(e) = follow(&peer, &conn, vid, n_pieces, &have_sets).await {
        tracing::debug!(%peer, "have-set watch ended: {e}");
    }
}

async fn follow(
    peer: &PeerId,
    conn: &PeerConnection,
    vid: VersionId,
    n_pieces: usize,
    have_sets: &mpsc::Sender<ReadySource>,
) -> Result<(), RequestError> {
    let start = async {
        let mut watch = conn.watch_have_set(vid).await?;
        let first = watch.next().await?;
        Ok::<_, RequestError>((watch, first))
    };
    let (mut watch, mut next) = tokio::time::timeout(HAVE_SET_TIMEOUT, start)
        .await
        .map_err(|_| RequestError::Unexpected("no have-set in time".into()))??;
    let mut known: Option<Availability> = None;
    loop {
        let Some(response) = next else {
            return Ok(());
        };
        let read_at = Instant::now();
        known = Some(apply_have_set(known, response, n_pieces)?);
        if have_sets
            .send((peer.clone(), conn.clone(), known.clone()))
            .await
            .is_err()
        {
            return Ok(()); // the download is over
        }
        tokio::time::sleep_until(read_at + WATCH_READ_GAP).await;
        next = watch.next().await?;
    }
}

/// `known` updated by one frame of a have-set watch.
fn apply_have_set(
    known: Option<Availability>,
    response: Response,
    n_pieces: usize,
) -> Result<Availability, RequestError> {
    let wrong = |what: &str| RequestError::Unexpected(format!("have-set watch: {what}"));
    let set = |pieces: Vec<u32>, into: &mut PieceSet| -> Result<(), RequestError> {
        for p in pieces {
            if p as usize >= n_pieces {
                return Err(wrong(&format!("piece {p} is outside 0..{n_pieces}")));
            }
            into.insert(p as usize);
        }
        Ok(())
    };
    match response {
        Response::HaveSet {
            n_pieces: n,
            bits,
            fetching,
        } if n as usize == n_pieces => Ok(Availability {
            have: PieceSet::from_bits(n_pieces, bits).ok_or_else(|| wrong("bad bitmap"))?,
            fetching: PieceSet::from_bits(n_pieces, fetching).ok_or_else(|| wrong("bad bitmap"))?,
        }),
        Response::HaveSet { n_pieces: n, .. } => {
            Err(wrong(&format!("a set of {n} pieces, not {n_pieces}")))
        }
        Response::HaveChanges { have, fetching } => {
            let mut known = known.ok_or_else(|| wrong("changes before a whole set"))?;
            set(have, &mut known.have)?;
            known.fetching = PieceSet::empty(n_pieces);
            set(fetching, &mut known.fetching)?;
            Ok(known)
        }
        _ => Err(wrong("an answer of another kind")),
    }
}

/// Fetches pieces from one source, batch after batch, until the scheduler
/// has nothing for it or the connection fails.
struct Worker {
    conn: PeerConnection,
    peer: PeerId,
    vid: VersionId,
    scheduler: Arc<SharedScheduler>,
    arrivals: mpsc::Sender<Arrival>,
    verified: watch::Receiver<usize>,
    buffers: Arc<BufferPool>,
    /// Pieces per request, resized after each request to about half a
    /// second of this source's measured rate.
    batch: usize,
    piece_size: u64,
    /// Every piece's length: a header announcing another is refused.
    layout: Arc<Layout>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let pieces = {
                let mut s = self.scheduler.lock();
                if s.is_complete() || s.is_banned(&self.peer) {
                    return;
                }
                s.poll_request(&self.peer, self.batch)
            };
            let asked_at = Instant::now();
            if pieces.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let mut pending: std::collections::VecDeque<usize> = pieces.iter().copied().collect();
            let failed = self.fetch(&pieces, &mut pending).await.err();
            let received = (pieces.len() - pending.len()) as f64 * self.piece_size as f64;
            let rate = received / asked_at.elapsed().as_secs_f64().max(0.001);
            self.batch =
                ((rate * 0.5 / self.piece_size as f64) as usize).clamp(MIN_BATCH, MAX_BATCH);
            if !pending.is_empty() {
                let mut s = self.scheduler.lock();
                for piece in pending {
                    s.handle_piece_dropped(piece, &self.peer);
                }
            }
            match failed {
                None => {}
                // The source lacks a piece (its have-set is stale): ask later.
                Some(RequestError::Remote {
                    code: ErrorCode::NotFound | ErrorCode::Busy,
                    ..
                }) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(e) => {
                    tracing::debug!(peer = %self.peer, "source failed: {e}");
                    return;
                }
            }
        }
    }

    async fn fetch(
        &mut self,
        pieces: &[usize],
        pending: &mut std::collections::VecDeque<usize>,
    ) -> Result<(), RequestError> {
        let ids = pieces.iter().map(|&p| p as u32).collect();
        let mut reader = self
            .conn
            .request_pieces(self.vid, &self.layout, ids)
            .await?;
        let align = crate::fsx::direct_io_align();
        loop {
            // Pieces come in the order asked for: the next is the first
            // pending one, and its bytes go where they can be written
            // directly.
            let mut buf = self.buffers.take();
            if let Some(&next) = pending.front() {
                buf.set_shift(piece_buf::direct_shift(&self.layout, next, align));
            }
            let read = reader.next_into(buf);
            tokio::pin!(read);
            let next = loop {
                tokio::select! {
                    next = &mut read => break next?,
                    Ok(()) = self.verified.changed() => {
                        // The piece on the wire came from another source
                        // meanwhile: stop this stream (dropping it tells
                        // the source to stop sending) rather than take it
                        // twice.
                        let front = pending.front().copied();
                        if front.is_some_and(|p| self.scheduler.lock().have().contains(p)) {
                            return Ok(());
                        }
                    }
                }
            };
            let Some((piece, data)) = next else {
                return Ok(());
            };
            pending.pop_front();
            let arrival = Arrival {
                peer: self.peer.clone(),
                piece: piece as usize,
                data,
            };
            if self.arrivals.send(arrival).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(n: u32, have: &[usize]) -> Response {
        let mut set = PieceSet::empty(n as usize);
        for &p in have {
            set.insert(p);
        }
        Response::HaveSet {
            n_pieces: n,
            bits: set.bits().to_vec(),
            fetching: PieceSet::empty(n as usize).bits().to_vec(),
        }
    }

    /// Changes add to the whole set that came first and replace what is
    /// being fetched; anything a watch cannot mean ends it.
    #[test]
    fn a_have_set_watch_builds_on_its_first_whole_set() {
        let known = apply_have_set(None, whole(16, &[0]), 16).unwrap();
        let changes = Response::HaveChanges {
            have: vec![4, 5],
            fetching: vec![9],
        };
        let known = apply_have_set(Some(known), changes, 16).unwrap();
        assert_eq!(known.have.iter().collect::<Vec<_>>(), vec![0, 4, 5]);
        assert_eq!(known.fetching.iter().collect::<Vec<_>>(), vec![9]);
        let fetched = Response::HaveChanges {
            have: vec![9],
            fetching: vec![],
        };
        let known = apply_have_set(Some(known), fetched, 16).unwrap();
        assert_eq!(known.have.count(), 4);
        assert_eq!(known.fetching.count(), 0);

        let early = Response::HaveChanges {
            have: vec![1],
            fetching: vec![],
        };
        assert!(apply_have_set(None, early, 16).is_err(), "changes first");
        let outside = Response::HaveChanges {
            have: vec![16],
            fetching: vec![],
        };
        assert!(apply_have_set(Some(known.clone()), outside, 16).is_err());
        assert!(apply_have_set(Some(known.clone()), whole(17, &[]), 16).is_err());
        assert!(apply_have_set(Some(known), Response::Ok, 16).is_err());
    }
}
