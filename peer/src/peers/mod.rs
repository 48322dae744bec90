//! Other peers: who they are, how to reach them, whether they are alive, and
//! what they share. The [`PeerDirectory`] is the shared table; the liveness
//! service (`liveness.rs`) dials, pings and exchanges peers; the discovery
//! service (`discovery.rs`) feeds it addresses found by mDNS.

pub mod catalog;
pub mod diagnostics;
pub mod discovery;
pub mod liveness;
pub mod thumbnails;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use lanspread_proto::wire::{games_digest, PeerAddr};
use lanspread_proto::{GameSummary, Hash};
use tokio::time::Instant;

use crate::events::{CatalogEntry, EventSink, PeerEvent, PeerInfo, PeerState, Source};
use crate::net::client::PeerConnection;
use lanspread_proto::PeerId;

/// Most addresses to dial held at once. A 500-peer party needs one or two
/// per peer; beyond this, addresses from the network (peer exchange, mDNS,
/// dial-back) are refused until failed ones expire. Typed addresses are
/// always kept.
pub const MAX_CANDIDATES: usize = 1024;
/// Most addresses held for one peer id from the network: a machine has a
/// few interfaces, not hundreds.
pub const MAX_CANDIDATES_PER_PEER: usize = 4;
/// Most addresses held on one IP address (one machine) from the network:
/// one peer per machine at a party; tests and a host running several
/// peers stay far below.
pub const MAX_CANDIDATES_PER_IP: usize = 64;
/// An address from the network (not typed) that failed this many dials in
/// a row is forgotten: a lie or a peer that left costs a few dials, not
/// dials forever.
pub const MAX_FAILED_DIALS: u32 = 2;
/// A lost peer is dialled again at its last address for this long, then
/// left alone until it is heard of again (mDNS, peer exchange, or it dials
/// us).
pub const LOST_REDIAL_FOR: Duration = Duration::from_secs(10 * 60);
/// Most peers remembered, connected or lost. Beyond this the peer lost for
/// longest is forgotten.
pub const MAX_KNOWN_PEERS: usize = 2048;

/// An address to dial.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub expected: Option<PeerId>,
    pub source: Source,
    pub last_attempt: Option<Instant>,
    pub last_error: Option<String>,
    /// A dial task is on it; cleared when that task ends, however it ends
    /// (the task owns a guard, `liveness::InFlight`).
    pub in_flight: bool,
    /// It answered with our own id, or speaks another protocol version:
    /// never dial it again.
    pub is_self: bool,
    /// Dials that failed since the last that succeeded.
    pub failures: u32,
}

impl Candidate {
    fn new(expected: Option<PeerId>, source: Source) -> Self {
        Self {
            expected,
            source,
            last_attempt: None,
            last_error: None,
            in_flight: false,
            is_self: false,
            failures: 0,
        }
    }
}

pub(crate) struct RemotePeer {
    pub info: PeerInfo,
    pub connection: Option<PeerConnection>,
    pub games: Vec<GameSummary>,
    pub last_ok: Instant,
    /// UDP datagrams received on its connection at the last check: any
    /// traffic from it counts as a sign of life, not only ping answers
    /// (a busy peer may answer pings late).
    pub rx_datagrams: u64,
    /// It announced a library whose digest differs from that of `games`:
    /// list its games again.
    pub refresh: bool,
}

#[derive(Default)]
pub(crate) struct Table {
    pub peers: BTreeMap<PeerId, RemotePeer>,
    pub candidates: BTreeMap<SocketAddr, Candidate>,
    pub catalog: Vec<CatalogEntry>,
    pub catalog_dirty: bool,
}

impl Table {
    /// Remember `addr` as where `expected` (if given) listens, as `source`
    /// says. Typed addresses are always taken, and their expectation wins.
    /// Addresses from the network are bounded ([`MAX_CANDIDATES`],
    /// [`MAX_CANDIDATES_PER_PEER`], [`MAX_CANDIDATES_PER_IP`]), never change
    /// what an address already held is expected to be, and never bind the
    /// address of a peer we verified (by its TLS handshake) to another id.
    /// Returns whether the address is held now.
    pub(crate) fn admit(
        &mut self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        source: Source,
    ) -> bool {
        if let Some(entry) = self.candidates.get_mut(&addr) {
            if source == Source::Manual {
                entry.source = Source::Manual;
                if expected.is_some() {
                    entry.expected = expected;
                }
            }
            return true;
        }
        if source != Source::Manual {
            let verified_elsewhere = self
                .peers
                .iter()
                .any(|(id, p)| p.info.addr == Some(addr) && Some(id) != expected.as_ref());
            // A dial-back address comes from the peer itself, proven by
            // its handshake from that IP: hearsay cannot crowd it out.
            let hearsay = source != Source::Incoming;
            let for_peer = expected.as_ref().filter(|_| hearsay).map_or(0, |id| {
                self.candidates
                    .values()
                    .filter(|c| c.expected.as_ref() == Some(id))
                    .count()
            });
            let on_ip = self
                .candidates
                .keys()
                .filter(|a| a.ip() == addr.ip())
                .count();
            if verified_elsewhere
                || self.candidates.len() >= MAX_CANDIDATES
                || for_peer >= MAX_CANDIDATES_PER_PEER
                || on_ip >= MAX_CANDIDATES_PER_IP
            {
                return false;
            }
        }
        self.candidates
            .insert(addr, Candidate::new(expected, source));
        true
    }

    /// A dial of `addr` failed. An address from the network is forgotten
    /// after [`MAX_FAILED_DIALS`]; one that answered with another id than
    /// we were told is dialled next without an expectation, so hearsay
    /// cannot make a peer unreachable.
    pub(crate) fn handle_dial_failed(&mut self, addr: SocketAddr, error: String, wrong_peer: bool) {
        let Some(candidate) = self.candidates.get_mut(&addr) else {
            return;
        };
        candidate.failures += 1;
        candidate.last_error = Some(error);
        if candidate.source == Source::Manual {
            return;
        }
        if wrong_peer {
            candidate.expected = None;
        }
        if candidate.failures >= MAX_FAILED_DIALS {
            self.candidates.remove(&addr);
        }
    }

    /// Keep at most [`MAX_KNOWN_PEERS`]: forget the peers lost longest.
    pub(crate) fn forget_old_lost(&mut self) {
        while self.peers.len() > MAX_KNOWN_PEERS {
            let oldest = self
                .peers
                .iter()
                .filter(|(_, p)| p.info.state != PeerState::Connected)
                .min_by_key(|(_, p)| p.last_ok)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.peers.remove(&id),
                None => break,
            };
        }
    }
}

/// The shared table of peers.
pub struct PeerDirectory {
    // A std Mutex: short bookkeeping under it, never an await.
    table: Mutex<Table>,
    events: EventSink,
    our_id: PeerId,
}

impl PeerDirectory {
    pub fn new(our_id: PeerId, events: EventSink) -> Self {
        Self {
            table: Mutex::default(),
            events,
            our_id,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn emit(&self, event: PeerEvent) {
        self.events.emit(event);
    }

    pub fn our_id(&self) -> &PeerId {
        &self.our_id
    }

    /// Remember an address to dial, within the bounds of [`Table::admit`].
    /// Our own id and peers already connected at that address are ignored.
    pub fn add_candidate(&self, addr: SocketAddr, expected: Option<PeerId>, source: Source) {
        if expected.as_ref() == Some(&self.our_id) {
            return;
        }
        let mut table = self.lock();
        if let Some(id) = &expected {
            if let Some(peer) = table.peers.get(id) {
                if peer.info.state == PeerState::Connected && peer.info.addr == Some(addr) {
                    return;
                }
            }
        }
        if !table.admit(addr, expected, source) {
            tracing::debug!(%addr, ?source, "address not kept: the table is full for it");
        }
    }

    /// A peer that speaks another protocol version: listed, never dialled.
    pub fn mark_incompatible(&self, peer_id: PeerId, addr: SocketAddr, name: Option<&str>) {
        let mut table = self.lock();
        if let Some(candidate) = table.candidates.get_mut(&addr) {
            candidate.is_self = true; // never dialled again
        }
        let entry = table
            .peers
            .entry(peer_id.clone())
            .or_insert_with(|| RemotePeer {
                info: PeerInfo {
                    peer_id: peer_id.clone(),
                    display_name: String::new(),
                    addr: Some(addr),
                    state: PeerState::Incompatible,
                    rtt_ms: None,
                    games: 0,
                    source: Source::Mdns,
                    last_error: None,
                },
                connection: None,
                games: Vec::new(),
                last_ok: Instant::now(),
                rx_datagrams: 0,
                refresh: false,
            });
        if let Some(name) = name {
            entry.info.display_name = name.to_owned();
        }
        entry.info.state = PeerState::Incompatible;
        entry.info.last_error = Some("speaks another lanspread protocol version".into());
    }

    /// A peer said goodbye: it is lost now, not after the timeout.
    pub fn goodbye_from(&self, peer: &PeerId) {
        let lost = {
            let mut table = self.lock();
            match table.peers.get_mut(peer) {
                Some(p) if p.info.state == PeerState::Connected => {
                    p.info.state = PeerState::Lost;
                    p.info.last_error = Some("said goodbye".into());
                    p.connection = None;
                    table.catalog_dirty = true;
                    true
                }
                _ => false,
            }
        };
        if lost {
            self.emit(PeerEvent::PeerLost {
                peer_id: peer.clone(),
                reason: "said goodbye".into(),
            });
        }
    }

    /// A peer announced its library's digest (`LibraryChanged`): list its
    /// games again soon, unless the list we hold has that digest already
    /// (the announcement crossed our last listing, or nothing we see
    /// changed). Compares with [`games_digest`] of that list.
    pub fn library_changed(&self, peer: &PeerId, library_digest: &Hash) {
        if let Some(p) = self.lock().peers.get_mut(peer) {
            if games_digest(&p.games) != *library_digest {
                p.refresh = true;
            }
        }
    }

    /// Connected peers and their addresses, for peer exchange.
    pub fn exchange_list(&self) -> Vec<PeerAddr> {
        self.lock()
            .peers
            .values()
            .filter(|p| p.info.state == PeerState::Connected)
            .filter_map(|p| {
                Some(PeerAddr {
                    peer_id: p.info.peer_id.to_string(),
                    addrs: vec![p.info.addr?],
                })
            })
            .collect()
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.lock().peers.values().map(|p| p.info.clone()).collect()
    }

    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.lock().catalog.clone()
    }

    /// Connected peers that have `version_id`, with whether they have all of it.
    pub fn sources_of(
        &self,
        version_id: &lanspread_proto::VersionId,
    ) -> Vec<(PeerId, PeerConnection, bool)> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, p)| p.info.state == PeerState::Connected)
            .filter_map(|(id, p)| {
                let game = p.games.iter().find(|g| g.version_id == *version_id)?;
                Some((id.clone(), p.connection.clone()?, game.complete))
            })
            .collect()
    }

    /// Connected peers whose games list the picture `hash`.
    pub(crate) fn holders_of_thumbnail(
        &self,
        hash: &lanspread_proto::Hash,
    ) -> Vec<(PeerId, PeerConnection)> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, p)| p.info.state == PeerState::Connected)
            .filter(|(_, p)| p.games.iter().any(|g| g.thumbnail.as_ref() == Some(hash)))
            .filter_map(|(id, p)| Some((id.clone(), p.connection.clone()?)))
            .collect()
    }

    pub(crate) fn connected(&self) -> Vec<(PeerId, PeerConnection)> {
        self.lock()
            .peers
            .iter()
            .filter_map(|(id, p)| Some((id.clone(), p.connection.clone()?)))
            .collect()
    }

    /// Drop every connection handle (after the runtime stopped): the UDP
    /// socket is released once no connection refers to the endpoint.
    pub(crate) fn forget_connections(&self) {
        for peer in self.lock().peers.values_mut() {
            peer.connection = None;
        }
    }

    /// Tell every connected peer we are leaving; waits at most `within`.
    pub async fn goodbye_all(&self, within: Duration) {
        let connections = self.connected();
        let farewells = connections.iter().map(|(_, c)| c.goodbye());
        let _ = tokio::time::timeout(within, futures::future::join_all(farewells)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::identity::Identity;

    fn game(game_id: &str, version: u8) -> GameSummary {
        GameSummary {
            game_id: game_id.into(),
            version_id: Hash([version; 32]),
            title: game_id.into(),
            description: None,
            genre: None,
            min_players: None,
            max_players: None,
            version_label: None,
            total_size: 1,
            n_files: 1,
            thumbnail: None,
            complete: true,
        }
    }

    /// A directory holding one peer, connected, whose games we listed.
    fn directory_with(peer: &PeerId, games: Vec<GameSummary>) -> PeerDirectory {
        let (events, _) = EventSink::new(16);
        let directory = PeerDirectory::new(Identity::ephemeral().peer_id().clone(), events);
        let info = PeerInfo {
            peer_id: peer.clone(),
            display_name: "host".into(),
            addr: None,
            state: PeerState::Connected,
            rtt_ms: None,
            games: games.len(),
            source: Source::Manual,
            last_error: None,
        };
        directory.lock().peers.insert(
            peer.clone(),
            RemotePeer {
                info,
                connection: None,
                games,
                last_ok: Instant::now(),
                rx_datagrams: 0,
                refresh: false,
            },
        );
        directory
    }

    fn check(listed: Vec<GameSummary>, announced: &[GameSummary], refresh: bool) {
        let peer = Identity::ephemeral().peer_id().clone();
        let directory = directory_with(&peer, listed);
        directory.library_changed(&peer, &games_digest(announced));
        assert_eq!(directory.lock().peers[&peer].refresh, refresh);
    }

    /// Bug: `LibraryChanged` carried a digest that nobody read: every
    /// announcement made us list the peer's games again, even when the list
    /// we held was already the announced one. Now only a different digest
    /// does.
    #[test]
    fn a_peer_is_listed_again_only_when_its_digest_differs() {
        let listed = vec![game("quake", 1), game("doom", 2)];
        // The same games, in another order: nothing to fetch.
        check(listed.clone(), &[game("doom", 2), game("quake", 1)], false);
        check(Vec::new(), &[], false);
        // A new version, a game more, a game fewer: list again.
        check(listed.clone(), &[game("quake", 3), game("doom", 2)], true);
        check(
            listed.clone(),
            &[game("quake", 1), game("doom", 2), game("hl", 4)],
            true,
        );
        check(listed, &[game("quake", 1)], true);
    }

    fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    fn id() -> PeerId {
        Identity::ephemeral().peer_id().clone()
    }

    #[test]
    fn addresses_from_the_network_are_bounded_in_total_per_peer_and_per_ip() {
        let mut table = Table::default();
        // One liar naming one id at many addresses.
        let liar = id();
        let held = (0..100)
            .filter(|&i| table.admit(addr([10, 0, 1, i], 1), Some(liar.clone()), Source::Exchange))
            .count();
        assert_eq!(held, MAX_CANDIDATES_PER_PEER);
        // Many ids on one machine.
        let held = (0..1000)
            .filter(|&port| table.admit(addr([10, 0, 2, 1], port), Some(id()), Source::Incoming))
            .count();
        assert_eq!(held, MAX_CANDIDATES_PER_IP);
        // Many ids on many machines.
        for i in 0..(4 * MAX_CANDIDATES) {
            let ip = [10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
            table.admit(addr(ip, 1), Some(id()), Source::Exchange);
        }
        assert_eq!(table.candidates.len(), MAX_CANDIDATES);
        // A typed address is still taken.
        assert!(table.admit(addr([192, 168, 1, 1], 1), None, Source::Manual));
    }

    #[test]
    fn hearsay_never_rebinds_an_address_to_another_id() {
        let mut table = Table::default();
        let (honest, liar) = (id(), id());
        let at = addr([10, 0, 0, 1], 27600);
        let directory = directory_with(&honest, Vec::new());
        let verified = directory.lock().peers.remove(&honest).unwrap();
        table.peers.insert(honest.clone(), verified);
        table.peers.get_mut(&honest).unwrap().info.addr = Some(at);
        // Verified there: hearsay naming another id at it is refused.
        assert!(!table.admit(at, Some(liar.clone()), Source::Exchange));
        // Held without an expectation: hearsay does not add one.
        let other = addr([10, 0, 0, 2], 27600);
        assert!(table.admit(other, None, Source::Mdns));
        assert!(table.admit(other, Some(liar.clone()), Source::Exchange));
        assert_eq!(table.candidates[&other].expected, None);
        // A typed expectation wins.
        assert!(table.admit(other, Some(honest.clone()), Source::Manual));
        assert_eq!(table.candidates[&other].expected, Some(honest));
    }

    #[test]
    fn failed_addresses_from_the_network_expire_and_wrong_ids_are_dropped() {
        let mut table = Table::default();
        let (told, typed) = (addr([10, 0, 0, 1], 1), addr([10, 0, 0, 2], 1));
        table.admit(told, Some(id()), Source::Exchange);
        table.admit(typed, Some(id()), Source::Manual);
        table.handle_dial_failed(told, "is another peer".into(), true);
        assert_eq!(
            table.candidates[&told].expected, None,
            "dialled as whoever is there"
        );
        for _ in 0..MAX_FAILED_DIALS {
            table.handle_dial_failed(told, "timed out".into(), false);
            table.handle_dial_failed(typed, "timed out".into(), true);
        }
        assert!(!table.candidates.contains_key(&told));
        let kept = &table.candidates[&typed];
        assert!(kept.expected.is_some(), "a typed id stays");
        assert_eq!(kept.failures, MAX_FAILED_DIALS);
    }

    #[test]
    fn an_unknown_peer_announcing_is_ignored() {
        let (events, _) = EventSink::new(16);
        let directory = PeerDirectory::new(Identity::ephemeral().peer_id().clone(), events);
        let stranger = Identity::ephemeral().peer_id().clone();
        directory.library_changed(&stranger, &games_digest(&[game("quake", 1)]));
        assert!(directory.lock().peers.is_empty());
    }
}
