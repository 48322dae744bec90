//! The library monitor service: the initial scan, then watching the games
//! folder and re-indexing only the games that changed, once they are quiet.
//!
//! Policy: `Restart`. A watcher error (inotify limits, a games folder on a
//! flaky network share) is usually transient, and starting over costs only a
//! stat of every file thanks to the hash cache. Meanwhile the last published
//! library stays served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::scan::ScanError;
use super::{is_game_folder_name, IndexError, Indexer, LibrarySnapshot, LocalGame};
use crate::events::{EventSink, PeerEvent};
use crate::supervisor::ServiceContext;
use crate::tasks::RuntimeTasks;

/// The monitor takes what the watcher saw, and looks for changed games gone
/// quiet, at most this often (a folder being copied in sends thousands of
/// events a second); an idle library never wakes it.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A sign of life on the health board this often, with nothing to do.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Full rescan (stat only for unchanged games) as a safety net for missed
/// events, and the only way to notice changes when watching is impossible.
const RESCAN_WATCHING: Duration = Duration::from_secs(600);
const RESCAN_NOT_WATCHING: Duration = Duration::from_secs(30);
/// Indexing progress events per game, at most one per this interval.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// The library as the rest of the runtime sees it.
pub struct Library {
    pub indexer: Indexer,
    snapshot: watch::Sender<Arc<LibrarySnapshot>>,
    // A std Mutex: replaced whole after a scan, never held across an await.
    errors: Mutex<BTreeMap<String, Vec<ScanError>>>,
    /// Held while the snapshot is replaced ([`Library::update`]). A std
    /// Mutex: no await happens under it.
    updating: Mutex<()>,
    events: EventSink,
    quiet_period: Duration,
}

impl Library {
    pub fn new(indexer: Indexer, events: EventSink, quiet_period: Duration) -> Self {
        Self {
            indexer,
            snapshot: watch::Sender::new(Arc::default()),
            errors: Mutex::default(),
            updating: Mutex::default(),
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
        let game = Arc::new(game);
        self.update(|current| {
            let mut after = current.clone();
            after.insert(game.id.clone(), game);
            after
        });
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
        match self.index(games, cancel) {
            Some(found) => self.apply(found),
            None => Vec::new(),
        }
    }

    /// The first half of [`Library::rescan`]: index `games` (all when
    /// `None`) and say what changes, without publishing. Hashing takes long;
    /// a game published meanwhile must survive the second half. `None` when
    /// cancelled.
    // Long on purpose: one pass over the games, each outcome of indexing one
    // (offered, gone, changed meanwhile, failed) handled where it happens.
    fn index(&self, games: Option<Vec<String>>, cancel: &CancellationToken) -> Option<Rescan> {
        let (ids, list_errors) = match games {
            Some(games) => (games, None),
            None => {
                let (ids, errors) = self.indexer.list_games();
                (ids, Some(errors))
            }
        };
        let full = list_errors.is_some();
        let started_from = self.snapshot();
        let mut verdicts = BTreeMap::new();
        if full {
            // Offered, but no longer a folder: withdrawn.
            for game in started_from.keys().filter(|game| !ids.contains(game)) {
                verdicts.insert(game.clone(), None);
            }
        }
        let mut retry = Vec::new();
        let mut errors_by_game = BTreeMap::new();
        if let Some(errors) = list_errors {
            errors_by_game.insert(String::new(), errors);
        }
        for game in ids {
            if cancel.is_cancelled() {
                return None;
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
                    verdicts.insert(game, Some(Arc::new(local)));
                }
                Ok((None, errors)) => {
                    // Gone, or refused (the errors say why).
                    for e in &errors {
                        tracing::warn!(game = %e.game, path = ?e.path, "{}", e.message);
                    }
                    errors_by_game.insert(game.clone(), errors);
                    verdicts.insert(game, None);
                }
                Err(IndexError::Cancelled) => return None,
                Err(e @ IndexError::Changed(_)) => {
                    tracing::info!(%game, "{e}");
                    // Keep what is served; try again once quiet.
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
                    // A full rescan offers only what it could index; a
                    // partial one keeps what is served.
                    if full {
                        verdicts.insert(game, None);
                    }
                }
            }
        }
        Some(Rescan {
            full,
            started_from,
            verdicts,
            errors_by_game,
            retry,
        })
    }

    /// The second half of [`Library::rescan`]: apply its verdicts to the
    /// library as it is now, not as it was when the rescan started. A game
    /// published meanwhile (a download installed it) is newer than what the
    /// rescan saw, so it is left as it is, whatever the verdict. Returns the
    /// games to try again.
    fn apply(&self, rescan: Rescan) -> Vec<String> {
        {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            if rescan.full {
                *errors = rescan.errors_by_game;
            } else {
                errors.extend(rescan.errors_by_game);
            }
        }
        let started_from = rescan.started_from;
        let verdicts = rescan.verdicts;
        self.update(|current| {
            let mut after = current.clone();
            for (game, verdict) in verdicts {
                if !same_entry(current.get(&game), started_from.get(&game)) {
                    continue;
                }
                match verdict {
                    Some(local) => after.insert(game, local),
                    None => after.remove(&game),
                };
            }
            after
        });
        rescan.retry
    }

    /// Replace the snapshot by `change(current)`. Every change goes through
    /// here under one lock, so two never start from the same snapshot and
    /// neither is lost; the events go out in the same order.
    fn update(&self, change: impl FnOnce(&LibrarySnapshot) -> LibrarySnapshot) {
        let _one_at_a_time = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.snapshot();
        let after = change(&before);
        self.publish(&before, after);
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

/// What one rescan found, before [`Library::apply`] publishes it.
struct Rescan {
    full: bool,
    /// The library when the rescan started.
    started_from: Arc<LibrarySnapshot>,
    /// Per game: offer this (`Some`) or withdraw it (`None`). Games without
    /// a verdict (not looked at, or changed while hashed) stay as they are.
    verdicts: BTreeMap<String, Option<Arc<LocalGame>>>,
    errors_by_game: BTreeMap<String, Vec<ScanError>>,
    /// Changed while being hashed: index again once quiet.
    retry: Vec<String>,
}

/// Whether two snapshot entries are the same publication of a game (or both
/// absent). By pointer: every publication makes a new `Arc`.
fn same_entry(a: Option<&Arc<LocalGame>>, b: Option<&Arc<LocalGame>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
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
    // Dropping the watcher stops its thread: it lives exactly as long as
    // this run.
    let mut watcher = GamesWatcher::start(&games_dir);
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

    // Changed games, and when each last changed: indexed once quiet.
    let mut pending: HashMap<String, Instant> = HashMap::new();
    for game in rescan(&library, &tasks, None, &token).await? {
        pending.insert(game, Instant::now());
    }
    let news = watcher.as_ref().ok().map(|w| w.news.clone());
    let (mut next_take, mut next_quiet) = (Instant::now(), Instant::now());
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut full_rescan = tokio::time::interval_at(Instant::now() + rescan_every, rescan_every);
    loop {
        let quiet_at = pending
            .values()
            .min()
            .map(|at| (*at + library.quiet_period).max(next_quiet));
        tokio::select! {
            biased;
            _ = token.cancelled() => return Ok(()),
            () = seen_news(news.as_deref(), next_take) => {
                next_take = Instant::now() + CHECK_EVERY;
                if let Ok(watcher) = &mut watcher {
                    let seen = watcher.take_seen();
                    if seen.overflowed {
                        full_rescan.reset_immediately();
                        continue;
                    }
                    for game in seen.games {
                        pending.insert(game, Instant::now());
                    }
                }
            }
            () = tokio::time::sleep_until(quiet_at.unwrap_or_else(Instant::now)), if quiet_at.is_some() => {
                next_quiet = Instant::now() + CHECK_EVERY;
                let quiet: Vec<String> = pending
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= library.quiet_period)
                    .map(|(game, _)| game.clone())
                    .collect();
                for game in &quiet {
                    pending.remove(game);
                }
                for game in rescan(&library, &tasks, Some(quiet), &token).await? {
                    pending.insert(game, Instant::now());
                }
            }
            _ = heartbeat.tick() => ctx.heartbeat(),
            _ = full_rescan.tick() => {
                for game in rescan(&library, &tasks, None, &token).await? {
                    pending.insert(game, Instant::now());
                }
            }
        }
    }
}

/// Returns once the watcher has seen something, and not before `not_before`;
/// never without a watcher. Cancel-safe: news that came meanwhile is kept
/// (`Notify` holds one permit).
async fn seen_news(news: Option<&tokio::sync::Notify>, not_before: Instant) {
    let Some(news) = news else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(not_before).await;
    news.notified().await;
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

/// What the watcher saw since the monitor last looked.
#[derive(Default)]
struct Seen {
    /// Games with a change below them.
    games: HashSet<String>,
    /// Top-level entries created, moved or removed: their watch changes.
    roots: HashSet<String>,
    /// Events were lost (queue overflow, watch error): rescan everything.
    overflowed: bool,
}

/// Watches each game folder (recursively) and the games folder itself (its
/// entries only), so the staging area and other hidden folders are never
/// watched: a download writing thousands of files there costs the watcher
/// nothing. Reads are not changes: the server opening the files it serves
/// (inotify reports every open and close) never marks a game as changed.
struct GamesWatcher {
    games_dir: PathBuf,
    watcher: RecommendedWatcher,
    // A std Mutex: the watcher's thread inserts, the monitor takes the set;
    // no await under it.
    seen: Arc<Mutex<Seen>>,
    /// Woken by the watcher's thread when it saw something.
    news: Arc<tokio::sync::Notify>,
}

impl GamesWatcher {
    fn start(games_dir: &Path) -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let news = Arc::new(tokio::sync::Notify::new());
        let (dir, sink, wake) = (games_dir.to_path_buf(), seen.clone(), news.clone());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let mut seen = sink.lock().unwrap_or_else(|e| e.into_inner());
                let event = match event {
                    Ok(event) if !event.need_rescan() => event,
                    Ok(_) => {
                        seen.overflowed = true;
                        wake.notify_one();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("watch error: {e}; rescanning");
                        seen.overflowed = true;
                        wake.notify_one();
                        return;
                    }
                };
                if !is_change(&event.kind) {
                    return;
                }
                for path in &event.paths {
                    if let Some(game) = game_of(&dir, path) {
                        if path.parent() == Some(dir.as_path()) {
                            seen.roots.insert(game.clone());
                        }
                        seen.games.insert(game);
                        wake.notify_one();
                    }
                }
            })
            .context("cannot create a file watcher")?;
        watcher
            .watch(games_dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", games_dir.display()))?;
        let entries = std::fs::read_dir(games_dir)
            .with_context(|| format!("cannot read {}", games_dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let is_game = entry.file_name().to_str().is_some_and(is_game_folder_name);
            if is_game && path.is_dir() {
                watcher
                    .watch(&path, RecursiveMode::Recursive)
                    .with_context(|| format!("cannot watch {}", path.display()))?;
            }
        }
        Ok(Self {
            games_dir: games_dir.to_path_buf(),
            watcher,
            seen,
            news,
        })
    }

    /// What was seen since the last call; game folders that appeared are
    /// watched from now on (their files are indexed anyway, once quiet).
    fn take_seen(&mut self) -> Seen {
        let mut seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        for game in &seen.roots {
            let path = self.games_dir.join(game);
            // Gone folders lose their watch by themselves; watching one
            // again (moved away and back) is harmless.
            if path.is_dir() {
                if let Err(e) = self.watcher.watch(&path, RecursiveMode::Recursive) {
                    tracing::warn!("cannot watch {}: {e}; rescanning", path.display());
                    seen.overflowed = true;
                }
            }
        }
        seen
    }
}

/// Whether an event can change what a game holds: anything but reads (an
/// open, or a close without a write).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
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
    use crate::store::Store;

    struct Rig {
        _dir: tempfile::TempDir,
        games: PathBuf,
        library: Library,
    }

    impl Rig {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let games = dir.path().join("games");
            std::fs::create_dir_all(&games).unwrap();
            let store = Arc::new(Store::open_in_memory().unwrap());
            let (events, _) = EventSink::new(256);
            let library = Library::new(Indexer::new(games.clone(), store), events, Duration::ZERO);
            Self {
                _dir: dir,
                games,
                library,
            }
        }

        fn write_game(&self, game: &str, contents: &str) {
            std::fs::create_dir_all(self.games.join(game)).unwrap();
            std::fs::write(self.games.join(game).join("data.bin"), contents).unwrap();
        }

        /// The game as a finished download hands it over: verified, not
        /// hashed by the library.
        fn installed(&self, game: &str, contents: &str) -> LocalGame {
            self.write_game(game, contents);
            let (local, _) = self
                .library
                .indexer
                .index_game(game, &CancellationToken::new(), &|_, _| {})
                .unwrap();
            local.expect("a game")
        }

        fn offered(&self) -> Vec<(String, lanspread_proto::VersionId)> {
            let snapshot = self.library.snapshot();
            snapshot
                .iter()
                .map(|(id, game)| (id.clone(), game.version_id))
                .collect()
        }
    }

    /// Bug: a full rescan published a whole new library built from the
    /// snapshot it took at its start, so a game a download installed while
    /// the rescan was hashing (`publish_game`) vanished from the library.
    #[test]
    fn a_game_installed_during_a_rescan_stays_in_the_library() {
        let rig = Rig::new();
        let cancel = CancellationToken::new();
        rig.write_game("old", "old bytes");
        rig.library.rescan(None, &cancel);

        let found = rig.library.index(None, &cancel).expect("not cancelled");
        let new = rig.installed("new", "new bytes");
        let new_version = new.version_id;
        rig.library.publish_game(new);
        assert!(rig.library.apply(found).is_empty());

        let offered: Vec<String> = rig.offered().into_iter().map(|(id, _)| id).collect();
        assert_eq!(offered, ["new", "old"]);
        assert_eq!(rig.library.snapshot()["new"].version_id, new_version);
    }

    /// The other verdicts of a rescan yield to a game published while it
    /// ran, too: a game it saw gone, or indexed at its old contents, is the
    /// newly installed one now.
    #[test]
    fn a_rescan_never_undoes_a_game_published_while_it_ran() {
        let rig = Rig::new();
        let cancel = CancellationToken::new();
        rig.write_game("gone", "v1");
        rig.write_game("stale", "v1");
        rig.write_game("removed", "v1");
        rig.library.rescan(None, &cancel);

        std::fs::remove_dir_all(rig.games.join("gone")).unwrap();
        std::fs::remove_dir_all(rig.games.join("removed")).unwrap();
        let found = rig.library.index(None, &cancel).expect("not cancelled");
        // Installed meanwhile: "gone" again, and a new version of "stale".
        let gone = rig.installed("gone", "version two");
        let stale = rig.installed("stale", "version two");
        let expected = vec![
            ("gone".to_owned(), gone.version_id),
            ("stale".to_owned(), stale.version_id),
        ];
        rig.library.publish_game(gone);
        rig.library.publish_game(stale);
        rig.library.apply(found);

        // "removed" went and nothing replaced it: withdrawn.
        assert_eq!(rig.offered(), expected);
    }

    #[test]
    fn reads_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind};
        let check =
            |kind: EventKind, expected: bool| assert_eq!(is_change(&kind), expected, "{kind:?}");
        check(EventKind::Access(AccessKind::Open(AccessMode::Any)), false);
        check(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            false,
        );
        check(EventKind::Access(AccessKind::Read), false);
        check(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            true,
        );
        check(EventKind::Modify(ModifyKind::Any), true);
        check(EventKind::Create(CreateKind::File), true);
        check(EventKind::Any, true);
    }

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
