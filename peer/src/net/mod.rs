//! Networking: identity, mutual TLS over QUIC, the server and the client.

pub mod client;
pub mod framing;
pub mod identity;
pub mod limiter;
pub mod server;
pub mod tls;
pub mod turns;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

pub use crate::events::UdpBuffers;

/// QUIC application close codes, named so both ends can tell why.
pub mod close_code {
    /// Closed because nothing needs it any more: idle, a duplicate, found
    /// silent.
    pub const UNNEEDED: u32 = 0;
    pub const PROTOCOL_VIOLATION: u32 = 1;
    pub const HANDSHAKE_FAILED: u32 = 2;
    pub const PARTY_KEY: u32 = 3;
    pub const TOO_MANY_CONNECTIONS: u32 = 4;
    /// The peer is leaving: after its `Goodbye`, and on every connection
    /// its endpoint still holds when it shuts down.
    pub const GOODBYE: u32 = 5;
    pub const INCOMPATIBLE_VERSION: u32 = 6;
    pub const REQUEST_TIMEOUT: u32 = 7;
    /// A stream reset because its reader took nothing for
    /// `server::WRITE_TIMEOUT`.
    pub const WRITE_TIMEOUT: u32 = 8;

    /// Whether the peer closed this connection because it is leaving.
    pub fn said_goodbye(error: &quinn::ConnectionError) -> bool {
        matches!(error, quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code.into_inner() == u64::from(GOODBYE))
    }
}

/// UDP buffer asked of the OS. The default (~208 KiB on Linux, 64 KiB on
/// Windows) drops packets at LAN speed and halves the congestion window;
/// 8 MiB removed the loss in our measurements. Many systems clamp it
/// (net.core.rmem_max); the size granted is logged and shown in the
/// diagnostics report.
pub const UDP_BUFFER: usize = 8 << 20;

/// Resolves once the endpoint's UDP socket is closed (its port is free).
pub type SocketClosed = tokio::sync::oneshot::Receiver<()>;

/// A bound endpoint, what resolves when its socket is closed, and the
/// buffer sizes the OS granted.
pub struct BoundEndpoint {
    pub endpoint: quinn::Endpoint,
    pub closed: SocketClosed,
    pub buffers: UdpBuffers,
}

/// Bind a QUIC endpoint on `addr` with large socket buffers. With a server
/// config it accepts connections; it can always dial out.
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    bind_watched_endpoint(addr, server).map(|bound| bound.endpoint)
}

/// [`bind_endpoint`], and a receiver that resolves once the socket is
/// closed: quinn closes it from its own driver task a moment after the last
/// endpoint handle and connection are gone. The runtime's shutdown waits for
/// it, so the port is free when the runtime reports it stopped.
pub fn bind_watched_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<BoundEndpoint> {
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
    // As the OS reports them: Linux reports twice the size it accounts for.
    let buffers = UdpBuffers {
        asked: UDP_BUFFER as u64,
        recv: socket.recv_buffer_size().unwrap_or(0) as u64,
        send: socket.send_buffer_size().unwrap_or(0) as u64,
    };
    tracing::debug!(
        recv = buffers.recv,
        send = buffers.send,
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
    Ok(BoundEndpoint {
        endpoint,
        closed,
        buffers,
    })
}

/// Why binding the UDP port failed, in words a player can act on. The OS
/// code decides, not a guess: `os error 10045` is not "another lanspread is
/// running".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindCause {
    /// Another program holds the port.
    InUse,
    /// The address is not one of this machine's.
    NotLocal,
    /// The OS refused the port (privileged port; on Windows a reserved
    /// range or an exclusive holder).
    Denied,
    /// IPv4 or IPv6 is turned off.
    FamilyUnsupported,
    /// The network stack refused a socket option QUIC sets.
    OptionUnsupported,
    /// Out of socket buffers.
    NoBuffers,
    /// Windows networking itself failed to start.
    StackBroken,
    /// Nothing more to say than the OS message.
    Other,
}

/// The OS error codes of one platform family, for [`BindCause::classify`].
pub struct OsCodes {
    in_use: &'static [i32],
    not_local: &'static [i32],
    denied: &'static [i32],
    family_unsupported: &'static [i32],
    option_unsupported: &'static [i32],
    no_buffers: &'static [i32],
    stack_broken: &'static [i32],
}

impl OsCodes {
    /// Winsock: WSAEADDRINUSE, WSAEADDRNOTAVAIL, WSAEACCES,
    /// WSAEAFNOSUPPORT / WSAEPFNOSUPPORT, WSAENOPROTOOPT / WSAEOPNOTSUPP /
    /// WSAEPROTONOSUPPORT, WSAENOBUFS, WSASYSNOTREADY /
    /// WSAEPROVIDERFAILEDINIT / WSASYSCALLFAILURE.
    pub const WINDOWS: OsCodes = OsCodes {
        in_use: &[10048],
        not_local: &[10049],
        denied: &[10013],
        family_unsupported: &[10047, 10046],
        option_unsupported: &[10042, 10045, 10043],
        no_buffers: &[10055],
        stack_broken: &[10091, 10106, 10107],
    };
    /// Linux errno: EADDRINUSE, EADDRNOTAVAIL, EACCES / EPERM,
    /// EAFNOSUPPORT, ENOPROTOOPT / EOPNOTSUPP / EPROTONOSUPPORT, ENOBUFS.
    pub const LINUX: OsCodes = OsCodes {
        in_use: &[98],
        not_local: &[99],
        denied: &[13, 1],
        family_unsupported: &[97],
        option_unsupported: &[92, 95, 93],
        no_buffers: &[105],
        stack_broken: &[],
    };
    /// BSD errno (macOS and the BSDs), same names as for Linux.
    pub const BSD: OsCodes = OsCodes {
        in_use: &[48],
        not_local: &[49],
        denied: &[13, 1],
        family_unsupported: &[47],
        option_unsupported: &[42, 45, 102, 43],
        no_buffers: &[55],
        stack_broken: &[],
    };
    /// This platform's codes.
    #[cfg(windows)]
    pub const HOST: &OsCodes = &OsCodes::WINDOWS;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub const HOST: &OsCodes = &OsCodes::LINUX;
    #[cfg(not(any(windows, target_os = "linux", target_os = "android")))]
    pub const HOST: &OsCodes = &OsCodes::BSD;
}

impl BindCause {
    /// The cause of `error`, an error from binding or setting up the socket.
    pub fn of(error: &std::io::Error) -> Self {
        Self::classify(error.raw_os_error(), error.kind(), OsCodes::HOST)
    }

    /// Pure: the cause of an OS error `code` (or, without one, its kind)
    /// under the codes of one platform family.
    pub fn classify(code: Option<i32>, kind: std::io::ErrorKind, codes: &OsCodes) -> Self {
        use std::io::ErrorKind;
        if let Some(code) = code {
            let table = [
                (codes.in_use, Self::InUse),
                (codes.not_local, Self::NotLocal),
                (codes.denied, Self::Denied),
                (codes.family_unsupported, Self::FamilyUnsupported),
                (codes.option_unsupported, Self::OptionUnsupported),
                (codes.no_buffers, Self::NoBuffers),
                (codes.stack_broken, Self::StackBroken),
            ];
            if let Some((_, cause)) = table.iter().find(|(list, _)| list.contains(&code)) {
                return *cause;
            }
        }
        match kind {
            ErrorKind::AddrInUse => Self::InUse,
            ErrorKind::AddrNotAvailable => Self::NotLocal,
            ErrorKind::PermissionDenied => Self::Denied,
            ErrorKind::Unsupported => Self::OptionUnsupported,
            _ => Self::Other,
        }
    }

    /// What to do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Self::InUse => {
                "another program already uses this port (another lanspread?); \
                 stop it or choose another port"
            }
            Self::NotLocal => {
                "this address is not one of this machine's; listen on 0.0.0.0 or on \
                 an address of this machine"
            }
            Self::Denied => {
                "the system refused this port: on Windows it may lie in a range reserved for \
                 Hyper-V or WSL (`netsh interface ipv4 show excludedportrange protocol=udp`) or \
                 be held exclusively by another program; elsewhere ports below 1024 need \
                 privileges. Choose another port"
            }
            Self::FamilyUnsupported => {
                "this address family (IPv4 or IPv6) is turned off on this machine; listen on \
                 an address of the other family"
            }
            Self::OptionUnsupported => {
                "the network stack refused a socket option QUIC needs (a VPN or filter \
                 driver, or a compatibility layer such as Wine, may lack it); another port \
                 will not help"
            }
            Self::NoBuffers => {
                "the system has run out of socket buffers; close other network programs or \
                 restart the machine"
            }
            Self::StackBroken => {
                "Windows networking failed to start; `netsh winsock reset` and a restart \
                 usually fix it"
            }
            Self::Other => "see the system's message",
        }
    }
}

impl std::fmt::Display for BindCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.advice())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    fn check(code: Option<i32>, kind: ErrorKind, codes: &OsCodes, expected: BindCause) {
        assert_eq!(
            BindCause::classify(code, kind, codes),
            expected,
            "code {code:?}, kind {kind:?}"
        );
    }

    /// `os error 10045` (WSAEOPNOTSUPP) was reported as "is another
    /// lanspread running?": each Winsock code now says its own cause.
    #[test]
    fn windows_codes_say_their_cause() {
        let w = &OsCodes::WINDOWS;
        let other = ErrorKind::Other;
        check(Some(10048), ErrorKind::AddrInUse, w, BindCause::InUse);
        check(
            Some(10049),
            ErrorKind::AddrNotAvailable,
            w,
            BindCause::NotLocal,
        );
        check(
            Some(10013),
            ErrorKind::PermissionDenied,
            w,
            BindCause::Denied,
        );
        check(Some(10045), other, w, BindCause::OptionUnsupported);
        check(Some(10042), other, w, BindCause::OptionUnsupported);
        check(Some(10047), other, w, BindCause::FamilyUnsupported);
        check(Some(10055), other, w, BindCause::NoBuffers);
        check(Some(10106), other, w, BindCause::StackBroken);
        check(Some(10091), other, w, BindCause::StackBroken);
        check(Some(10060), ErrorKind::TimedOut, w, BindCause::Other);
    }

    #[test]
    fn unix_codes_say_their_cause() {
        let other = ErrorKind::Other;
        check(
            Some(98),
            ErrorKind::AddrInUse,
            &OsCodes::LINUX,
            BindCause::InUse,
        );
        check(
            Some(48),
            ErrorKind::AddrInUse,
            &OsCodes::BSD,
            BindCause::InUse,
        );
        check(Some(99), other, &OsCodes::LINUX, BindCause::NotLocal);
        check(Some(13), other, &OsCodes::LINUX, BindCause::Denied);
        check(
            Some(97),
            other,
            &OsCodes::LINUX,
            BindCause::FamilyUnsupported,
        );
        check(Some(47), other, &OsCodes::BSD, BindCause::FamilyUnsupported);
        check(
            Some(92),
            other,
            &OsCodes::LINUX,
            BindCause::OptionUnsupported,
        );
        check(Some(105), other, &OsCodes::LINUX, BindCause::NoBuffers);
        // A Winsock code means nothing on unix.
        check(Some(10048), other, &OsCodes::LINUX, BindCause::Other);
    }

    /// Without an OS code, the kind decides.
    #[test]
    fn kinds_without_a_code() {
        for codes in [&OsCodes::WINDOWS, &OsCodes::LINUX, &OsCodes::BSD] {
            check(None, ErrorKind::AddrInUse, codes, BindCause::InUse);
            check(None, ErrorKind::PermissionDenied, codes, BindCause::Denied);
            check(
                None,
                ErrorKind::Unsupported,
                codes,
                BindCause::OptionUnsupported,
            );
            check(None, ErrorKind::InvalidInput, codes, BindCause::Other);
        }
    }

    /// Only "in use" mentions another lanspread.
    #[test]
    fn only_in_use_blames_another_lanspread() {
        use BindCause::*;
        for cause in [
            NotLocal,
            Denied,
            FamilyUnsupported,
            OptionUnsupported,
            NoBuffers,
            StackBroken,
            Other,
        ] {
            assert!(!cause.advice().contains("lanspread"), "{cause:?}");
        }
        assert!(InUse.advice().contains("another lanspread"));
    }

    /// A real port held by another socket is reported as in use.
    #[test]
    fn a_held_port_is_in_use() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0");
        let Ok(held) = held else {
            eprintln!("skipped: cannot open a plain UDP socket here");
            return;
        };
        let addr = held.local_addr().unwrap();
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        let error = socket.bind(&addr.into()).expect_err("the port is taken");
        assert_eq!(BindCause::of(&error), BindCause::InUse, "{error}");
    }
}
