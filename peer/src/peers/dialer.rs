//! Our side of every dial: the endpoint, our identity and our `Hello`, read
//! from our own record at each dial. Liveness dials with it, and a download
//! opens its extra connections to a fast source with it.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::Endpoint;

use super::PeerDirectory;
use crate::net::client::{connect, ClientHello, ConnectError, PeerConnection};
use crate::net::identity::{Identity, PeerId};

pub struct Dialer {
    pub directory: Arc<PeerDirectory>,
    pub endpoint: Endpoint,
    pub identity: Arc<Identity>,
    pub display_name: String,
    pub party_key: Option<[u8; 32]>,
    /// The port our own server listens on, told in `Hello`.
    pub listen_port: u16,
}

impl Dialer {
    /// Connect to `addr`; when `expected` is given the peer must prove it.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<PeerConnection, ConnectError> {
        connect(&self.endpoint, addr, expected, self.hello()).await
    }

    fn hello(&self) -> ClientHello<'_> {
        let own = self.directory.own();
        ClientHello {
            identity: &self.identity,
            display_name: self.display_name.clone(),
            library_digest: own.digest,
            record_version: own.version,
            party_key: self.party_key,
            listen_port: self.listen_port,
        }
    }
}
