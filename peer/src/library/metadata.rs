//! The optional `lanspread.toml` in a game folder, and thumbnails.

use serde::{Deserialize, Serialize};

use lanspread_proto::path::validate_relative_path;
use lanspread_proto::Hash;

/// The metadata file's name, at the top of a game folder.
pub const METADATA_FILE: &str = "lanspread.toml";

/// Largest thumbnail served. A cover picture at launcher size is well under
/// this; anything larger is refused rather than sent to every peer.
pub const MAX_THUMBNAIL_BYTES: u64 = 2 << 20;

/// Thumbnail files looked for when the metadata names none.
const THUMBNAIL_FALLBACKS: &[&str] = &[
    "cover.png",
    "cover.jpg",
    "cover.jpeg",
    "cover.webp",
    "thumbnail.png",
    "thumbnail.jpg",
    "thumbnail.webp",
];

/// What the catalog shows about a game. Every field is optional in the file;
/// `title` falls back to the folder name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[serde(default)]
pub struct GameMetadata {
    pub title: String,
    pub description: Option<String>,
    pub genre: Option<String>,
    #[serde(alias = "min_players")]
    pub min_players: Option<u32>,
    #[serde(alias = "max_players")]
    pub max_players: Option<u32>,
    /// A human version label, e.g. "1.4.2"; compared to find updates.
    pub version: Option<String>,
    /// Relative path of a png/jpg/webp picture inside the game folder.
    pub thumbnail: Option<String>,
    /// Relative path of the program Play starts.
    pub executable: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
}

impl GameMetadata {
    /// Parse a metadata file; `Err` is a message fit for the user.
    pub fn parse(text: &str, folder_name: &str) -> Result<Self, String> {
        let mut metadata: GameMetadata =
            toml::from_str(text).map_err(|e| format!("{METADATA_FILE}: {}", e.message()))?;
        if metadata.title.trim().is_empty() {
            metadata.title = folder_name.to_owned();
        }
        for (field, value) in [
            ("thumbnail", &metadata.thumbnail),
            ("executable", &metadata.executable),
        ] {
            if let Some(path) = value {
                validate_relative_path(path)
                    .map_err(|e| format!("{METADATA_FILE}: `{field}` = {path:?}: {e}"))?;
            }
        }
        if let (Some(min), Some(max)) = (metadata.min_players, metadata.max_players) {
            if min > max {
                return Err(format!(
                    "{METADATA_FILE}: min_players ({min}) is more than max_players ({max})"
                ));
            }
        }
        Ok(metadata)
    }

    /// Cut the title, description, genre and version label to the limits
    /// every receiver applies (`lanspread_proto::wire::MAX_*_BYTES`), so
    /// the game is listed as its host sees it; what was cut, in words.
    pub fn cut_to_limits(&mut self) -> Vec<String> {
        use lanspread_proto::wire::{
            cut_at_char_boundary, MAX_DESCRIPTION_BYTES, MAX_LABEL_BYTES, MAX_TITLE_BYTES,
        };
        let mut notes = Vec::new();
        let mut cut = |name: &str, field: &mut String, max: usize| {
            let len = cut_at_char_boundary(field, max).len();
            if len < field.len() {
                notes.push(format!(
                    "{name} is {} bytes, more than {max}: cut",
                    field.len()
                ));
                field.truncate(len);
            }
        };
        cut("title", &mut self.title, MAX_TITLE_BYTES);
        for (name, field, max) in [
            ("description", &mut self.description, MAX_DESCRIPTION_BYTES),
            ("genre", &mut self.genre, MAX_LABEL_BYTES),
            ("version", &mut self.version, MAX_LABEL_BYTES),
        ] {
            if let Some(field) = field {
                cut(name, field, max);
            }
        }
        notes
    }

    pub fn fallback(folder_name: &str) -> Self {
        Self {
            title: folder_name.to_owned(),
            ..Self::default()
        }
    }

    /// Where to look for the thumbnail, in order.
    pub fn thumbnail_candidates(&self) -> Vec<&str> {
        match &self.thumbnail {
            Some(path) => vec![path.as_str()],
            None => THUMBNAIL_FALLBACKS.to_vec(),
        }
    }
}

/// A game's picture, addressed by the hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub hash: Hash,
    pub mime: &'static str,
    pub bytes: std::sync::Arc<Vec<u8>>,
}

/// Recognise png, jpeg and webp by their magic bytes.
pub fn image_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_metadata() {
        let m = GameMetadata::parse(
            r#"
            title = "Quake III Arena"
            description = "Fast."
            genre = "Shooter"
            min_players = 2
            max_players = 16
            version = "1.32"
            thumbnail = "art/cover.png"
            executable = "bin/quake3.exe"
            args = ["+set", "fs_game", "baseq3"]
            "#,
            "q3",
        )
        .unwrap();
        assert_eq!(m.title, "Quake III Arena");
        assert_eq!(m.max_players, Some(16));
        assert_eq!(m.args.len(), 3);
    }

    #[test]
    fn falls_back_to_the_folder_name() {
        assert_eq!(GameMetadata::parse("", "openttd").unwrap().title, "openttd");
    }

    #[test]
    fn bad_files_give_clear_messages() {
        let err = GameMetadata::parse("title = ", "g").unwrap_err();
        assert!(err.starts_with("lanspread.toml:"), "{err}");
        let err = GameMetadata::parse("colour = \"red\"", "g").unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let err = GameMetadata::parse("executable = \"../../bin/sh\"", "g").unwrap_err();
        assert!(err.contains("executable"), "{err}");
        let err = GameMetadata::parse("min_players = 8\nmax_players = 2", "g").unwrap_err();
        assert!(err.contains("min_players"), "{err}");
    }

    #[test]
    fn recognises_images() {
        assert_eq!(image_mime(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(image_mime(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(image_mime(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(image_mime(b"GIF89a"), None);
    }
}
