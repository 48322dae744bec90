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

    /// Remember an address to dial. Our own id and peers already connected
    /// at that address are ignored.
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
        let entry = table.candidates.entry(addr).or_insert_with(|| Candidate {
            expected: expected.clone(),
            source,
            last_attempt: None,
            last_error: None,
            in_flight: false,
            is_self: false,
        });
        // A typed (manual) expectation wins over what others told us.
        if expected.is_some() && (entry.expected.is_none() || source == Source::Manual) {
            entry.expected = expected;
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

    #[test]
    fn an_unknown_peer_announcing_is_ignored() {
        let (events, _) = EventSink::new(16);
        let directory = PeerDirectory::new(Identity::ephemeral().peer_id().clone(), events);
        let stranger = Identity::ephemeral().peer_id().clone();
        directory.library_changed(&stranger, &games_digest(&[game("quake", 1)]));
        assert!(directory.lock().peers.is_empty());
    }
}
