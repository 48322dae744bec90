//! Validation of relative paths that travel over the network.
//!
//! A path in a manifest is a `/`-separated path relative to the game folder.
//! Before a receiver touches its disk with one, the path must be harmless on
//! every platform lanspread runs on: no way up (`..`), no way out (absolute or
//! drive prefixes), nothing Windows refuses to create.

/// Longest relative path accepted, in bytes. Windows' classic limit is 260
/// UTF-16 units for the whole path; games folders add their own prefix, so
/// this leaves room while still refusing absurd input.
pub const MAX_PATH_LEN: usize = 1024;

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
}

const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

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
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
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
    }
}
