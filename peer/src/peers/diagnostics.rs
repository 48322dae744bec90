//! The "why can't I see peers" report.

pub mod firewall;

use std::net::SocketAddr;

use super::discovery::skip_reason;
use super::PeerDirectory;
use crate::events::{
    AddressReport, Diagnostics, FirewallReport, InterfaceReport, ServiceHealth, UdpBuffers,
};

/// Below this receive buffer (as the OS reports it) QUIC drops packets at
/// LAN speed; the Windows default (64 KiB) and Linux's (~208 KiB) both are.
pub const SMALL_UDP_BUFFER: u64 = 1 << 20;

/// What the report is made of, besides the peer directory.
pub struct Facts<'a> {
    pub bound_addr: SocketAddr,
    pub mdns_enabled: bool,
    pub discovery: Option<ServiceHealth>,
    pub allowed_interfaces: &'a [String],
    pub udp_buffers: UdpBuffers,
    pub firewall: Option<FirewallReport>,
}

pub fn report(directory: &PeerDirectory, facts: Facts<'_>) -> Diagnostics {
    let Facts {
        bound_addr,
        mdns_enabled,
        discovery,
        allowed_interfaces,
        udp_buffers,
        firewall,
    } = facts;
    let interfaces: Vec<InterfaceReport> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let skipped_because = if !mdns_enabled {
                Some("mDNS is off".to_owned())
            } else if i.is_loopback() {
                None
            } else {
                skip_reason(&i.name, allowed_interfaces)
            };
            InterfaceReport {
                used_for_discovery: skipped_because.is_none(),
                skipped_because,
                addr: i.ip().to_string(),
                name: i.name,
            }
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
    let mut virtual_skipped: Vec<&str> = interfaces
        .iter()
        .filter(|i| {
            i.skipped_because
                .as_deref()
                .is_some_and(|r| r.starts_with("virtual"))
        })
        .map(|i| i.name.as_str())
        .collect();
    virtual_skipped.dedup();
    if !virtual_skipped.is_empty() {
        hints.push(format!(
            "mDNS skips virtual adapters ({}): peers are looked for on the real network \
             only. To reach a peer through one of them, add it by address (host:port).",
            virtual_skipped.join(", ")
        ));
    }
    hints.extend(buffer_hint(udp_buffers));
    if let Some(firewall) = &firewall {
        hints.extend(firewall::hints(firewall, bound_addr.port()));
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
        udp_buffers,
        firewall,
        hints,
    }
}

/// The last Windows firewall check, refreshed in the background: the check
/// runs PowerShell (a second or two), which no front end should wait for.
#[derive(Debug)]
pub struct FirewallCheck {
    /// A `std` mutex: held only to copy the report in or out, no `.await`.
    last: std::sync::Mutex<Option<FirewallReport>>,
    running: std::sync::atomic::AtomicBool,
    /// The peer's tokio runtime: front ends ask for diagnostics from
    /// threads of their own.
    runtime: tokio::runtime::Handle,
}

impl FirewallCheck {
    /// Must be called inside the peer's tokio runtime.
    pub fn in_current_runtime() -> Self {
        Self {
            last: std::sync::Mutex::new(None),
            running: std::sync::atomic::AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The last finished check (always `None` off Windows).
    pub fn last(&self) -> Option<FirewallReport> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Start a check of UDP `port` on the runtime's blocking pool unless one
    /// is running; it stops early when `token` is cancelled. Nothing to do
    /// off Windows.
    #[cfg(windows)]
    pub fn refresh(
        self: &std::sync::Arc<Self>,
        tasks: &crate::tasks::RuntimeTasks,
        token: tokio_util::sync::CancellationToken,
        port: u16,
    ) {
        use std::sync::atomic::Ordering;
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let check = self.clone();
        let _inside = self.runtime.enter();
        tasks.spawn_blocking("firewall check", move || {
            let report = firewall::query(port, std::time::Duration::from_secs(20), || {
                token.is_cancelled()
            });
            *check.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
            check.running.store(false, Ordering::Release);
        });
    }

    #[cfg(not(windows))]
    pub fn refresh(
        self: &std::sync::Arc<Self>,
        _tasks: &crate::tasks::RuntimeTasks,
        _token: tokio_util::sync::CancellationToken,
        _port: u16,
    ) {
        let _ = (&self.running, &self.runtime);
    }
}

/// A hint when the OS granted a receive buffer too small for LAN speed.
pub fn buffer_hint(buffers: UdpBuffers) -> Option<String> {
    (buffers.recv < SMALL_UDP_BUFFER).then(|| {
        format!(
            "The system granted a UDP receive buffer of {} KiB (asked {} KiB): downloads may \
             lose packets and slow down. On Linux raise net.core.rmem_max (e.g. `sysctl -w \
             net.core.rmem_max=8388608`); on Windows the size asked for is granted unless a \
             policy caps it.",
            buffers.recv / 1024,
            buffers.asked / 1024
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_receive_buffer_is_reported() {
        let windows_default = UdpBuffers {
            asked: 8 << 20,
            recv: 64 << 10,
            send: 64 << 10,
        };
        let hint = buffer_hint(windows_default).expect("64 KiB is too small");
        assert!(
            hint.contains("64 KiB") && hint.contains("8192 KiB"),
            "{hint}"
        );
        let granted = UdpBuffers {
            recv: 16 << 20,
            ..windows_default
        };
        assert_eq!(buffer_hint(granted), None);
    }
}
