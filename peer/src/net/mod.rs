//! Networking: identity, mutual TLS over QUIC, the server and the client.

pub mod client;
pub mod framing;
pub mod identity;
pub mod limiter;
pub mod server;
pub mod tls;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

/// QUIC application close codes, named so both ends can tell why.
pub mod close_code {
    pub const SHUTDOWN: u32 = 0;
    pub const PROTOCOL_VIOLATION: u32 = 1;
    pub const HANDSHAKE_FAILED: u32 = 2;
    pub const PARTY_KEY: u32 = 3;
    pub const TOO_MANY_CONNECTIONS: u32 = 4;
    pub const GOODBYE: u32 = 5;
    pub const INCOMPATIBLE_VERSION: u32 = 6;
    pub const REQUEST_TIMEOUT: u32 = 7;
    /// A stream reset because its reader took nothing for
    /// `server::WRITE_TIMEOUT`.
    pub const WRITE_TIMEOUT: u32 = 8;
}

/// UDP buffer asked of the OS. The default (~208 KiB on Linux) drops packets
/// at LAN speed and halves the congestion window; 8 MiB removed the loss in
/// our measurements. Many systems clamp it (net.core.rmem_max); the size
/// granted is logged.
pub const UDP_BUFFER: usize = 8 << 20;

/// Resolves once the endpoint's UDP socket is closed (its port is free).
pub type SocketClosed = tokio::sync::oneshot::Receiver<()>;

/// Bind a QUIC endpoint on `addr` with large socket buffers. With a server
/// config it accepts connections; it can always dial out.
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    bind_watched_endpoint(addr, server).map(|(endpoint, _)| endpoint)
}

/// [`bind_endpoint`], and a receiver that resolves once the socket is
/// closed: quinn closes it from its own driver task a moment after the last
/// endpoint handle and connection are gone. The runtime's shutdown waits for
/// it, so the port is free when the runtime reports it stopped.
pub fn bind_watched_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<(quinn::Endpoint, SocketClosed)> {
    use quinn::Runtime;
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
    let runtime = Arc::new(quinn::TokioRuntime);
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let socket = Arc::new(closing::ClosingSocket::new(
        runtime.wrap_udp_socket(socket)?,
        closed_tx,
    ));
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        server,
        socket,
        runtime,
    )?;
    Ok((endpoint, closed))
}

mod closing {
    //! A UDP socket that reports when it is closed.

    use std::io::{self, IoSliceMut};
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use quinn::udp::{RecvMeta, Transmit};
    use quinn::{AsyncUdpSocket, UdpPoller};
    use tokio::sync::oneshot;

    /// Delegates to the runtime's socket. Every poller it hands out keeps it
    /// alive, so when it drops, nothing else holds the inner socket: dropping
    /// that closes the descriptor, and then the sender fires.
    #[derive(Debug)]
    pub(super) struct ClosingSocket {
        inner: Option<Arc<dyn AsyncUdpSocket>>,
        closed: Option<oneshot::Sender<()>>,
    }

    impl ClosingSocket {
        pub(super) fn new(inner: Arc<dyn AsyncUdpSocket>, closed: oneshot::Sender<()>) -> Self {
            Self {
                inner: Some(inner),
                closed: Some(closed),
            }
        }

        fn inner(&self) -> &Arc<dyn AsyncUdpSocket> {
            self.inner.as_ref().expect("taken only on drop")
        }
    }

    impl Drop for ClosingSocket {
        fn drop(&mut self) {
            drop(self.inner.take());
            if let Some(closed) = self.closed.take() {
                // Nobody waiting (a runtime that failed to start) is fine.
                let _ = closed.send(());
            }
        }
    }

    impl AsyncUdpSocket for ClosingSocket {
        fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
            Box::pin(ClosingPoller {
                inner: self.inner().clone().create_io_poller(),
                _socket: self,
            })
        }

        fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
            self.inner().try_send(transmit)
        }

        fn poll_recv(
            &self,
            cx: &mut Context,
            bufs: &mut [IoSliceMut<'_>],
            meta: &mut [RecvMeta],
        ) -> Poll<io::Result<usize>> {
            self.inner().poll_recv(cx, bufs, meta)
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.inner().local_addr()
        }

        fn max_transmit_segments(&self) -> usize {
            self.inner().max_transmit_segments()
        }

        fn max_receive_segments(&self) -> usize {
            self.inner().max_receive_segments()
        }

        fn may_fragment(&self) -> bool {
            self.inner().may_fragment()
        }
    }

    /// The inner socket's poller, holding our socket alive while it lives
    /// (fields drop in order: the inner poller first).
    #[derive(Debug)]
    struct ClosingPoller {
        inner: Pin<Box<dyn UdpPoller>>,
        _socket: Arc<ClosingSocket>,
    }

    impl UdpPoller for ClosingPoller {
        fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
            self.get_mut().inner.as_mut().poll_writable(cx)
        }
    }
}
