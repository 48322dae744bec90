//! Mutual TLS for QUIC with self-signed certificates checked against peer ids,
//! the party key exchange bound to the TLS session, and the transport
//! settings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use rand_core::{CryptoRng, RngCore};
use spake2::{Ed25519Group, Identity as SpakeIdentity, Password, Spake2};

use super::identity::{Identity, PeerId};
use lanspread_proto::Hash;

/// The server name clients ask for; certificates are checked by peer id, not name.
pub const SERVER_NAME: &str = "lanspread.peer";

/// Most bidirectional streams a peer may have open to us at once: a download
/// keeps a few `GetPieces` in flight per source, plus catalog requests.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// A connection with no traffic (keep-alives included) for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The side that dialled sends a keep-alive after this long without sending
/// (the other side's acknowledgement proves it is there, and the keep-alive
/// proves the dialler is); the listening side sends none, so a held idle
/// connection costs two small packets per interval. Liveness declares a
/// watched connection dead after two missed answers
/// (`liveness::WATCH_LOST_AFTER`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// The RTT assumed before the first measurement. QUIC's default (333 ms) is
/// for the internet; a LAN answers within milliseconds. It also sets how long
/// a closed connection drains (3 probe timeouts, ~1 s per 333 ms): with the
/// default, a dial to a peer that vanished held the UDP port for 3 s after
/// shutdown; with this, ~0.2 s.
pub const INITIAL_RTT: Duration = Duration::from_millis(25);

/// Bytes sent and not yet acknowledged, per connection: what a connection
/// may make us hold in send buffers, whatever its streams. Six times a
/// 10 Gbit/s LAN's bandwidth-delay product; a peer that acknowledges
/// nothing costs at most this per connection.
pub const SEND_WINDOW: u64 = 8 << 20;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport settings for a LAN, for the side that dials (`keep_alive`) or
/// listens. Every value is per connection.
pub fn transport_config(keep_alive: bool) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // A LAN has ~0.2-1 ms RTT; at 10 Gbit/s that is ~1.25 MB in flight. 16 MiB
    // per stream and 64 MiB per connection keep several pieces in flight per
    // stream without flow control ever being the limit, even on loopback.
    transport.stream_receive_window((16u32 << 20).into());
    transport.receive_window((64u32 << 20).into());
    transport.send_window(SEND_WINDOW);
    transport.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("fits")));
    transport.keep_alive_interval(keep_alive.then_some(KEEP_ALIVE));
    transport.initial_rtt(INITIAL_RTT);
    // MTU discovery up to 1452 bytes: a 1500-byte Ethernet frame minus IPv6
    // and UDP headers. A higher bound (jumbo frames, loopback) lengthens the
    // search into the bulk transfer, where quinn's black-hole detector takes
    // its congestion losses for an MTU drop and falls back to 1200 bytes for
    // a minute (docs/BENCHMARKS.md, "The path MTU, measured"). GSO
    // (segmentation offload) is on by default in quinn and batches these
    // into few syscalls.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(1452);
    transport.mtu_discovery_config(Some(mtu));
    transport
}

/// The server side: any client with a well-formed self-signed certificate
/// gets through TLS; its peer id is then read from the certificate.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, rustls::Error> {
    let provider = provider();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyPeerCertificate { provider }))
        .with_single_cert(identity.cert_chain(), identity.private_key())?;
    tls.alpn_protocols = vec![lanspread_proto::alpn()];
    tls.max_early_data_size = 0;
    let quic =
        QuicServerConfig::try_from(tls).map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(false)));
    Ok(config)
}

/// What the client learned of the server's certificate.
#[derive(Debug, Default)]
pub struct SeenServer {
    pub peer_id: Mutex<Option<PeerId>>,
}

/// The client side for one connection: the server must prove `expected`
/// (when given). `seen` receives the id it presented either way.
pub fn client_config(
    identity: &Identity,
    expected: Option<PeerId>,
    seen: Arc<SeenServer>,
) -> Result<quinn::ClientConfig, rustls::Error> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectedPeer {
            expected,
            seen,
            provider,
        }))
        .with_client_auth_cert(identity.cert_chain(), identity.private_key())?;
    tls.alpn_protocols = vec![lanspread_proto::alpn()];
    let quic =
        QuicClientConfig::try_from(tls).map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(true)));
    Ok(config)
}

/// The peer id proven by a connection's TLS certificate.
pub fn remote_peer_id(connection: &quinn::Connection) -> Option<PeerId> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    PeerId::of_certificate(certs.first()?)
}

/// The key both sides derive from a party secret typed by people.
pub fn party_key(secret: &str) -> [u8; 32] {
    blake3::derive_key("lanspread party key v1", secret.trim().as_bytes())
}

/// Which side of the connection a party key exchange runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// The exporter label of the keying material that binds the party key
/// exchange to one TLS session.
const PARTY_EXPORTER_LABEL: &[u8] = b"EXPORTER-lanspread-party-spake2";

/// 32 bytes of keying material exported from this TLS session, the same on
/// both ends and on no other session: what binds the party key exchange to
/// the connection (and so to both certificates). `None` when the session
/// cannot export it; callers then admit no one.
pub fn party_binding(connection: &quinn::Connection) -> Option<[u8; 32]> {
    let mut binding = [0u8; 32];
    connection
        .export_keying_material(&mut binding, PARTY_EXPORTER_LABEL, b"")
        .ok()?;
    Some(binding)
}

/// One side of the party key exchange: SPAKE2 (Ed25519 group) with the
/// party key as the password and the session's [`party_binding`] in both
/// identities. Its message reveals nothing about the key (a random point
/// blinded by it); the keys both sides derive agree only when both used the
/// same party key on the same TLS session. See docs/PROTOCOL.md "Party key".
pub struct PartyExchange {
    spake: Spake2<Ed25519Group>,
    role: Role,
}

/// What both key confirmations must be once the exchange finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartyConfirmations {
    /// Ours, sent to the other side.
    pub ours: Hash,
    /// What the other side must send if it holds the same key.
    pub expected: Hash,
}

impl PartyExchange {
    /// Start on `connection` with a fresh random secret. `None` when the
    /// session exports no keying material.
    pub fn start(
        connection: &quinn::Connection,
        key: &[u8; 32],
        role: Role,
    ) -> Option<(Self, Vec<u8>)> {
        let binding = party_binding(connection)?;
        Some(Self::start_with_rng(&binding, key, role, rand_core::OsRng))
    }

    /// Start with the secret drawn from `rng`: the exchange and the message
    /// to send. [`PartyExchange::start`] uses the system's RNG.
    pub fn start_with_rng(
        binding: &[u8; 32],
        key: &[u8; 32],
        role: Role,
        rng: impl CryptoRng + RngCore,
    ) -> (Self, Vec<u8>) {
        let password = Password::new(key);
        let mut client = b"lanspread party client ".to_vec();
        client.extend_from_slice(binding);
        let mut server = b"lanspread party server ".to_vec();
        server.extend_from_slice(binding);
        let (client, server) = (SpakeIdentity::new(&client), SpakeIdentity::new(&server));
        let (spake, message) = match role {
            Role::Client => Spake2::start_a_with_rng(&password, &client, &server, rng),
            Role::Server => Spake2::start_b_with_rng(&password, &client, &server, rng),
        };
        (Self { spake, role }, message)
    }

    /// Finish with the other side's message: both key confirmations.
    /// `None` when the message is malformed (wrong length, wrong side, not
    /// a curve point).
    pub fn finish(self, theirs: &[u8]) -> Option<PartyConfirmations> {
        let shared = self.spake.finish(theirs).ok()?;
        let client = Hash(blake3::derive_key(
            "lanspread party confirmation v2 client",
            &shared,
        ));
        let server = Hash(blake3::derive_key(
            "lanspread party confirmation v2 server",
            &shared,
        ));
        Some(match self.role {
            Role::Client => PartyConfirmations {
                ours: client,
                expected: server,
            },
            Role::Server => PartyConfirmations {
                ours: server,
                expected: client,
            },
        })
    }
}

/// Whether a peer confirmed the party key: only when our own exchange
/// finished (`expected`) and its confirmation equals ours. Fails closed:
/// when the exchange could not finish, no confirmation, not even a missing
/// one, is accepted. Compared in constant time.
pub fn party_confirmation_accepted(expected: Option<Hash>, received: Option<Hash>) -> bool {
    match (expected, received) {
        (Some(expected), Some(received)) => {
            blake3::Hash::from(expected.0) == blake3::Hash::from(received.0)
        }
        _ => false,
    }
}

/// Both verifiers: TLS 1.2 is never offered (the configs are TLS 1.3 only).
const TLS12_REFUSED: rustls::Error =
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered);

/// Both verifiers: the handshake signature proves the peer holds the
/// certificate's key.
fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

#[derive(Debug)]
struct ExpectedPeer {
    expected: Option<PeerId>,
    seen: Arc<SeenServer>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ExpectedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = PeerId::of_certificate(end_entity).ok_or(
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
        )?;
        *self.seen.peer_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(actual.clone());
        match &self.expected {
            Some(expected) if *expected != actual => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(TLS12_REFUSED)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct AnyPeerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyPeerCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The signature over the handshake (verify_tls13_signature) proves
        // the client holds the key; the id is derived from it afterwards.
        PeerId::of_certificate(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(TLS12_REFUSED)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expected: Option<Hash>, received: Option<Hash>, accepted: bool) {
        assert_eq!(
            party_confirmation_accepted(expected, received),
            accepted,
            "expected {expected:?}, received {received:?}"
        );
    }

    /// Bug: both sides compared `Option`s, so when our proof could not be
    /// computed (`None`) a peer sending no proof (`None`) passed the party
    /// key check. A proof we cannot compute must refuse every peer.
    #[test]
    fn the_party_check_fails_closed() {
        let proof = Some(Hash([7; 32]));
        let other = Some(Hash([8; 32]));
        check(None, None, false);
        check(None, proof, false);
        check(proof, None, false);
        check(proof, other, false);
        check(proof, proof, true);
    }

    fn exchange(
        client: (&str, [u8; 32]),
        server: (&str, [u8; 32]),
    ) -> (Option<PartyConfirmations>, Option<PartyConfirmations>) {
        let (a, to_server) = PartyExchange::start_with_rng(
            &client.1,
            &party_key(client.0),
            Role::Client,
            rand_core::OsRng,
        );
        let (b, to_client) = PartyExchange::start_with_rng(
            &server.1,
            &party_key(server.0),
            Role::Server,
            rand_core::OsRng,
        );
        (a.finish(&to_client), b.finish(&to_server))
    }

    fn confirmed(
        (client, server): (Option<PartyConfirmations>, Option<PartyConfirmations>),
    ) -> bool {
        let (client, server) = (client.unwrap(), server.unwrap());
        let server_ok = party_confirmation_accepted(Some(client.expected), Some(server.ours));
        let client_ok = party_confirmation_accepted(Some(server.expected), Some(client.ours));
        assert_eq!(server_ok, client_ok, "both sides agree");
        server_ok
    }

    #[test]
    fn the_exchange_confirms_only_the_same_key_on_the_same_session() {
        let session = [1; 32];
        assert!(confirmed(exchange(
            ("lan-2026", session),
            ("lan-2026", session)
        )));
        // Surrounding spaces are not part of the key.
        assert!(confirmed(exchange(
            (" lan-2026\n", session),
            ("lan-2026", session)
        )));
        assert!(!confirmed(exchange(
            ("lan-2026", session),
            ("lan-2027", session)
        )));
        // Relayed between two TLS sessions (a machine in the middle): no.
        assert!(!confirmed(exchange(
            ("lan-2026", session),
            ("lan-2026", [2; 32])
        )));
    }

    #[test]
    fn malformed_or_reflected_messages_finish_nothing() {
        let key = party_key("lan-2026");
        let start = |role| PartyExchange::start_with_rng(&[1; 32], &key, role, rand_core::OsRng);
        let (client, own) = start(Role::Client);
        assert_eq!(client.finish(&own), None, "our own message sent back");
        for bad in [&[][..], &[0x42; 10], &[0x41; 33], &[0x42; 34]] {
            let (client, _) = start(Role::Client);
            assert_eq!(client.finish(bad), None, "{bad:?}");
        }
    }
}
