//! Wire types of the lanspread protocol.
//!
//! This crate is pure data: it defines what travels between peers and how it
//! is framed, and checks what arrives. It never opens a socket, never starts
//! an async runtime and never reads the clock, so everything in it is
//! testable with plain `#[test]`s.

pub mod have;
pub mod manifest;
pub mod path;
pub mod peer_id;
pub mod wire;

pub use have::PieceSet;
pub use manifest::{FileEntry, FileSpan, Hash, Layout, Manifest, ManifestError, VersionId};
pub use peer_id::PeerId;
pub use wire::{DecodeError, ErrorCode, GameSummary, Hello, PeerRecord, Request, Response};

/// Version of the peer-to-peer protocol. Peers only talk to peers with the same
/// version; the version travels in the QUIC ALPN (see [`alpn`]).
pub const PROTOCOL_VERSION: u16 = 5;

/// The ALPN identifier for [`PROTOCOL_VERSION`]: `lanspread/<version>`.
pub fn alpn() -> Vec<u8> {
    format!("lanspread/{PROTOCOL_VERSION}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_names_the_protocol_version() {
        assert_eq!(alpn(), format!("lanspread/{PROTOCOL_VERSION}").as_bytes());
    }
}
