//! The peer's SQLite database: hash cache now; download state and known peers
//! share it. One file in the data dir, WAL mode, schema versioned through
//! `PRAGMA user_version` with forward-only migrations.

use std::path::Path;
use std::sync::Mutex;

use lanspread_proto::{Hash, Manifest};
use rusqlite::{params, Connection, OptionalExtension};

/// The database file's name inside the data dir.
pub const DB_FILE: &str = "lanspread.db";

/// Migrations, in order; `user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the hash cache. A game's last manifest, and the size and mtime each
    //    of its files had when hashed; a file whose stamp still matches need
    //    not be read again.
    "CREATE TABLE game_manifest (
        game TEXT PRIMARY KEY,
        version_id BLOB NOT NULL,
        manifest BLOB NOT NULL
    );
    CREATE TABLE file_stamp (
        game TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        PRIMARY KEY (game, path)
    );",
    // 2: peers added by address, dialled again at every start.
    "CREATE TABLE manual_peer (
        address TEXT PRIMARY KEY,
        peer_id TEXT
    );",
    // 3: downloads, and the pieces of each that verified and were written.
    //    A piece row is added as soon as its bytes are written, so a
    //    restart re-fetches at most what was in flight.
    "CREATE TABLE download (
        version_id BLOB PRIMARY KEY,
        game_id TEXT NOT NULL,
        manifest BLOB NOT NULL,
        state TEXT NOT NULL
    );
    CREATE TABLE download_piece (
        version_id BLOB NOT NULL,
        piece_idx INTEGER NOT NULL,
        PRIMARY KEY (version_id, piece_idx)
    ) WITHOUT ROWID;",
    // 4: the download queue, running and waiting, in order: a restart
    //    queues them again (running ones with a stored manifest resume).
    "CREATE TABLE queued_download (
        version_id BLOB NOT NULL UNIQUE,
        game_id TEXT NOT NULL,
        title TEXT NOT NULL
    );",
    // 5: what lanspread itself installed in each game folder: the version
    //    and its manifest. An update carries over every file of the folder
    //    this manifest does not list (saves, configs), even after the
    //    library indexed them into a new version of its own.
    "CREATE TABLE installed_game (
        game TEXT PRIMARY KEY,
        version_id BLOB NOT NULL,
        manifest BLOB NOT NULL
    );",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {error}")]
    Open {
        path: String,
        error: rusqlite::Error,
    },
    #[error("database schema version {found} is newer than this lanspread understands ({known}); upgrade lanspread")]
    TooNew { found: usize, known: usize },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// What the cache remembers about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    /// Nanoseconds since the Unix epoch; [`FileStamp::UNTRUSTED`] when the file
    /// was modified too recently to trust its mtime.
    pub mtime_ns: i64,
}

impl FileStamp {
    /// Matches no real mtime: the file is hashed again next time.
    pub const UNTRUSTED: i64 = i64::MIN;
}

/// A game's cached manifest and the stamps its files had.
#[derive(Debug, Clone)]
pub struct CachedGame {
    pub manifest: Manifest,
    pub stamps: std::collections::HashMap<String, FileStamp>,
}

pub struct Store {
    // A std Mutex: callers run on blocking threads and never await under it.
    conn: Mutex<Connection>,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|error| StoreError::Open {
            path: path.display().to_string(),
            error,
        })?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL is durable against process crashes, which is what
        // resume needs; an OS crash may lose the last commits, never corrupt.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn schema_version(&self) -> Result<usize, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize)
    }

    pub fn cached_game(&self, game: &str) -> Result<Option<CachedGame>, StoreError> {
        let conn = self.conn();
        let manifest: Option<Vec<u8>> = conn
            .query_row(
                "SELECT manifest FROM game_manifest WHERE game = ?1",
                [game],
                |r| r.get(0),
            )
            .optional()?;
        let Some(bytes) = manifest else {
            return Ok(None);
        };
        let Ok(manifest) = postcard::from_bytes::<Manifest>(&bytes) else {
            // An unreadable cache entry is just a cache miss.
            return Ok(None);
        };
        let mut stmt =
            conn.prepare_cached("SELECT path, size, mtime_ns FROM file_stamp WHERE game = ?1")?;
        let stamps = stmt
            .query_map([game], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    FileStamp {
                        size: r.get::<_, i64>(1)? as u64,
                        mtime_ns: r.get(2)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(CachedGame { manifest, stamps }))
    }

    /// Replace the game's cache entry in one transaction.
    pub fn save_game(
        &self,
        game: &str,
        manifest: &Manifest,
        version_id: &Hash,
        stamps: &[(String, FileStamp)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO game_manifest (game, version_id, manifest) VALUES (?1, ?2, ?3)",
            params![game, &version_id.0[..], manifest.canonical_bytes()],
        )?;
        tx.execute("DELETE FROM file_stamp WHERE game = ?1", [game])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO file_stamp (game, path, size, mtime_ns) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (path, stamp) in stamps {
                insert.execute(params![game, path, stamp.size as i64, stamp.mtime_ns])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Remember a peer added by address (`peer_id` when typed too).
    pub fn add_manual_peer(&self, address: &str, peer_id: Option<&str>) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO manual_peer (address, peer_id) VALUES (?1, ?2)",
            params![address, peer_id],
        )?;
        Ok(())
    }

    pub fn manual_peers(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT address, peer_id FROM manual_peer ORDER BY address")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Record (or update) a download and its state.
    pub fn save_download(
        &self,
        version_id: &Hash,
        game_id: &str,
        manifest: &Manifest,
        state: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO download (version_id, game_id, manifest, state) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (version_id) DO UPDATE SET state = excluded.state",
            params![
                &version_id.0[..],
                game_id,
                manifest.canonical_bytes(),
                state
            ],
        )?;
        Ok(())
    }

    pub fn set_download_state(&self, version_id: &Hash, state: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE download SET state = ?2 WHERE version_id = ?1",
            params![&version_id.0[..], state],
        )?;
        Ok(())
    }

    /// Downloads in the given states: (version id, game id, manifest).
    pub fn downloads_in(
        &self,
        states: &[&str],
    ) -> Result<Vec<(Hash, String, Manifest)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT version_id, game_id, manifest, state FROM download")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter(|(_, _, _, state)| states.contains(&state.as_str()))
            .filter_map(|(vid, game, manifest, _)| {
                let vid = Hash(vid.try_into().ok()?);
                let manifest = postcard::from_bytes::<Manifest>(&manifest).ok()?;
                (manifest.version_id() == vid).then_some((vid, game, manifest))
            })
            .collect())
    }

    /// Replace the remembered queue with `queued` (version id, game id,
    /// title), in order: every download waiting or running, so a restart
    /// queues them again.
    pub fn replace_queued(&self, queued: &[(Hash, String, String)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM queued_download", [])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO queued_download (version_id, game_id, title) VALUES (?1, ?2, ?3)",
            )?;
            for (version_id, game_id, title) in queued {
                insert.execute(params![&version_id.0[..], game_id, title])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Queued downloads, in the order they were queued: (version id, game
    /// id, title).
    pub fn queued_downloads(&self) -> Result<Vec<(Hash, String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT version_id, game_id, title FROM queued_download ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(vid, game, title)| Some((Hash(vid.try_into().ok()?), game, title)))
            .collect())
    }

    pub fn add_piece(&self, version_id: &Hash, piece_idx: usize) -> Result<(), StoreError> {
        self.add_pieces(version_id, &[piece_idx])
    }

    /// Record many pieces in one transaction (one commit, not one each).
    pub fn add_pieces(&self, version_id: &Hash, pieces: &[usize]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO download_piece (version_id, piece_idx) VALUES (?1, ?2)",
            )?;
            for &piece in pieces {
                insert.execute(params![&version_id.0[..], piece as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn pieces(&self, version_id: &Hash) -> Result<Vec<usize>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT piece_idx FROM download_piece WHERE version_id = ?1 ORDER BY piece_idx",
        )?;
        let rows = stmt
            .query_map([&version_id.0[..]], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().map(|p| p as usize).collect())
    }

    /// Forget a download and its pieces.
    pub fn forget_download(&self, version_id: &Hash) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM download WHERE version_id = ?1",
            [&version_id.0[..]],
        )?;
        tx.execute(
            "DELETE FROM download_piece WHERE version_id = ?1",
            [&version_id.0[..]],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn forget_game(&self, game: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM game_manifest WHERE game = ?1", [game])?;
        tx.execute("DELETE FROM file_stamp WHERE game = ?1", [game])?;
        tx.execute("DELETE FROM installed_game WHERE game = ?1", [game])?;
        tx.commit()?;
        Ok(())
    }

    /// Remember that lanspread installed `version_id` (with `manifest`) in
    /// the folder of `game`.
    pub fn save_installed(
        &self,
        game: &str,
        version_id: &Hash,
        manifest: &Manifest,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO installed_game (game, version_id, manifest) VALUES (?1, ?2, ?3)",
            params![game, &version_id.0[..], manifest.canonical_bytes()],
        )?;
        Ok(())
    }

    /// The manifest lanspread installed in the folder of `game`, if any.
    pub fn installed(&self, game: &str) -> Result<Option<Manifest>, StoreError> {
        let bytes: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT manifest FROM installed_game WHERE game = ?1",
                [game],
                |r| r.get(0),
            )
            .optional()?;
        Ok(bytes.and_then(|b| postcard::from_bytes(&b).ok()))
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanspread_proto::FileEntry;

    #[test]
    fn migrates_and_round_trips_a_game() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
        let manifest = Manifest {
            piece_size: 1 << 20,
            files: vec![FileEntry {
                path: "a".into(),
                size: 3,
                executable: true,
            }],
            empty_dirs: vec![],
            pieces: vec![Hash([1; 32])],
        };
        let stamp = FileStamp {
            size: 3,
            mtime_ns: 42,
        };
        store
            .save_game(
                "g",
                &manifest,
                &manifest.version_id(),
                &[("a".into(), stamp)],
            )
            .unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let cached = store.cached_game("g").unwrap().unwrap();
        assert_eq!(cached.manifest, manifest);
        assert_eq!(cached.stamps["a"], stamp);
        store.forget_game("g").unwrap();
        assert!(store.cached_game("g").unwrap().is_none());
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
