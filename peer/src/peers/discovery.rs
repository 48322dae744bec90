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
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

use super::PeerDirectory;
use crate::events::Source;
use crate::net::identity::PeerId;
use crate::supervisor::ServiceContext;

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_lanspread._udp.local.";

/// Interface name prefixes skipped by default: container, VM and VPN bridges
/// rarely lead to party peers and make every announcement go out N times.
pub const VIRTUAL_INTERFACE_PREFIXES: &[&str] = &[
    "docker", "br-", "veth", "virbr", "vmnet", "vboxnet", "lxc", "lxd", "cni", "flannel", "podman",
];

/// What discovery needs.
pub struct Discovery {
    pub directory: Arc<PeerDirectory>,
    /// Announced in the TXT record; the runtime has already cut it to fit.
    pub display_name: String,
    pub listen_port: u16,
    /// Only these interfaces when non-empty; otherwise every interface that
    /// is not virtual.
    pub interfaces: Vec<String>,
}

/// Whether discovery uses `name` under `allowed` (empty = the default rule).
pub fn interface_used(name: &str, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        !VIRTUAL_INTERFACE_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
    } else {
        allowed.iter().any(|a| a == name)
    }
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
        if !interface_used(&interface.name, &discovery.interfaces) && !interface.is_loopback() {
            let _ = daemon.disable_interface(IfKind::Name(interface.name.clone()));
        }
    }
    let our_id = discovery.directory.our_id().to_string();
    let properties = [
        ("id", our_id.as_str()),
        ("proto", &lanspread_proto::PROTOCOL_VERSION.to_string()),
        ("name", discovery.display_name.as_str()),
    ];
    let host = format!("{our_id}.local.");
    let info = ServiceInfo::new(
        SERVICE_TYPE,
        &our_id,
        &host,
        "",
        discovery.listen_port,
        &properties[..],
    )
    .context("cannot describe our mDNS service")?
    .enable_addr_auto();
    daemon.register(info).context("cannot announce over mDNS")?;
    let browse = daemon.browse(SERVICE_TYPE).context("cannot browse mDNS")?;
    loop {
        tokio::select! {
            biased;
            _ = ctx.token().cancelled() => return Ok(()),
            event = browse.recv_async() => {
                let event = event.context("the mDNS daemon stopped")?;
                ctx.heartbeat();
                if let ServiceEvent::ServiceResolved(service) = event {
                    let id = service.txt_properties.get_property_val_str("id");
                    let proto = service.txt_properties.get_property_val_str("proto");
                    let Some(peer_id) = id.and_then(PeerId::parse) else { continue };
                    if peer_id.as_str() == our_id {
                        continue;
                    }
                    if proto != Some(lanspread_proto::PROTOCOL_VERSION.to_string().as_str()) {
                        tracing::info!(peer = %peer_id, ?proto, "peer speaks another protocol version");
                        // Shown in our lists: no longer than a name we take in a Hello.
                        let name = service
                            .txt_properties
                            .get_property_val_str("name")
                            .map(lanspread_proto::wire::truncate_display_name);
                        if let Some(ip) = service.addresses.iter().next() {
                            let addr = SocketAddr::new(ip.to_ip_addr(), service.port);
                            discovery.directory.mark_incompatible(peer_id, addr, name);
                        }
                        continue;
                    }
                    for ip in &service.addresses {
                        let addr = SocketAddr::new(ip.to_ip_addr(), service.port);
                        tracing::debug!(peer = %peer_id, %addr, "found by mDNS");
                        discovery.directory.add_candidate(addr, Some(peer_id.clone()), Source::Mdns);
                    }
                }
            }
        }
    }
}
