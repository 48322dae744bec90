//! The discovery service: announce ourselves and browse for peers with mDNS
//! (`_lanspread._udp.local.`). Policy `Restart`: the mdns-sd daemon dying is
//! a failure the supervisor restarts.
//!
//! mdns-sd runs its own thread; we only ever wait on its channel with
//! `recv_async` next to the cancellation token, so shutdown never waits on
//! it, and `shutdown()` of the daemon is asked for without waiting.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use lanspread_proto::wire::{games_digest, PeerRecord};
use lanspread_proto::Hash;
use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};

use super::{OwnRecord, PeerDirectory};
use crate::net::identity::PeerId;
use crate::supervisor::ServiceContext;

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_lanspread._udp.local.";
/// How long we browse after starting (or after finding ourselves alone):
/// mdns-sd asks at 1, 2, 4, ... 32 s, so six queries.
pub const BROWSE_FOR: std::time::Duration = std::time::Duration::from_secs(60);
/// How often, once browsing stopped, we look whether we are alone.
const ALONE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Virtual adapters skipped by default: container, VM and VPN interfaces
/// rarely lead to party peers, make every announcement go out N times, and
/// can make peers dial addresses nobody else can reach. Each entry is a
/// case-insensitive name pattern and what it is; `^` marks a prefix (unix
/// names like `docker0`), otherwise the pattern may appear anywhere (Windows
/// names adapters by their friendly name, e.g. `vEthernet (WSL)`). The first
/// match wins: Windows names come first (`vEthernet` starts like `veth`).
pub const VIRTUAL_ADAPTERS: &[(&str, &str)] = &[
    ("vethernet", "Hyper-V or WSL switch"),
    ("hyper-v", "Hyper-V"),
    ("wsl", "WSL"),
    ("docker", "container bridge"),
    ("virtualbox", "VirtualBox"),
    ("vmware", "VMware"),
    ("tailscale", "VPN"),
    ("zerotier", "ZeroTier"),
    ("wireguard", "WireGuard"),
    ("openvpn", "VPN"),
    ("nordlynx", "VPN"),
    ("hamachi", "VPN"),
    ("radmin", "VPN"),
    ("vpn", "VPN"),
    ("^docker", "container bridge"),
    ("^br-", "container bridge"),
    ("^veth", "container link"),
    ("^cni", "container bridge"),
    ("^flannel", "container overlay"),
    ("^podman", "container bridge"),
    ("^lxc", "container bridge"),
    ("^lxd", "container bridge"),
    ("^virbr", "VM bridge"),
    ("^vmnet", "VMware"),
    ("^vboxnet", "VirtualBox"),
    ("^tun", "VPN"),
    ("^tap", "VPN"),
    ("^utun", "VPN"),
    ("^wg", "WireGuard"),
    ("^zt", "ZeroTier"),
];

/// What kind of virtual adapter `name` is, if it looks like one.
pub fn virtual_adapter(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    VIRTUAL_ADAPTERS
        .iter()
        .find(|(pattern, _)| match pattern.strip_prefix('^') {
            Some(prefix) => lower.starts_with(prefix),
            None => lower.contains(pattern),
        })
        .map(|(_, kind)| *kind)
}

/// Why discovery does not use the interface `name` under `allowed` (empty =
/// the default rule: every interface but virtual adapters), or `None` when
/// it does.
pub fn skip_reason(name: &str, allowed: &[String]) -> Option<String> {
    if allowed.is_empty() {
        virtual_adapter(name).map(|kind| format!("virtual adapter ({kind})"))
    } else if allowed.iter().any(|a| a == name) {
        None
    } else {
        Some("not among the configured interfaces".into())
    }
}

/// What discovery needs.
pub struct Discovery {
    pub directory: Arc<PeerDirectory>,
    /// Announced in the TXT record; the runtime has already cut it to fit.
    pub display_name: String,
    pub listen_port: u16,
    /// Our socket speaks IPv6 (and, dual-stack, IPv4): otherwise IPv6
    /// addresses of peers are of no use to us.
    pub ipv6: bool,
    /// Only these interfaces when non-empty; otherwise every interface that
    /// is not virtual.
    pub interfaces: Vec<String>,
}

/// Whether discovery uses `name` under `allowed` (empty = the default rule).
pub fn interface_used(name: &str, allowed: &[String]) -> bool {
    skip_reason(name, allowed).is_none()
}

pub async fn run(ctx: ServiceContext, discovery: Arc<Discovery>) -> anyhow::Result<()> {
    let daemon = ServiceDaemon::new().context("cannot start mDNS")?;
    let result = serve(&ctx, &daemon, &discovery).await;
    // Asks the daemon thread to stop; its answer is not waited for.
    let _ = daemon.shutdown();
    result
}

async fn serve(
    ctx: &ServiceContext,
    daemon: &ServiceDaemon,
    discovery: &Discovery,
) -> anyhow::Result<()> {
    for interface in if_addrs::get_if_addrs().unwrap_or_default() {
        if interface.is_loopback() {
            continue;
        }
        if let Some(reason) = skip_reason(&interface.name, &discovery.interfaces) {
            tracing::debug!(interface = %interface.name, %reason, "mDNS skips it");
            let _ = daemon.disable_interface(IfKind::Name(interface.name.clone()));
        }
    }
    let our_id = discovery.directory.our_id().to_string();
    let mut own = discovery.directory.watch_own();
    let describe = |record: OwnRecord| {
        let properties = [
            ("id", our_id.clone()),
            ("proto", lanspread_proto::PROTOCOL_VERSION.to_string()),
            ("name", discovery.display_name.clone()),
            ("ver", record.version.to_string()),
            ("lib", record.digest.to_hex()),
        ];
        let host = format!("{our_id}.local.");
        ServiceInfo::new(
            SERVICE_TYPE,
            &our_id,
            &host,
            "",
            discovery.listen_port,
            &properties[..],
        )
        .context("cannot describe our mDNS service")
        .map(ServiceInfo::enable_addr_auto)
    };
    let record = *own.borrow_and_update();
    daemon
        .register(describe(record)?)
        .context("cannot announce over mDNS")?;
    let mut announced = record.digest;
    // Browsing costs every peer on the LAN: each query carries what the
    // asker knows, and cached records are refreshed by more queries, so the
    // traffic each peer hears grows with the party. We browse to find the
    // party, then stop: peers that come later find us by their own
    // browse, dial the peers they watch, and gossip tells the rest. We
    // browse again when we find ourselves alone.
    let mut browse = Some(daemon.browse(SERVICE_TYPE).context("cannot browse mDNS")?);
    let mut browse_until = tokio::time::Instant::now() + BROWSE_FOR;
    let mut alone_check = tokio::time::interval(ALONE_CHECK);
    loop {
        let browsing = browse.clone();
        let next_event = async move {
            match browsing {
                Some(receiver) => receiver.recv_async().await.map(Some),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = ctx.token().cancelled() => return Ok(()),
            changed = own.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the peer directory went away");
                }
                // Our library changed: announce the new record (the same
                // name, new TXT); peers still browsing hear it at once, the
                // others by gossip. A version raised for anything else (our
                // party status, an answer to a rumour) goes by gossip only:
                // a status moves during every download.
                let record = *own.borrow_and_update();
                if record.digest != announced {
                    announced = record.digest;
                    daemon.register(describe(record)?).context("cannot announce over mDNS")?;
                }
            }
            _ = tokio::time::sleep_until(browse_until), if browse.is_some() => {
                tracing::debug!("mDNS: browsing stops");
                let _ = daemon.stop_browse(SERVICE_TYPE);
                browse = None;
            }
            _ = alone_check.tick(), if browse.is_none() => {
                ctx.heartbeat();
                if discovery.directory.present_count() == 0 {
                    tracing::debug!("mDNS: alone, browsing again");
                    browse = Some(daemon.browse(SERVICE_TYPE).context("cannot browse mDNS")?);
                    browse_until = tokio::time::Instant::now() + BROWSE_FOR;
                }
            }
            event = next_event => {
                let Some(event) = event.context("the mDNS daemon stopped")? else { continue };
                ctx.heartbeat();
                match event {
                    ServiceEvent::ServiceResolved(service) => found(discovery, &our_id, &service),
                    ServiceEvent::ServiceRemoved(_, fullname) => {
                        // A goodbye (TTL 0): the peer is leaving.
                        let id = fullname.strip_suffix(SERVICE_TYPE).and_then(|n| n.strip_suffix('.'));
                        if let Some(peer_id) = id.and_then(PeerId::parse) {
                            tracing::debug!(peer = %peer_id, "mDNS goodbye");
                            discovery.directory.goodbye_from(&peer_id);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A peer's mDNS announcement: its record, to check like any other.
fn found(discovery: &Discovery, our_id: &str, service: &ResolvedService) {
    let txt = |key: &str| service.txt_properties.get_property_val_str(key);
    let Some(peer_id) = txt("id").and_then(PeerId::parse) else {
        return;
    };
    if peer_id.as_str() == our_id {
        return;
    }
    if txt("proto") != Some(lanspread_proto::PROTOCOL_VERSION.to_string().as_str()) {
        tracing::info!(peer = %peer_id, proto = ?txt("proto"), "peer speaks another protocol version");
        // Shown in our lists: no longer than a name we take in a Hello.
        let name = txt("name").map(lanspread_proto::wire::truncate_display_name);
        if let Some(ip) = service.addresses.iter().next() {
            let addr = SocketAddr::new(ip.to_ip_addr(), service.port);
            discovery.directory.mark_incompatible(peer_id, addr, name);
        }
        return;
    }
    let version = txt("ver").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let library_digest = txt("lib")
        .and_then(Hash::from_hex)
        .unwrap_or_else(|| games_digest(&[]));
    // One address we can reach: IPv4 first (link-local IPv6 needs a scope
    // our socket address does not carry).
    let mut ips: Vec<std::net::IpAddr> = service
        .addresses
        .iter()
        .map(|ip| ip.to_ip_addr())
        .filter(|ip| ip.is_ipv4() || discovery.ipv6)
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    let Some(ip) = ips.first() else { return };
    let record = PeerRecord {
        peer_id: peer_id.to_string(),
        addr: SocketAddr::new(*ip, service.port),
        version,
        library_digest,
        gone: false,
        status: None,
    };
    tracing::debug!(peer = %peer_id, addr = %record.addr, version, "found by mDNS");
    let name = txt("name").map(lanspread_proto::wire::truncate_display_name);
    discovery.directory.announced(record, name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Option<&str>) {
        assert_eq!(virtual_adapter(name), expected, "{name}");
    }

    #[test]
    fn virtual_adapters_are_recognised() {
        // Windows friendly names.
        check("vEthernet (WSL)", Some("Hyper-V or WSL switch"));
        check("vEthernet (Default Switch)", Some("Hyper-V or WSL switch"));
        check("VirtualBox Host-Only Network", Some("VirtualBox"));
        check("VMware Network Adapter VMnet8", Some("VMware"));
        check("Tailscale", Some("VPN"));
        check("ZeroTier One [8056c2e21c000001]", Some("ZeroTier"));
        check("NordLynx", Some("VPN"));
        check("Radmin VPN", Some("VPN"));
        check("OpenVPN Data Channel Offload", Some("VPN"));
        // Unix names.
        check("docker0", Some("container bridge"));
        check("br-3f2a1c", Some("container bridge"));
        check("veth12ab", Some("container link"));
        check("virbr0", Some("VM bridge"));
        check("vboxnet0", Some("VirtualBox"));
        check("tun0", Some("VPN"));
        check("utun3", Some("VPN"));
        check("wg0", Some("WireGuard"));
    }

    #[test]
    fn real_adapters_are_used() {
        for name in [
            "Ethernet",
            "Ethernet 2",
            "Wi-Fi",
            "WLAN",
            "eth0",
            "enp3s0",
            "wlp2s0",
            "en0",
            "Local Area Connection",
        ] {
            check(name, None);
            assert!(interface_used(name, &[]), "{name}");
        }
    }

    #[test]
    fn configured_interfaces_win() {
        let allowed = vec!["vEthernet (WSL)".to_owned()];
        assert_eq!(skip_reason("vEthernet (WSL)", &allowed), None);
        assert_eq!(
            skip_reason("Ethernet", &allowed).as_deref(),
            Some("not among the configured interfaces")
        );
        assert_eq!(
            skip_reason("docker0", &[]).as_deref(),
            Some("virtual adapter (container bridge)")
        );
    }
}
