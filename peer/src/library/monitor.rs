//! The library monitor service: the initial scan, then watching the games
//! folder and re-indexing only the games that changed, once they are quiet.
//!
//! Policy: `Restart`. A watcher error (inotify limits, a games folder on a
//! flaky network share) is usually transient, and starting over costs only a
//! stat of every file thanks to the hash cache. Meanwhile the last published
//! library stays served.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode, DebounceEventResult};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::scan::ScanError;
use super::{is_game_folder_name, IndexError, Indexer, LibrarySnapshot};
use crate::events::{EventSink, PeerEvent};
use crate::supervisor::ServiceContext;
use crate::tasks::RuntimeTasks;

/// Filesystem events are batched for this long before they reach the monitor.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often the monitor checks which changed games have gone quiet.
const QUIET_CHECK: Duration = Duration::from_millis(250);
/// Full rescan (stat only for unchanged games) as a safety net for missed
/// events, and the only way to notice changes when watching is impossible.
const RESCAN_WATCHING: Duration = Duration::from_secs(600);
const RESCAN_NOT_WATCHING: Duration = Duration::from_secs(30);
/// Indexing progress events per game, at most one per this interval.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Filesystem event batches buffered; past that, one full rescan.
const EVENT_BATCHES: usize = 256;

/// The library as the rest of the runtime sees it.
pub struct Library {
    pub indexer: Indexer,
    snapshot: watch::Sender<Arc<LibrarySnapshot>>,
    // A std Mutex: replaced whole after a scan, never held across an await.
    errors: Mutex<BTreeMap<String, Vec<ScanError>>>,
    events: EventSink,
    quiet_period: Duration,
}

impl Library {
    pub fn new(indexer: Indexer, events: EventSink, quiet_period: Duration) -> Self {
        Self {
            indexer,
            snapshot: watch::Sender::new(Arc::default()),
            errors: Mutex::default(),
            events,
            quiet_period,
        }
    }

    /// The complete games, now; subscribe to hear of changes.
    pub fn snapshot(&self) -> Arc<LibrarySnapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<LibrarySnapshot>> {
        self.snapshot.subscribe()
    }

    /// What we offer changed without the library changing (a download
    /// started and serves its pieces): peers are told to list us again.
    pub fn offer_changed(&self) {
        self.snapshot.send_modify(|_| {});
    }

    /// Add a game verified elsewhere (a finished download) without hashing it.
    pub fn publish_game(&self, game: super::LocalGame) {
        let before = self.snapshot();
        let mut after = (*before).clone();
        after.insert(game.id.clone(), Arc::new(game));
        self.publish(&before, after);
    }

    /// Soft errors of the last scan of each game.
    pub fn scan_errors(&self) -> Vec<ScanError> {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.values().flatten().cloned().collect()
    }

    /// Re-index `games` (all of them when `None`) and publish the result.
    /// Blocking: run it on a blocking thread. Returns the games that must be
    /// tried again later (they changed while being hashed).
    pub fn rescan(&self, games: Option<Vec<String>>, cancel: &CancellationToken) -> Vec<String> {
        let (ids, list_errors) = match games {
            Some(games) => (games, None),
            None => {
                let (ids, errors) = self.indexer.list_games();
                (ids, Some(errors))
            }
        };
        let full = list_errors.is_some();
        let before = self.snapshot();
        let mut after: LibrarySnapshot = if full {
            BTreeMap::new()
        } else {
            (*before).clone()
        };
        let mut retry = Vec::new();
        let mut errors_by_game = BTreeMap::new();
        if let Some(errors) = list_errors {
            errors_by_game.insert(String::new(), errors);
        }
        for game in ids {
            if cancel.is_cancelled() {
                return retry;
            }
            let throttle = Mutex::new(None::<std::time::Instant>);
            let progress = |done: u64, total: u64| {
                let mut last = throttle.lock().unwrap_or_else(|e| e.into_inner());
                let now = std::time::Instant::now();
                if done < total && last.is_some_and(|t| now - t < PROGRESS_INTERVAL) {
                    return;
                }
                *last = Some(now);
                self.events.emit(PeerEvent::IndexingProgress {
                    game: game.clone(),
                    bytes_done: done,
                    bytes_total: total,
                });
            };
            match self.indexer.index_game(&game, cancel, &progress) {
                Ok((Some(local), errors)) => {
                    for e in &errors {
                        tracing::warn!(game = %e.game, path = ?e.path, "{}", e.message);
                    }
                    errors_by_game.insert(game.clone(), errors);
                    after.insert(game, Arc::new(local));
                }
                Ok((None, _)) => {
                    after.remove(&game);
                    errors_by_game.insert(game, Vec::new());
                }
                Err(IndexError::Cancelled) => return retry,
                Err(e @ IndexError::Changed(_)) => {
                    tracing::info!(%game, "{e}");
                    // Keep what was served before; try again once quiet.
                    if let Some(old) = before.get(&game) {
                        after.insert(game.clone(), old.clone());
                    }
                    retry.push(game);
                }
                Err(e) => {
                    tracing::error!(%game, "cannot index: {e}");
                    errors_by_game.insert(
                        game.clone(),
                        vec![ScanError {
                            game: game.clone(),
                            path: None,
                            message: e.to_string(),
                        }],
                    );
                }
            }
        }
        {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            if full {
                *errors = errors_by_game;
            } else {
                errors.extend(errors_by_game);
            }
        }
        self.publish(&before, after);
        retry
    }

    fn publish(&self, before: &LibrarySnapshot, after: LibrarySnapshot) {
        let mut added = Vec::new();
        let mut updated = Vec::new();
        let removed: Vec<String> = before
            .keys()
            .filter(|id| !after.contains_key(*id))
            .cloned()
            .collect();
        for (id, game) in &after {
            match before.get(id) {
                None => added.push(id.clone()),
                Some(old) if old.version_id != game.version_id || old.metadata != game.metadata => {
                    updated.push(id.clone())
                }
                Some(_) => {}
            }
        }
        if added.is_empty() && updated.is_empty() && removed.is_empty() {
            return;
        }
        tracing::info!(?added, ?updated, ?removed, "library changed");
        self.snapshot.send_replace(Arc::new(after));
        self.events.emit(PeerEvent::LibraryChanged {
            added,
            updated,
            removed,
        });
    }
}

/// The monitor service body.
pub async fn run(
    ctx: ServiceContext,
    library: Arc<Library>,
    tasks: RuntimeTasks,
) -> anyhow::Result<()> {
    let token = ctx.token().clone();
    let games_dir = library.indexer.games_dir().to_path_buf();
    let (tx, mut changes) = mpsc::channel::<Vec<PathBuf>>(EVENT_BATCHES);
    let overflowed = Arc::new(AtomicBool::new(false));
    // Dropping the debouncer stops its threads: it lives exactly as long as
    // this run.
    let watcher = watch_games_dir(&games_dir, tx, overflowed.clone());
    let rescan_every = match &watcher {
        Ok(_) => RESCAN_WATCHING,
        Err(e) => {
            tracing::warn!(
                "cannot watch {}: {e:#}; rescanning every {RESCAN_NOT_WATCHING:?}",
                games_dir.display()
            );
            RESCAN_NOT_WATCHING
        }
    };

    let mut pending: HashMap<String, Instant> = HashMap::new();
    for game in rescan(&library, &tasks, None, &token).await? {
        pending.insert(game, Instant::now());
    }
    let mut quiet_check = tokio::time::interval(QUIET_CHECK);
    let mut full_rescan = tokio::time::interval_at(Instant::now() + rescan_every, rescan_every);
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return Ok(()),
            Some(paths) = changes.recv() => {
                for path in paths {
                    if let Some(game) = game_of(&games_dir, &path) {
                        pending.insert(game, Instant::now());
                    }
                }
            }
            _ = quiet_check.tick() => {
                ctx.heartbeat();
                if overflowed.swap(false, Ordering::Relaxed) {
                    full_rescan.reset_immediately();
                    continue;
                }
                let quiet: Vec<String> = pending
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= library.quiet_period)
                    .map(|(game, _)| game.clone())
                    .collect();
                if quiet.is_empty() {
                    continue;
                }
                for game in &quiet {
                    pending.remove(game);
                }
                for game in rescan(&library, &tasks, Some(quiet), &token).await? {
                    pending.insert(game, Instant::now());
                }
            }
            _ = full_rescan.tick() => {
                for game in rescan(&library, &tasks, None, &token).await? {
                    pending.insert(game, Instant::now());
                }
            }
        }
    }
}

/// Run a rescan on a blocking thread (tracked) and wait for it; it stops
/// between pieces when `token` is cancelled.
async fn rescan(
    library: &Arc<Library>,
    tasks: &RuntimeTasks,
    games: Option<Vec<String>>,
    token: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let library = library.clone();
    let token = token.clone();
    tasks
        .spawn_blocking("index the library", move || library.rescan(games, &token))
        .await
        .context("library scan thread failed")
}

type Debouncer =
    notify_debouncer_mini::Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>;

fn watch_games_dir(
    games_dir: &Path,
    tx: mpsc::Sender<Vec<PathBuf>>,
    overflowed: Arc<AtomicBool>,
) -> anyhow::Result<Debouncer> {
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            let paths = events.into_iter().map(|e| e.path).collect();
            if tx.try_send(paths).is_err() {
                overflowed.store(true, Ordering::Relaxed);
            }
        }
        Err(e) => {
            tracing::warn!("watch error: {e}; rescanning");
            overflowed.store(true, Ordering::Relaxed);
        }
    })
    .context("cannot create a file watcher")?;
    debouncer
        .watcher()
        .watch(games_dir, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", games_dir.display()))?;
    Ok(debouncer)
}

/// The game a changed path belongs to, if any.
fn game_of(games_dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(games_dir).ok()?;
    let first = rel.components().next()?;
    let name = first.as_os_str().to_str()?;
    is_game_folder_name(name).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_to_games() {
        let dir = Path::new("/games");
        assert_eq!(
            game_of(dir, Path::new("/games/q3/baseq3/pak0.pk3")),
            Some("q3".into())
        );
        assert_eq!(game_of(dir, Path::new("/games/q3")), Some("q3".into()));
        assert_eq!(game_of(dir, Path::new("/games/.lanspread-staging/x")), None);
        assert_eq!(game_of(dir, Path::new("/games")), None);
        assert_eq!(game_of(dir, Path::new("/elsewhere/x")), None);
    }
}
