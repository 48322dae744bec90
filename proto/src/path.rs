//! Validation of relative paths that travel over the network.
//!
//! A path in a manifest is a `/`-separated path relative to the game folder.
//! Before a receiver touches its disk with one, the path must be harmless on
//! every platform lanspread runs on: no way up (`..`), no way out (absolute or
//! drive prefixes), nothing Windows refuses to create.
//!
//! Names that differ only by case or by Unicode normalization are one name on
//! Windows (case-insensitive NTFS) and macOS (case-insensitive APFS, which
//! also folds NFC and NFD): [`collision_key`] says when two names would land
//! on one file there. Its folding is Unicode lowercase of the NFC form, a
//! close, simple stand-in for both file systems' tables (it may call a pair
//! colliding that one of them keeps apart, never the other way round for
//! the letters games use).

/// Longest relative path accepted, in bytes. Windows' classic limit is 260
/// UTF-16 units for the whole path; games folders add their own prefix, so
/// this leaves room while still refusing absurd input.
pub const MAX_PATH_LEN: usize = 1024;

/// Longest file or folder name, in bytes: ext4 and most unix file systems
/// stop at 255 bytes (NTFS at 255 UTF-16 units, never fewer characters).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Longest game id (a folder name), in bytes: it is also shown in lists
/// and sits in front of every path of the game on disk.
pub const MAX_GAME_ID_LEN: usize = 128;

/// Why a relative path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("absolute path")]
    Absolute,
    #[error("drive or device prefix")]
    DrivePrefix,
    #[error("contains a NUL or control character")]
    ControlChar,
    #[error("contains a backslash")]
    Backslash,
    #[error("empty, `.` or `..` component")]
    BadComponent,
    #[error("`{0}` is a reserved name on Windows")]
    ReservedName(String),
    #[error("`{0}` cannot be used in a file name on Windows")]
    IllegalChar(char),
    #[error("a component ends with a dot or a space, which Windows drops")]
    TrailingDotOrSpace,
    #[error("a name is longer than {MAX_COMPONENT_LEN} bytes")]
    NameTooLong,
    #[error("game id longer than {MAX_GAME_ID_LEN} bytes")]
    GameIdTooLong,
    #[error("`{0}` starts with a dot or holds a path separator")]
    NotPlainName(String),
}

/// Device names Windows resolves in every folder, with or without an
/// extension: the classic ones, the console and clock devices, and `COM`/
/// `LPT` followed by a digit, including `0` and the superscript digits
/// `¹²³`, which Windows treats as `1`, `2`, `3`.
const RESERVED: &[&str] = &["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"];

fn is_reserved_stem(stem: &str) -> bool {
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        return true;
    }
    let mut chars = stem.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: Vec<char> = chars.collect();
    (prefix.eq_ignore_ascii_case("COM") || prefix.eq_ignore_ascii_case("LPT"))
        && rest.len() == 1
        && (rest[0].is_ascii_digit() || matches!(rest[0], '¹' | '²' | '³'))
}

/// The key two names collide under on a case-insensitive or
/// normalization-insensitive file system (Windows, macOS): Unicode
/// lowercase of the NFC form. Equal keys, one file.
pub fn collision_key(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    // ASCII is its own NFC form and lowercases byte by byte: most names of
    // most games, and a manifest checks every path and every folder.
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    name.nfc().collect::<String>().to_lowercase()
}

/// Check a game id: one plain folder name of the games folder. Everything
/// [`validate_component`] refuses, and also a leading dot (hidden folders
/// are not games; the staging area is one), and more than
/// [`MAX_GAME_ID_LEN`] bytes.
pub fn validate_game_id(game_id: &str) -> Result<(), PathError> {
    if game_id.len() > MAX_GAME_ID_LEN {
        return Err(PathError::GameIdTooLong);
    }
    if game_id.starts_with('.') || game_id.contains('/') || game_id.contains('\\') {
        return Err(PathError::NotPlainName(game_id.to_owned()));
    }
    if game_id.len() >= 2 && game_id.as_bytes()[1] == b':' {
        return Err(PathError::DrivePrefix);
    }
    validate_component(game_id)
}

/// Check one relative, `/`-separated path. `Ok` means it names a file or
/// folder strictly inside its root on Windows, macOS and Linux alike.
pub fn validate_relative_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(PathError::ControlChar);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' {
        return Err(PathError::DrivePrefix);
    }
    for component in path.split('/') {
        validate_component(component)?;
    }
    Ok(())
}

/// Check one path component (a file or folder name).
pub fn validate_component(component: &str) -> Result<(), PathError> {
    if component.is_empty() || component == "." || component == ".." {
        return Err(PathError::BadComponent);
    }
    if component.len() > MAX_COMPONENT_LEN {
        return Err(PathError::NameTooLong);
    }
    if component.chars().any(|c| c.is_control()) {
        return Err(PathError::ControlChar);
    }
    if let Some(c) = component
        .chars()
        .find(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*' | '\\' | '/'))
    {
        return Err(PathError::IllegalChar(c));
    }
    if component.ends_with('.') || component.ends_with(' ') {
        return Err(PathError::TrailingDotOrSpace);
    }
    let stem = component.split('.').next().unwrap_or(component).trim_end();
    if is_reserved_stem(stem) {
        return Err(PathError::ReservedName(component.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: Result<(), PathError>) {
        assert_eq!(validate_relative_path(path), expected, "path {path:?}");
    }

    #[test]
    fn accepts_ordinary_paths() {
        for path in [
            "game.exe",
            "data/level 1/map.pak",
            "Ünïcødé/файл.txt",
            ".hidden/config",
            "a/b/c/d/e/f",
        ] {
            check(path, Ok(()));
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        check("", Err(PathError::Empty));
        check("/etc/passwd", Err(PathError::Absolute));
        check("../escape", Err(PathError::BadComponent));
        check("a/../../b", Err(PathError::BadComponent));
        check("a/./b", Err(PathError::BadComponent));
        check("a//b", Err(PathError::BadComponent));
        check("a/", Err(PathError::BadComponent));
        check("C:/Windows", Err(PathError::DrivePrefix));
        check("c:evil", Err(PathError::DrivePrefix));
        check("a\\..\\b", Err(PathError::Backslash));
        check("nul\0byte", Err(PathError::ControlChar));
        check("tab\there", Err(PathError::ControlChar));
        check("a/b:stream", Err(PathError::IllegalChar(':')));
        check("what?.txt", Err(PathError::IllegalChar('?')));
        check("dir/CON", Err(PathError::ReservedName("CON".into())));
        check("aux.txt", Err(PathError::ReservedName("aux.txt".into())));
        check(
            "Lpt9.tar.gz",
            Err(PathError::ReservedName("Lpt9.tar.gz".into())),
        );
        check("trailing.", Err(PathError::TrailingDotOrSpace));
        check("trailing /x", Err(PathError::TrailingDotOrSpace));
        check(&"a".repeat(MAX_PATH_LEN + 1), Err(PathError::TooLong));
    }

    #[test]
    fn reserved_names_only_match_whole_stems() {
        check("console.txt", Ok(()));
        check("auxiliary/nul2", Ok(()));
        check("COM10", Ok(()));
        check("COM¹0", Ok(()));
        check("CONIN", Ok(()));
    }

    /// Pins issue 13: names Windows cannot create were accepted.
    #[test]
    fn refuses_every_windows_device_name() {
        for name in [
            "CONIN$",
            "conout$.txt",
            "CLOCK$",
            "COM¹",
            "com².log",
            "LPT³",
            "COM0",
            "lpt0.x",
        ] {
            check(name, Err(PathError::ReservedName(name.into())));
            check(
                &format!("dir/{name}"),
                Err(PathError::ReservedName(name.into())),
            );
        }
        check(
            &"n".repeat(MAX_COMPONENT_LEN + 1),
            Err(PathError::NameTooLong),
        );
        check(&"n".repeat(MAX_COMPONENT_LEN), Ok(()));
    }

    /// Pins issue 13: a game id from the network became a path.
    #[test]
    fn a_game_id_is_one_plain_folder_name() {
        for ok in ["q3", "Half-Life 2", "Ünïcødé", "a.b"] {
            assert_eq!(validate_game_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "../escaped",
            "a/b",
            "a\\b",
            "/abs",
            "C:",
            "c:x",
            ".hidden",
            ".lanspread-staging",
            "COM¹",
            "CONIN$",
            "nul",
            "x.",
            "a:b",
        ] {
            assert!(validate_game_id(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            validate_game_id(&"g".repeat(MAX_GAME_ID_LEN + 1)),
            Err(PathError::GameIdTooLong)
        );
    }

    #[test]
    fn collision_keys_fold_case_and_normalization() {
        assert_eq!(collision_key("Save.DAT"), collision_key("save.dat"));
        // "é" precomposed (NFC) and as "e" + combining acute (NFD).
        assert_eq!(collision_key("caf\u{e9}"), collision_key("cafe\u{301}"));
        assert_ne!(collision_key("a"), collision_key("b"));
    }

    proptest::proptest! {
        /// Whatever the input, a path that passes cannot climb out or be absolute.
        #[test]
        fn accepted_paths_stay_inside(path in "[a-zA-Z0-9./\\\\:]{0,24}") {
            if validate_relative_path(&path).is_ok() {
                proptest::prop_assert!(!path.starts_with('/'));
                proptest::prop_assert!(path.split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
                proptest::prop_assert!(!path.contains(':') && !path.contains('\\'));
            }
        }

        /// The ASCII shortcut gives the key the full Unicode folding gives.
        #[test]
        fn ascii_keys_match_the_unicode_folding(name in "[ -~]{0,40}") {
            use unicode_normalization::UnicodeNormalization;
            let full = name.nfc().collect::<String>().to_lowercase();
            proptest::prop_assert_eq!(collision_key(&name), full);
        }
    }
}
