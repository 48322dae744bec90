//! The settings a player changes, persisted as TOML in the data folder. The
//! desktop app reads them at start and writes them when the player saves;
//! the runtime only ever sees the [`PeerConfig`] they are applied to.

use std::path::{Path, PathBuf};

use lanspread_proto::wire::{truncate_display_name, MAX_DISPLAY_NAME_BYTES};
use serde::{Deserialize, Serialize};

use crate::config::{default_display_name, PeerConfig, DEFAULT_PARALLEL_DOWNLOADS};

/// The settings file's name, in the data folder.
pub const SETTINGS_FILE: &str = "settings.toml";

/// Most downloads that may run at once: beyond this they only compete for
/// the same disk and sources.
pub const MAX_PARALLEL_DOWNLOADS: u32 = 8;

/// What the player chose. Absent keys take their defaults, so a file
/// written by an older version still loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Settings {
    /// The folder games are shared from and installed into. `None` until the
    /// player picked one: the app asks on first run.
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub games_dir: Option<PathBuf>,
    /// The name other peers show; empty: the computer's name.
    // At most MAX_DISPLAY_NAME_BYTES once trimmed (a plain comment: doc
    // comments go into the generated TypeScript bindings).
    pub display_name: String,
    /// Upload limit in bytes per second; 0: none.
    pub upload_limit: u64,
    /// Only peers with the same key connect; empty: any peer.
    pub party_key: String,
    pub parallel_downloads: u32,
    /// This peer publishes the party's lineup and calls ready checks; under
    /// a party key only an organizer may.
    pub organizer: bool,
    /// Queue the games of the lineup by themselves as they are added.
    pub keep_ready: bool,
    /// Seeding while a game started from lanspread runs, in percent of the
    /// upload limit (of 100 MB/s when there is none).
    pub game_mode_upload_percent: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            games_dir: None,
            display_name: String::new(),
            upload_limit: 0,
            party_key: String::new(),
            parallel_downloads: DEFAULT_PARALLEL_DOWNLOADS as u32,
            organizer: false,
            keep_ready: false,
            game_mode_upload_percent: crate::party::DEFAULT_GAME_MODE_UPLOAD_PERCENT,
        }
    }
}

/// Why settings could not be read, saved or accepted.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not valid: {message}; fix or delete it")]
    Parse { path: PathBuf, message: String },
    #[error("cannot save {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// The settings in `data_dir`; `Ok(None)` when there are none yet (first run).
    pub fn load(data_dir: &Path) -> Result<Option<Self>, SettingsError> {
        let path = data_dir.join(SETTINGS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(SettingsError::Read { path, error }),
        };
        // The party key is in it: readable by its owner only, even if made
        // wider since.
        if let Err(error) = crate::fsx::restrict_to_owner(&path) {
            return Err(SettingsError::Read { path, error });
        }
        let mut settings: Settings = toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: path.clone(),
            message: e.message().to_owned(),
        })?;
        // Older versions counted 40 characters, which may be more bytes than
        // fit: such a saved name is cut, not refused, so the app still starts.
        let name = settings.display_name.trim();
        if name.len() > MAX_DISPLAY_NAME_BYTES {
            settings.display_name = truncate_display_name(name).to_owned();
        }
        settings.validate().map_err(|e| SettingsError::Parse {
            path,
            message: e.to_string(),
        })?;
        Ok(Some(settings))
    }

    /// Check the values, then write them atomically: a crash mid-save leaves
    /// the old file, never half of the new one.
    pub fn save(&self, data_dir: &Path) -> Result<(), SettingsError> {
        self.validate()?;
        let path = data_dir.join(SETTINGS_FILE);
        let write_error = |error| SettingsError::Write {
            path: path.clone(),
            error,
        };
        std::fs::create_dir_all(data_dir).map_err(write_error)?;
        let text = toml::to_string_pretty(self).expect("settings serialize to TOML");
        let temp = data_dir.join(format!(".{SETTINGS_FILE}.tmp"));
        crate::fsx::owner_only_options()
            .create(true)
            .truncate(true)
            .open(&temp)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
            .map_err(write_error)?;
        // A temp file left by an older version may be wider.
        crate::fsx::restrict_to_owner(&temp).map_err(write_error)?;
        std::fs::rename(&temp, &path).map_err(write_error)
    }

    /// Values the app can run with; the message says what to change.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(dir) = &self.games_dir {
            if !dir.is_absolute() {
                return Err(SettingsError::Invalid(format!(
                    "the games folder must be a full path, not {}",
                    dir.display()
                )));
            }
        }
        // In bytes, as the wire counts: a name accepted here is never one
        // other peers refuse.
        let name_bytes = self.display_name.trim().len();
        if name_bytes > MAX_DISPLAY_NAME_BYTES {
            return Err(SettingsError::Invalid(format!(
                "the display name is too long: it takes {name_bytes} bytes and at most \
                 {MAX_DISPLAY_NAME_BYTES} fit (a letter outside A-Z takes 2 to 4); shorten it"
            )));
        }
        if !(1..=MAX_PARALLEL_DOWNLOADS).contains(&self.parallel_downloads) {
            return Err(SettingsError::Invalid(format!(
                "parallel downloads must be between 1 and {MAX_PARALLEL_DOWNLOADS}"
            )));
        }
        if !(1..=100).contains(&self.game_mode_upload_percent) {
            return Err(SettingsError::Invalid(
                "seeding while playing must be between 1 and 100 % of the upload limit".into(),
            ));
        }
        Ok(())
    }

    /// Whether the runtime must restart to take `other`: the upload limit,
    /// "keep me ready" and seeding while playing change on a running peer.
    pub fn needs_restart(&self, other: &Settings) -> bool {
        Settings {
            upload_limit: other.upload_limit,
            keep_ready: other.keep_ready,
            game_mode_upload_percent: other.game_mode_upload_percent,
            ..self.clone()
        } != *other
    }

    /// Put the settings into `config`, whose games folder is the default
    /// one. A chosen games folder that is gone (an unplugged drive, say) is
    /// neither used nor recreated: `config` keeps the default, and the
    /// answer says what happened, for the player to pick the folder again.
    #[must_use]
    pub fn apply(&self, config: &mut PeerConfig) -> Option<String> {
        let mut problem = None;
        match &self.games_dir {
            Some(dir) if dir.is_dir() => config.games_dir = dir.clone(),
            Some(dir) => {
                problem = Some(format!(
                    "the games folder {} is missing; pick it again or choose another",
                    dir.display()
                ))
            }
            None => {}
        }
        let name = self.display_name.trim();
        config.display_name = if name.is_empty() {
            default_display_name()
        } else {
            name.to_owned()
        };
        config.upload_limit = self.upload_limit;
        let key = self.party_key.trim();
        config.party_key = (!key.is_empty()).then(|| key.to_owned());
        config.parallel_downloads = self.parallel_downloads as usize;
        config.organizer = self.organizer;
        config.keep_ready = self.keep_ready;
        config.game_mode_upload_percent = self.game_mode_upload_percent;
        problem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen() -> Settings {
        Settings {
            games_dir: Some(std::env::temp_dir().join("games")),
            display_name: "Alice".into(),
            upload_limit: 50 << 20,
            party_key: "lan-2026".into(),
            parallel_downloads: 3,
            organizer: true,
            keep_ready: true,
            game_mode_upload_percent: 25,
        }
    }

    #[test]
    fn no_file_is_a_first_run() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn saved_settings_load_back() {
        let dir = tempfile::tempdir().unwrap();
        chosen().save(dir.path()).unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), Some(chosen()));
        assert!(!dir.path().join(format!(".{SETTINGS_FILE}.tmp")).exists());
    }

    /// Issue 13: the settings hold the party key; readable by their owner
    /// only, created so and made so again if found wider.
    #[cfg(unix)]
    #[test]
    fn settings_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SETTINGS_FILE);
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        chosen().save(dir.path()).unwrap();
        assert_eq!(mode(), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Settings::load(dir.path()).unwrap();
        assert_eq!(mode(), 0o600);
    }

    #[test]
    fn missing_keys_take_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), "displayName = \"Bob\"\n").unwrap();
        let settings = Settings::load(dir.path()).unwrap().unwrap();
        assert_eq!(settings.display_name, "Bob");
        assert_eq!(settings.parallel_downloads, 2);
        assert_eq!(settings.games_dir, None);
    }

    #[test]
    fn a_broken_file_names_itself_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), "parallelDownloads = 0\n").unwrap();
        let err = Settings::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(SETTINGS_FILE), "{err}");
        assert!(err.contains("between 1 and 8"), "{err}");
    }

    #[test]
    fn invalid_values_are_not_saved() {
        let dir = tempfile::tempdir().unwrap();
        let relative = Settings {
            games_dir: Some("games".into()),
            ..chosen()
        };
        assert!(relative.save(dir.path()).is_err());
        let long_name = Settings {
            display_name: "x".repeat(MAX_DISPLAY_NAME_BYTES + 1),
            ..chosen()
        };
        assert!(long_name.save(dir.path()).is_err());
        assert_eq!(Settings::load(dir.path()).unwrap(), None);
    }

    /// Bug: settings counted at most 40 characters while the wire takes at
    /// most 64 bytes, so 40 Cyrillic letters (80 bytes) were saved and then
    /// made this peer invisible; and 64 Latin letters, which the wire takes,
    /// were refused. The limit is now the wire's, in bytes.
    #[test]
    fn the_display_name_limit_is_the_wires_in_bytes() {
        let named = |display_name: String| Settings {
            display_name,
            ..chosen()
        };
        let err = named("Ж".repeat(40)).validate().unwrap_err().to_string();
        assert!(err.contains("80 bytes"), "{err}");
        assert!(err.contains(&MAX_DISPLAY_NAME_BYTES.to_string()), "{err}");
        named("Ж".repeat(MAX_DISPLAY_NAME_BYTES / 2))
            .validate()
            .unwrap();
        named("x".repeat(MAX_DISPLAY_NAME_BYTES))
            .validate()
            .unwrap();
        // Spaces around the name are trimmed before use, so not counted.
        named(format!("  {}  ", "x".repeat(MAX_DISPLAY_NAME_BYTES)))
            .validate()
            .unwrap();

        // A file an older version saved with such a name still loads, cut.
        let dir = tempfile::tempdir().unwrap();
        let old = format!("displayName = \"{}\"\n", "Ж".repeat(40));
        std::fs::write(dir.path().join(SETTINGS_FILE), old).unwrap();
        let loaded = Settings::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.display_name, "Ж".repeat(MAX_DISPLAY_NAME_BYTES / 2));
    }

    #[test]
    fn only_the_upload_limit_applies_without_a_restart() {
        let now = chosen();
        let faster = Settings {
            upload_limit: 0,
            ..chosen()
        };
        let renamed = Settings {
            display_name: "Carol".into(),
            ..chosen()
        };
        assert!(!now.needs_restart(&faster));
        assert!(now.needs_restart(&renamed));
    }

    #[test]
    fn apply_fills_the_config() {
        let games = tempfile::tempdir().unwrap();
        let chosen = Settings {
            games_dir: Some(games.path().to_owned()),
            ..chosen()
        };
        let mut config = PeerConfig::new("/default", "/data");
        assert_eq!(chosen.apply(&mut config), None);
        assert_eq!(config.games_dir, games.path());
        assert_eq!(config.display_name, "Alice");
        assert_eq!(config.upload_limit, 50 << 20);
        assert_eq!(config.party_key.as_deref(), Some("lan-2026"));
        assert_eq!(config.parallel_downloads, 3);

        assert_eq!(Settings::default().apply(&mut config), None);
        assert_eq!(config.party_key, None);
        assert_eq!(config.display_name, default_display_name());
        assert_eq!(config.games_dir, games.path(), "unchanged without a choice");
    }

    #[test]
    fn a_games_folder_that_is_gone_is_not_used_and_says_so() {
        let gone = std::env::temp_dir().join("lanspread-unplugged-drive/games");
        let settings = Settings {
            games_dir: Some(gone.clone()),
            ..chosen()
        };
        let mut config = PeerConfig::new("/default", "/data");
        let problem = settings.apply(&mut config).expect("a problem");
        assert!(problem.contains("is missing"), "{problem}");
        assert_eq!(config.games_dir, std::path::Path::new("/default"));
        assert!(!gone.exists(), "not recreated");
    }
}
