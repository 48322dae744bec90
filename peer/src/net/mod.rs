//! Networking: identity, mutual TLS over QUIC, the server and the client.

pub mod client;
pub mod framing;
pub mod identity;
pub mod limiter;
pub mod server;
pub mod tls;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

/// UDP buffer asked of the OS. The default (~208 KiB on Linux) drops packets
/// at LAN speed and halves the congestion window; 8 MiB removed the loss in
/// our measurements. Many systems clamp it (net.core.rmem_max); the size
/// granted is logged.
pub const UDP_BUFFER: usize = 8 << 20;

/// Bind a QUIC endpoint on `addr` with large socket buffers. With a server
/// config it accepts connections; it can always dial out.
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER) {
        tracing::warn!("cannot enlarge the UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER) {
        tracing::warn!("cannot enlarge the UDP send buffer: {e}");
    }
    socket.bind(&addr.into())?;
    tracing::debug!(
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "UDP buffers granted"
    );
    let socket: UdpSocket = socket.into();
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}
