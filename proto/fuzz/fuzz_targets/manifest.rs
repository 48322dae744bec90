//! A manifest from the network: any postcard bytes decode to a manifest or
//! an error, never a panic; `validate` never panics; and what it accepts is
//! safe to use: every path passes the path check, the encoding round-trips
//! to the same version id, and the layout's pieces cover the files exactly.
#![no_main]

use lanspread_proto::path::validate_relative_path;
use lanspread_proto::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = postcard::from_bytes::<Manifest>(data) else {
        return;
    };
    if manifest.validate().is_err() {
        return;
    }
    for path in manifest
        .files
        .iter()
        .map(|f| &f.path)
        .chain(&manifest.empty_dirs)
    {
        assert!(validate_relative_path(path).is_ok(), "{path:?}");
    }
    let bytes = manifest.canonical_bytes();
    let again: Manifest = postcard::from_bytes(&bytes).expect("a valid manifest decodes");
    assert_eq!(again, manifest);
    assert_eq!(again.version_id(), manifest.version_id());

    let layout = manifest.layout();
    assert_eq!(layout.n_pieces(), manifest.pieces.len());
    assert_eq!(layout.total_size(), manifest.total_size());
    let mut covered = 0u64;
    for piece in 0..layout.n_pieces() {
        let spans = layout.piece_spans(piece);
        let len: u64 = spans.iter().map(|s| s.len).sum();
        assert_eq!(len, layout.piece_len(piece));
        for span in spans {
            let file = layout.file_range(span.file_idx);
            assert!(span.offset + span.len <= file.end - file.start);
        }
        covered += len;
    }
    assert_eq!(covered, manifest.total_size());
    for file in 0..manifest.files.len() {
        assert!(layout.pieces_of_file(file).end <= layout.n_pieces());
    }
});
