//! Which downloads run and which wait: at most `parallel` run at once, the
//! rest wait in order. The whole queue, running and waiting, is remembered
//! in the store whenever it changes (one ordered writer), so a restart or a
//! quit brings every download back, in order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use lanspread_proto::VersionId;
use tokio_util::sync::CancellationToken;

use super::staging::staging_root;
use super::{DownloadError, Engine, Job};
use crate::events::{CatalogEntry, DownloadInfo, DownloadState, FailureCode, PeerEvent};
use crate::peers::catalog::ids_disagree;

#[derive(Default)]
pub(super) struct Queue {
    waiting: VecDeque<Job>,
    running: HashMap<VersionId, Running>,
    delete_on_cancel: HashSet<VersionId>,
    /// Numbers runs, so the end of one run never touches a later run of the
    /// same version.
    next_run: u64,
}

struct Running {
    run: u64,
    token: CancellationToken,
    info: DownloadInfo,
}

impl Engine {
    /// Queue the download of `target`: a game id, a version id (hex), or
    /// `<version id>:<game id>` — that version under one of the game ids its
    /// sources give it (a `:` is never part of a game id), for a version
    /// whose sources disagree.
    pub async fn start(self: &Arc<Self>, target: &str) -> Result<VersionId, DownloadError> {
        let catalog = self.parts.directory.catalog();
        let (target, chosen_for_version) = match target.split_once(':') {
            Some((vid, game_id)) => (vid, Some(game_id)),
            None => (target, None),
        };
        let by_version = lanspread_proto::Hash::from_hex(target)
            .and_then(|vid| catalog.iter().find(|e| e.version_id == vid));
        // By game id: an entry of that id, or one whose sources disagree and
        // one of them calls it that (the user chose the name).
        let named = |e: &&CatalogEntry| {
            e.game_id == target
                || e.conflict
                    .as_ref()
                    .is_some_and(|c| c.game_ids.iter().any(|id| id == target))
        };
        let chosen_id = by_version.is_none();
        let entry = by_version.or_else(|| {
            catalog
                .iter()
                .filter(|e| named(e) && !e.sources.is_empty() && !e.installed)
                .max_by_key(|e| e.sources.len())
        });
        let Some(entry) = entry else {
            let installed = catalog.iter().any(|e| e.game_id == target && e.installed);
            return Err(if installed {
                DownloadError::new(
                    FailureCode::AlreadyInstalled,
                    format!("`{target}` is installed and no other version is on the LAN"),
                )
            } else {
                DownloadError::new(
                    FailureCode::NotFound,
                    format!("no game `{target}` on the LAN"),
                )
            });
        };
        if entry.installed {
            return Err(DownloadError::new(
                FailureCode::AlreadyInstalled,
                format!("{} is installed already", entry.title),
            ));
        }
        if let Some(reason) = &entry.refused {
            return Err(DownloadError::new(
                FailureCode::Refused,
                format!("refused: {reason}"),
            ));
        }
        let names_it = |id: &str| {
            entry.game_id == id
                || entry
                    .conflict
                    .as_ref()
                    .is_some_and(|c| c.game_ids.iter().any(|named| named == id))
        };
        let game_id = if let Some(chosen) = chosen_for_version {
            if !names_it(chosen) {
                return Err(DownloadError::new(
                    FailureCode::NotFound,
                    format!("no source calls this version `{chosen}`"),
                ));
            }
            chosen.to_owned()
        } else if chosen_id {
            target.to_owned()
        } else if ids_disagree(entry) {
            let ids = entry.conflict.as_ref().map(|c| c.game_ids.join("`, `"));
            return Err(DownloadError::new(
                FailureCode::NameConflict,
                format!(
                    "the peers that list this version call it `{}`; download it by the game \
                     id you choose",
                    ids.unwrap_or_default()
                ),
            ));
        } else {
            entry.game_id.clone()
        };
        let job = Job {
            version_id: entry.version_id,
            game_id,
            title: entry.title.clone(),
            manifest: None,
        };
        let version_id = job.version_id;
        self.enqueue(job);
        self.remember_queue().await;
        Ok(version_id)
    }

    /// Queue again the downloads that were running or waiting when we
    /// stopped: those with a stored manifest first, then the others in the
    /// order they were queued.
    pub async fn resume_saved(self: &Arc<Self>) {
        let saved = self
            .with_store("cannot read saved downloads", |store| {
                Ok((store.downloads_in(&["running"])?, store.queued_downloads()?))
            })
            .await;
        let (running, queued) = match saved {
            Ok(saved) => saved,
            Err(e) => return tracing::warn!("{e}"),
        };
        for (version_id, game_id, manifest) in &running {
            tracing::info!(game = %game_id, "resuming download");
            let title = queued
                .iter()
                .find(|(vid, _, _)| vid == version_id)
                .map_or_else(|| game_id.clone(), |(_, _, title)| title.clone());
            self.enqueue(Job {
                version_id: *version_id,
                title,
                game_id: game_id.clone(),
                manifest: Some(manifest.clone()),
            });
        }
        for (version_id, game_id, title) in queued {
            if running.iter().any(|(vid, _, _)| *vid == version_id) {
                continue;
            }
            tracing::info!(game = %game_id, "download still queued");
            self.enqueue(Job {
                version_id,
                game_id,
                title,
                manifest: None,
            });
        }
    }

    fn enqueue(self: &Arc<Self>, job: Job) {
        {
            let mut queue = self.queue();
            // A download still winding down after a cancel may be queued
            // again; it starts once the old run has let go (see `pump`).
            let running = queue
                .running
                .get(&job.version_id)
                .is_some_and(|r| !r.token.is_cancelled());
            let waiting = queue.waiting.iter().any(|j| j.version_id == job.version_id);
            if running || waiting {
                return;
            }
            queue.delete_on_cancel.remove(&job.version_id);
            self.emit(PeerEvent::DownloadQueued {
                version_id: job.version_id,
                game_id: job.game_id.clone(),
                title: job.title.clone(),
            });
            queue.waiting.push_back(job);
        }
        self.pump();
    }

    /// Start waiting downloads while there are free slots.
    fn pump(self: &Arc<Self>) {
        loop {
            let (job, guard, token) = {
                let mut queue = self.queue();
                if queue.running.len() >= self.parts.parallel || self.parts.token.is_cancelled() {
                    return;
                }
                // The first waiting job whose version is not still running.
                let Some(at) = queue
                    .waiting
                    .iter()
                    .position(|j| !queue.running.contains_key(&j.version_id))
                else {
                    return;
                };
                let job = queue.waiting.remove(at).expect("index from position");
                let token = self.parts.token.child_token();
                let info = DownloadInfo {
                    version_id: job.version_id,
                    game_id: job.game_id.clone(),
                    title: job.title.clone(),
                    state: DownloadState::Running,
                };
                queue.next_run += 1;
                let run = queue.next_run;
                let running = Running {
                    run,
                    token: token.clone(),
                    info,
                };
                queue.running.insert(job.version_id, running);
                let guard = RunningGuard {
                    engine: self.clone(),
                    version_id: job.version_id,
                    run,
                };
                (job, guard, token)
            };
            let engine = self.clone();
            let name = format!("download {}", job.game_id);
            self.parts.tasks.spawn(name, async move {
                engine.run(job, &guard, token).await;
                drop(guard);
            });
        }
    }

    /// Cancel a download (running or queued). With `delete`, its staging data
    /// goes too, also of a paused download; otherwise it stays for a later
    /// resume.
    pub async fn cancel(self: &Arc<Self>, version_id: &VersionId, delete: bool) -> bool {
        let waiting = {
            let mut queue = self.queue();
            if delete {
                queue.delete_on_cancel.insert(*version_id);
            }
            // A run still winding down after a cancel does not hide a job
            // of the same version queued again behind it.
            if let Some(running) = queue
                .running
                .get(version_id)
                .filter(|r| !r.token.is_cancelled() || delete)
            {
                // The run ends between pieces and says so (`job.rs`).
                running.token.cancel();
                if !queue.waiting.iter().any(|j| j.version_id == *version_id) {
                    return true;
                }
            }
            let at = queue
                .waiting
                .iter()
                .position(|j| j.version_id == *version_id);
            if at.is_none() {
                queue.delete_on_cancel.remove(version_id);
            }
            at.and_then(|at| queue.waiting.remove(at))
        };
        let Some(job) = waiting else {
            // Neither running nor waiting: a paused download. Discarding it
            // removes what it had downloaded.
            return delete && self.delete_staging(*version_id).await;
        };
        self.emit(PeerEvent::DownloadCancelled {
            version_id: *version_id,
            game_id: job.game_id,
        });
        let vid = *version_id;
        self.record("cannot record the cancel", move |store| {
            store.set_download_state(&vid, "cancelled")
        })
        .await;
        self.remember_queue().await;
        if delete && !self.queue().running.contains_key(&vid) {
            self.delete_staging(vid).await;
        }
        true
    }

    /// Forget a download and remove its staging folder, on the blocking
    /// pool. Answers whether there was a staging folder.
    pub(super) async fn delete_staging(&self, version_id: VersionId) -> bool {
        let root = staging_root(&self.parts.games_dir, &version_id);
        let removed = self.with_store("cannot delete the download", move |store| {
            store.forget_download(&version_id)?;
            let existed = root.exists();
            if let Err(e) = std::fs::remove_dir_all(&root) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot delete {}: {e}", root.display());
                }
            }
            Ok(existed)
        });
        match removed.await {
            Ok(existed) => existed,
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        }
    }

    /// Downloads running or queued.
    pub fn downloads(&self) -> Vec<DownloadInfo> {
        let queue = self.queue();
        let mut list: Vec<DownloadInfo> = queue.running.values().map(|r| r.info.clone()).collect();
        list.extend(queue.waiting.iter().map(|j| DownloadInfo {
            version_id: j.version_id,
            game_id: j.game_id.clone(),
            title: j.title.clone(),
            state: DownloadState::Queued,
        }));
        list
    }

    /// A run has ended: it leaves the running set, before it reports its
    /// end, so a command that follows the report (a discard of the paused
    /// download) finds it paused. A discard asked before that deletes the
    /// staging data here, while the run still holds its slot (no new run of
    /// the version can start meanwhile); the check and the leaving are one
    /// step under the lock, so no discard is lost. Answers whether the
    /// staging data was deleted.
    pub(super) async fn leave_running(&self, guard: &RunningGuard) -> bool {
        let mut deleted = false;
        loop {
            let delete = {
                let mut queue = self.queue();
                if queue.delete_on_cancel.remove(&guard.version_id) {
                    true
                } else {
                    guard.release(&mut queue);
                    return deleted;
                }
            };
            if delete {
                deleted |= self.delete_staging(guard.version_id).await;
            }
        }
    }

    /// Write the queue as it is now: every running and waiting download, in
    /// order. Called after each change; a write takes its snapshot inside
    /// the ordered section, so the last one is always current. Not while
    /// the runtime stops: what was queued then comes back at the next start.
    pub(super) async fn remember_queue(&self) {
        let _one_at_a_time = self.queue_writes.lock().await;
        if self.parts.token.is_cancelled() {
            return;
        }
        let rows: Vec<_> = {
            let queue = self.queue();
            let mut running: Vec<&Running> = queue.running.values().collect();
            running.sort_by_key(|r| r.run);
            running
                .into_iter()
                .filter(|r| !r.token.is_cancelled())
                .map(|r| {
                    (
                        r.info.version_id,
                        r.info.game_id.clone(),
                        r.info.title.clone(),
                    )
                })
                .chain(
                    queue
                        .waiting
                        .iter()
                        .map(|j| (j.version_id, j.game_id.clone(), j.title.clone())),
                )
                .collect()
        };
        self.record("cannot remember the queue", move |store| {
            store.replace_queued(&rows)
        })
        .await;
    }
}

/// Removes a finished download from the running set on every exit path
/// (completion, error, cancellation, abort) and starts the next one. It
/// removes only its own run: a later run of the same version is left alone.
pub(super) struct RunningGuard {
    engine: Arc<Engine>,
    version_id: VersionId,
    run: u64,
}

impl RunningGuard {
    fn release(&self, queue: &mut Queue) {
        if queue
            .running
            .get(&self.version_id)
            .is_some_and(|r| r.run == self.run)
        {
            queue.running.remove(&self.version_id);
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.release(&mut self.engine.queue());
        self.engine.pump();
    }
}
