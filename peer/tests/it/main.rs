//! The integration tests of `lanspread-peer`: real peers on 127.0.0.1 (real
//! QUIC, SQLite and files in temp dirs) and the real `lanspread-peer` binary.
//! One test binary, so the helpers in `support` are compiled once and shared.

mod support;

mod cli;
mod download;
mod hostile;
mod library_monitor;
mod mdns_netns;
mod party;
mod peers;
// Built on the download tests' helpers, which are unix-only.
#[cfg(unix)]
mod regressions;
mod transport;
