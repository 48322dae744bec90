//! A relative path from the network: the check never panics, and a path it
//! accepts stays inside its root on every platform: relative, no `.` or
//! `..`, no backslash or drive, no control character, within the length
//! limit, and every component passes the component check.
#![no_main]

use lanspread_proto::path::{validate_component, validate_relative_path, MAX_PATH_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if validate_relative_path(path).is_err() {
        return;
    }
    assert!(!path.is_empty() && path.len() <= MAX_PATH_LEN);
    assert!(!path.starts_with('/') && !path.contains('\\'));
    assert!(!path.chars().any(char::is_control));
    assert!(path.as_bytes().get(1) != Some(&b':'), "{path:?}");
    for component in path.split('/') {
        assert!(!component.is_empty() && component != "." && component != "..");
        assert!(validate_component(component).is_ok(), "{component:?}");
    }
});
