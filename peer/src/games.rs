//! What a player does with an installed game: play it, find its folder,
//! delete it. Only games the library indexed are touched, by their id; no
//! path comes from the caller.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use crate::events::FailureCode;
use crate::library::{LibrarySnapshot, LocalGame};

/// Why an action on an installed game did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GameActionError {
    #[error("no installed game `{game_id}`")]
    NotInstalled { game_id: String },
    #[error("{title} names no program to start; add `executable = \"...\"` to its lanspread.toml")]
    NoExecutable { title: String },
    #[error("cannot start {path}: {message}")]
    Launch { path: String, message: String },
    #[error("cannot delete {path}: {message}")]
    Delete { path: String, message: String },
}

impl GameActionError {
    /// What front ends branch on.
    pub fn code(&self) -> FailureCode {
        match self {
            Self::NotInstalled { .. } => FailureCode::NotInstalled,
            Self::NoExecutable { .. } => FailureCode::NoExecutable,
            Self::Launch { .. } => FailureCode::Launch,
            Self::Delete { .. } => FailureCode::Delete,
        }
    }
}

fn installed(snapshot: &LibrarySnapshot, game_id: &str) -> Result<LocalGame, GameActionError> {
    snapshot
        .get(game_id)
        .map(|g| (**g).clone())
        .ok_or_else(|| GameActionError::NotInstalled {
            game_id: game_id.to_owned(),
        })
}

/// The games whose program lanspread started and that still run: an update
/// of one stays staged until it exits (its files may be locked, and a game
/// should not change under a player).
#[derive(Default)]
pub struct RunningGames {
    // A std Mutex: a count changes under it, never an await.
    counts: Mutex<HashMap<String, usize>>,
    exited: tokio::sync::Notify,
}

impl RunningGames {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_running(&self, game_id: &str) -> bool {
        self.counts().contains_key(game_id)
    }

    /// The game ids running now, sorted.
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.counts().keys().cloned().collect();
        ids.sort();
        ids
    }

    fn started(&self, game_id: &str) {
        *self.counts().entry(game_id.to_owned()).or_default() += 1;
    }

    fn ended(&self, game_id: &str) {
        let mut counts = self.counts();
        if let Some(count) = counts.get_mut(game_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(game_id);
            }
        }
        drop(counts);
        self.exited.notify_waiters();
    }

    /// Resolves once no program lanspread started for `game_id` runs.
    /// Cancel-safe.
    pub async fn wait_exit(&self, game_id: &str) {
        loop {
            let notified = self.exited.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_running(game_id) {
                return;
            }
            notified.await;
        }
    }
}

/// The folder of an installed game.
pub fn folder(snapshot: &LibrarySnapshot, game_id: &str) -> Result<PathBuf, GameActionError> {
    installed(snapshot, game_id).map(|g| g.root)
}

/// Start the program the game's metadata names, in the game's folder, with
/// its arguments. The game runs on its own; a thread reaps it and logs how it
/// ended.
pub fn launch(
    snapshot: &LibrarySnapshot,
    game_id: &str,
    running: &Arc<RunningGames>,
) -> Result<(), GameActionError> {
    let game = installed(snapshot, game_id)?;
    let relative =
        game.metadata
            .executable
            .as_deref()
            .ok_or_else(|| GameActionError::NoExecutable {
                title: game.metadata.title.clone(),
            })?;
    // Validated as a relative path without `..` when the metadata was parsed.
    let path = crate::fsx::manifest_path(&game.root, relative);
    let launch_error = |message: String| GameActionError::Launch {
        path: path.display().to_string(),
        message,
    };
    if !path.is_file() {
        return Err(launch_error("the file is missing".into()));
    }
    let child = Command::new(&path)
        .args(&game.metadata.args)
        .current_dir(&game.root)
        .spawn()
        .map_err(|e| launch_error(e.to_string()))?;
    tracing::info!(game = %game_id, pid = child.id(), "game started");
    running.started(game_id);
    reap(game_id.to_owned(), child, running.clone());
    Ok(())
}

fn reap(game_id: String, mut child: Child, running: Arc<RunningGames>) {
    let watched = game_id.clone();
    let watcher = running.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("game {game_id}"))
        .spawn(move || {
            match child.wait() {
                Ok(status) => tracing::info!(game = %game_id, %status, "game exited"),
                Err(e) => tracing::warn!(game = %game_id, "cannot wait for the game: {e}"),
            }
            watcher.ended(&game_id);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the started game: {e}");
        // Unwatched: never hold an update back for it.
        running.ended(&watched);
    }
}

/// Remove an installed game's folder. A top-level link to a folder elsewhere
/// (the host's choice to share it) loses the link, never the target.
/// Blocking: run it on a blocking thread. The caller rescans the library.
pub fn delete(snapshot: &LibrarySnapshot, game_id: &str) -> Result<(), GameActionError> {
    let root = folder(snapshot, game_id)?;
    remove_game_folder(&root).map_err(|e| GameActionError::Delete {
        path: root.display().to_string(),
        message: e.to_string(),
    })
}

fn remove_game_folder(root: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.file_type().is_symlink() {
        // A directory link is a file on Unix and a directory on Windows.
        return std::fs::remove_file(root).or_else(|_| std::fs::remove_dir(root));
    }
    std::fs::remove_dir_all(root)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use lanspread_proto::Manifest;

    use super::*;
    use crate::library::metadata::GameMetadata;

    fn snapshot_with(root: &Path, metadata: GameMetadata) -> LibrarySnapshot {
        let manifest = Manifest {
            piece_size: 1 << 20,
            files: Vec::new(),
            empty_dirs: Vec::new(),
            pieces: Vec::new(),
        };
        let game = LocalGame {
            id: "game".into(),
            root: root.to_owned(),
            metadata,
            version_id: manifest.version_id(),
            manifest: Arc::new(manifest),
            total_size: 0,
            thumbnail: None,
            identities: None,
        };
        BTreeMap::from([("game".to_owned(), Arc::new(game))])
    }

    #[test]
    fn unknown_games_are_refused() {
        let snapshot = LibrarySnapshot::new();
        let expected = GameActionError::NotInstalled {
            game_id: "../etc".into(),
        };
        assert_eq!(folder(&snapshot, "../etc"), Err(expected.clone()));
        assert_eq!(
            launch(&snapshot, "../etc", &Arc::default()),
            Err(expected.clone())
        );
        assert_eq!(delete(&snapshot, "../etc"), Err(expected));
    }

    #[test]
    fn a_game_without_an_executable_says_how_to_name_one() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = snapshot_with(dir.path(), GameMetadata::fallback("Quake"));
        let err = launch(&snapshot, "game", &Arc::default()).unwrap_err();
        assert!(err.to_string().contains("executable = "), "{err}");
    }

    #[test]
    fn a_missing_executable_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let metadata = GameMetadata {
            executable: Some("bin/game.exe".into()),
            ..GameMetadata::fallback("Quake")
        };
        let snapshot = snapshot_with(dir.path(), metadata);
        match launch(&snapshot, "game", &Arc::default()) {
            Err(GameActionError::Launch { path, message }) => {
                assert!(path.ends_with("game.exe"), "{path}");
                assert_eq!(message, "the file is missing");
            }
            other => panic!("expected a launch error, got {other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn launch_runs_the_executable_in_the_game_folder_with_its_arguments() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\npwd > started.txt\necho \"$1\" >> started.txt\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let metadata = GameMetadata {
            executable: Some("run.sh".into()),
            args: vec!["+map e1m1".into()],
            ..GameMetadata::fallback("Quake")
        };
        launch(
            &snapshot_with(dir.path(), metadata),
            "game",
            &Arc::default(),
        )
        .unwrap();
        let marker = dir.path().join("started.txt");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&marker).unwrap_or_default();
            if text.lines().count() == 2 || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(text, format!("{}\n+map e1m1\n", cwd.display()));
    }

    #[test]
    fn delete_removes_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("game");
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("data/pak0.pak"), b"pak").unwrap();
        delete(
            &snapshot_with(&root, GameMetadata::fallback("Quake")),
            "game",
        )
        .unwrap();
        assert!(!root.exists());
    }

    #[cfg(unix)]
    #[test]
    fn delete_of_a_linked_game_removes_the_link_not_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("pak0.pak"), b"pak").unwrap();
        let link = dir.path().join("game");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        delete(
            &snapshot_with(&link, GameMetadata::fallback("Quake")),
            "game",
        )
        .unwrap();
        assert!(!link.exists());
        assert!(target.join("pak0.pak").exists());
    }
}
