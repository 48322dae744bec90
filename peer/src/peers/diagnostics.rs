//! The "why can't I see peers" report.

use std::net::SocketAddr;

use super::discovery::interface_used;
use super::PeerDirectory;
use crate::events::{AddressReport, Diagnostics, InterfaceReport, ServiceHealth};

pub fn report(
    directory: &PeerDirectory,
    bound_addr: SocketAddr,
    mdns_enabled: bool,
    discovery: Option<ServiceHealth>,
    allowed_interfaces: &[String],
) -> Diagnostics {
    let interfaces: Vec<InterfaceReport> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| InterfaceReport {
            used_for_discovery: mdns_enabled
                && (i.is_loopback() || interface_used(&i.name, allowed_interfaces)),
            addr: i.ip().to_string(),
            name: i.name,
        })
        .collect();
    let peers = directory.peers();
    let addresses: Vec<AddressReport> = directory
        .lock()
        .candidates
        .iter()
        .filter(|(_, c)| !c.is_self)
        .map(|(addr, c)| AddressReport {
            addr: *addr,
            expected_peer_id: c.expected.clone(),
            source: c.source,
            last_error: c.last_error.clone(),
        })
        .collect();
    let mut hints = Vec::new();
    let connected = peers
        .iter()
        .filter(|p| p.state == crate::events::PeerState::Connected)
        .count();
    if connected == 0 {
        hints.push(format!(
            "No peer connected. Other peers must reach UDP port {} on this machine: allow lanspread \
             through the firewall (on Windows: Windows Defender Firewall, private networks).",
            bound_addr.port()
        ));
        if mdns_enabled {
            hints.push(
                "Nobody found by mDNS: the network may block multicast (guest Wi-Fi, managed \
                 switches). Add a peer by address (host:port); peer exchange finds the rest."
                    .into(),
            );
        } else {
            hints.push("mDNS is off: add peers by address (host:port).".into());
        }
    }
    if interfaces
        .iter()
        .all(|i| !i.used_for_discovery || i.addr.starts_with("127."))
        && mdns_enabled
    {
        hints.push("No LAN interface is used for discovery: is this machine on a network?".into());
    }
    if addresses.iter().any(|a| {
        a.last_error
            .as_deref()
            .is_some_and(|e| e.contains("not the expected"))
    }) {
        hints.push("An address answered with another peer id than expected: another machine may have that address now.".into());
    }
    Diagnostics {
        peer_id: directory.our_id().clone(),
        bound_addr,
        mdns_enabled,
        discovery,
        interfaces,
        peers,
        addresses,
        hints,
    }
}
