//! The liveness service: dials known addresses, pings connected peers,
//! declares silent ones lost, lists games, exchanges peers, and keeps the
//! catalog current. Policy `Restart`: all state lives in the directory, so a
//! restart only re-dials.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lanspread_proto::wire::{PeerAddr, Request, Response};
use lanspread_proto::GameSummary;
use quinn::Endpoint;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use super::catalog::build_catalog;
use super::{PeerDirectory, RemotePeer, LOST_REDIAL_FOR};
use crate::events::{PeerEvent, PeerInfo, PeerState, Source};
use crate::library::monitor::Library;
use crate::net::client::{connect, ClientHello, ConnectError, PeerConnection};
use crate::net::identity::{Identity, PeerId};
use crate::offer::Offer;
use crate::supervisor::ServiceContext;

/// How often the loop looks at the table.
const TICK: Duration = Duration::from_millis(250);
/// Ping interval per connected peer.
const PING_EVERY: Duration = Duration::from_secs(1);
/// A failed or lost address is dialled again after this.
const REDIAL_AFTER: Duration = Duration::from_secs(2);
/// Peer exchange interval.
const EXCHANGE_EVERY: Duration = Duration::from_secs(3);
/// Time allowed for one dial (QUIC + Hello + game list).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for `lost_after`: a peer silent this long is lost. Pings go out
/// every second, so this is three missed answers.
pub const DEFAULT_LOST_AFTER: Duration = Duration::from_secs(3);

/// What the liveness loop needs.
pub struct Liveness {
    pub directory: Arc<PeerDirectory>,
    pub endpoint: Endpoint,
    pub identity: Arc<Identity>,
    pub library: Arc<Library>,
    /// What we offer: its digest goes with every library-changed notice.
    pub offer: Arc<Offer>,
    pub display_name: String,
    pub party_key: Option<[u8; 32]>,
    pub listen_port: u16,
    pub lost_after: Duration,
}

enum Outcome {
    Dialed {
        addr: SocketAddr,
        result: Result<(PeerConnection, Vec<GameSummary>), ConnectError>,
        /// Dropped once the result is handled, so the address is not dialled
        /// again between the dial's end and its bookkeeping.
        in_flight: InFlight,
    },
    Pinged {
        peer: PeerId,
        ok: bool,
    },
    Listed {
        peer: PeerId,
        games: Option<Vec<GameSummary>>,
    },
    Exchanged(Vec<PeerAddr>),
    Told,
}

pub async fn run(ctx: ServiceContext, live: Arc<Liveness>) -> anyhow::Result<()> {
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut library = live.library.subscribe();
    library.mark_changed();
    let mut tick = tokio::time::interval(TICK);
    let mut last_ping = Instant::now();
    let mut last_exchange = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = ctx.token().cancelled() => return Ok(()),
            Some(done) = tasks.join_next() => {
                if let Ok(outcome) = done {
                    live.handle_outcome(outcome, &mut tasks);
                }
            }
            changed = library.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the library went away");
                }
                // Our offer changed: tell every connected peer.
                library.borrow_and_update();
                let digest = live.offer.digest();
                for (_, conn) in live.directory.connected() {
                    tasks.spawn(async move {
                        let _ = timeout(DIAL_TIMEOUT, conn.request(&Request::LibraryChanged { library_digest: digest })).await;
                        Outcome::Told
                    });
                }
                live.directory.lock().catalog_dirty = true;
            }
            _ = tick.tick() => {
                ctx.heartbeat();
                live.dial_due(&mut tasks);
                live.check_lost();
                live.refresh_flagged(&mut tasks);
                if last_ping.elapsed() >= PING_EVERY {
                    last_ping = Instant::now();
                    live.ping_all(&mut tasks);
                }
                if last_exchange.elapsed() >= EXCHANGE_EVERY {
                    last_exchange = Instant::now();
                    live.exchange(&mut tasks);
                }
                live.publish_catalog();
            }
        }
    }
}

impl Liveness {
    fn hello(&self) -> ClientHello<'_> {
        ClientHello {
            identity: &self.identity,
            display_name: self.display_name.clone(),
            library_digest: self.offer.digest(),
            party_key: self.party_key,
            listen_port: self.listen_port,
        }
    }

    fn dial_due(self: &Arc<Self>, tasks: &mut JoinSet<Outcome>) {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut table = self.directory.lock();
            // Lost peers are dialled again at the address we knew.
            // Lost peers are dialled again at the address we knew, for
            // `LOST_REDIAL_FOR`.
            let lost: Vec<(SocketAddr, PeerId)> = table
                .peers
                .iter()
                .filter(|(_, p)| p.info.state == PeerState::Lost)
                .filter(|(_, p)| now.duration_since(p.last_ok) < LOST_REDIAL_FOR)
                .filter_map(|(id, p)| Some((p.info.addr?, id.clone())))
                .collect();
            for (addr, id) in lost {
                table.candidates.entry(addr).or_insert_with(|| {
                    let mut candidate = super::Candidate::new(Some(id), Source::Exchange);
                    candidate.last_attempt = Some(now);
                    candidate
                });
            }
            table.forget_old_lost();
            let connected: Vec<SocketAddr> = table
                .peers
                .values()
                .filter(|p| p.info.state == PeerState::Connected)
                .filter_map(|p| p.info.addr)
                .collect();
            let connected_ids: Vec<PeerId> = table
                .peers
                .iter()
                .filter(|(_, p)| p.info.state == PeerState::Connected)
                .map(|(id, _)| id.clone())
                .collect();
            for (addr, candidate) in table.candidates.iter_mut() {
                let busy = candidate.in_flight || candidate.is_self;
                let recent = candidate
                    .last_attempt
                    .is_some_and(|t| now.duration_since(t) < REDIAL_AFTER);
                let known = connected.contains(addr)
                    || candidate
                        .expected
                        .as_ref()
                        .is_some_and(|id| connected_ids.contains(id));
                if busy || recent || known {
                    continue;
                }
                candidate.in_flight = true;
                candidate.last_attempt = Some(now);
                due.push((*addr, candidate.expected.clone()));
            }
        }
        for (addr, expected) in due {
            let live = self.clone();
            // Made outside the table lock: its drop takes that lock.
            let in_flight = InFlight {
                directory: self.directory.clone(),
                addr,
            };
            tasks.spawn(async move {
                let result = live.dial(addr, expected).await;
                Outcome::Dialed {
                    addr,
                    result,
                    in_flight,
                }
            });
        }
    }

    async fn dial(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<(PeerConnection, Vec<GameSummary>), ConnectError> {
        let attempt = async {
            let conn = connect(&self.endpoint, addr, expected, self.hello()).await?;
            let games = list_games(&conn).await.unwrap_or_default();
            Ok((conn, games))
        };
        timeout(DIAL_TIMEOUT, attempt).await.unwrap_or_else(|_| {
            Err(ConnectError::Unreachable {
                addr,
                reason: "timed out".into(),
            })
        })
    }

    fn handle_outcome(&self, outcome: Outcome, tasks: &mut JoinSet<Outcome>) {
        match outcome {
            Outcome::Dialed {
                addr,
                result,
                in_flight,
            } => {
                let connected = self.handle_dialed(addr, result);
                // After the table lock above is released: this takes it.
                drop(in_flight);
                if let Some(conn) = connected {
                    // It may have listed our games before we finished
                    // indexing and before this connection could tell it of
                    // the change: tell it now, so it lists us again.
                    let digest = self.offer.digest();
                    tasks.spawn(async move {
                        let notice = Request::LibraryChanged {
                            library_digest: digest,
                        };
                        let _ = timeout(DIAL_TIMEOUT, conn.request(&notice)).await;
                        Outcome::Told
                    });
                }
            }
            Outcome::Pinged { peer, ok } => {
                if ok {
                    let mut table = self.directory.lock();
                    if let Some(p) = table.peers.get_mut(&peer) {
                        p.last_ok = Instant::now();
                        p.info.rtt_ms = p
                            .connection
                            .as_ref()
                            .map(|c| c.connection.rtt().as_secs_f64() * 1000.0);
                    }
                }
            }
            Outcome::Listed { peer, games } => {
                if let Some(games) = games {
                    let mut table = self.directory.lock();
                    if let Some(p) = table.peers.get_mut(&peer) {
                        p.info.games = games.len();
                        p.games = games;
                        table.catalog_dirty = true;
                    }
                }
            }
            Outcome::Exchanged(peers) => {
                for peer in peers {
                    let Some(id) = PeerId::parse(&peer.peer_id) else {
                        continue;
                    };
                    for addr in peer.addrs.into_iter().take(4) {
                        self.directory
                            .add_candidate(addr, Some(id.clone()), Source::Exchange);
                    }
                }
            }
            Outcome::Told => {}
        }
    }

    fn handle_dialed(
        &self,
        addr: SocketAddr,
        result: Result<(PeerConnection, Vec<GameSummary>), ConnectError>,
    ) -> Option<PeerConnection> {
        let mut table = self.directory.lock();
        let source = table.candidates.get(&addr).map(|c| c.source);
        let candidate = table.candidates.get_mut(&addr)?;
        let (conn, games) = match result {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(%addr, "dial failed: {e}");
                if matches!(e, ConnectError::IncompatibleVersion { .. }) {
                    candidate.last_error = Some(e.to_string());
                    if let Some(id) = candidate.expected.clone() {
                        drop(table);
                        self.directory.mark_incompatible(id, addr, None);
                    }
                    return None;
                }
                let wrong_peer = matches!(e, ConnectError::WrongPeer { .. });
                table.handle_dial_failed(addr, e.to_string(), wrong_peer);
                return None;
            }
        };
        if conn.peer_id == *self.directory.our_id() {
            candidate.is_self = true;
            conn.connection.close(0u32.into(), b"that is us");
            return None;
        }
        candidate.last_error = None;
        candidate.failures = 0;
        let peer_id = conn.peer_id.clone();
        let info = PeerInfo {
            peer_id: peer_id.clone(),
            display_name: conn.hello.display_name.clone(),
            addr: Some(addr),
            state: PeerState::Connected,
            rtt_ms: Some(conn.connection.rtt().as_secs_f64() * 1000.0),
            games: games.len(),
            source: source.unwrap_or(Source::Manual),
            last_error: None,
        };
        if let Some(old) = table.peers.get(&peer_id) {
            if old.info.state == PeerState::Connected && old.connection.is_some() {
                // Already connected by another address: keep the first.
                conn.connection.close(0u32.into(), b"duplicate");
                return None;
            }
        }
        let kept = conn.clone();
        table.peers.insert(
            peer_id.clone(),
            RemotePeer {
                info: info.clone(),
                connection: Some(conn),
                games,
                last_ok: Instant::now(),
                rx_datagrams: 0,
                refresh: false,
            },
        );
        table.catalog_dirty = true;
        drop(table);
        tracing::info!(peer = %peer_id, %addr, name = %info.display_name, "peer discovered");
        self.directory
            .emit(PeerEvent::PeerDiscovered { peer: info });
        Some(kept)
    }

    fn check_lost(&self) {
        let mut lost = Vec::new();
        {
            let mut table = self.directory.lock();
            for (id, peer) in table.peers.iter_mut() {
                if peer.info.state != PeerState::Connected {
                    continue;
                }
                if let Some(conn) = &peer.connection {
                    let rx = conn.connection.stats().udp_rx.datagrams;
                    if rx != peer.rx_datagrams {
                        peer.rx_datagrams = rx;
                        peer.last_ok = Instant::now();
                    }
                }
                let closed = peer
                    .connection
                    .as_ref()
                    .and_then(|c| c.connection.close_reason());
                let silent = peer.last_ok.elapsed() > self.lost_after;
                if closed.is_none() && !silent {
                    continue;
                }
                let reason = match closed {
                    Some(reason) => format!("connection closed: {reason}"),
                    None => format!("no answer for {:?}", self.lost_after),
                };
                peer.info.state = PeerState::Lost;
                peer.info.last_error = Some(reason.clone());
                peer.info.rtt_ms = None;
                if let Some(conn) = peer.connection.take() {
                    conn.connection.close(0u32.into(), b"lost");
                }
                lost.push((id.clone(), reason));
            }
            if !lost.is_empty() {
                table.catalog_dirty = true;
            }
        }
        for (peer, reason) in lost {
            tracing::info!(%peer, %reason, "peer lost");
            self.directory.emit(PeerEvent::PeerLost {
                peer_id: peer.clone(),
                reason,
            });
        }
    }

    fn ping_all(&self, tasks: &mut JoinSet<Outcome>) {
        for (peer, conn) in self.directory.connected() {
            tasks.spawn(async move {
                let answer = timeout(PING_EVERY, conn.request(&Request::Ping { nonce: 0 })).await;
                let ok = matches!(answer, Ok(Ok(Response::Pong { .. })));
                Outcome::Pinged { peer, ok }
            });
        }
    }

    fn refresh_flagged(&self, tasks: &mut JoinSet<Outcome>) {
        let flagged: Vec<(PeerId, PeerConnection)> = {
            let mut table = self.directory.lock();
            table
                .peers
                .iter_mut()
                .filter(|(_, p)| p.refresh)
                .filter_map(|(id, p)| {
                    p.refresh = false;
                    Some((id.clone(), p.connection.clone()?))
                })
                .collect()
        };
        for (peer, conn) in flagged {
            tasks.spawn(async move {
                let games = timeout(DIAL_TIMEOUT, list_games(&conn))
                    .await
                    .ok()
                    .flatten();
                Outcome::Listed { peer, games }
            });
        }
    }

    fn exchange(&self, tasks: &mut JoinSet<Outcome>) {
        for (_, conn) in self.directory.connected() {
            tasks.spawn(async move {
                match timeout(DIAL_TIMEOUT, conn.request(&Request::GetPeers)).await {
                    Ok(Ok(Response::Peers(peers))) => Outcome::Exchanged(peers),
                    _ => Outcome::Told,
                }
            });
        }
    }

    fn publish_catalog(&self) {
        let catalog = {
            let mut table = self.directory.lock();
            if !table.catalog_dirty {
                return;
            }
            table.catalog_dirty = false;
            let local = self.library.snapshot();
            let catalog = build_catalog(
                &local,
                table
                    .peers
                    .iter()
                    .filter(|(_, p)| p.info.state == PeerState::Connected)
                    .map(|(id, p)| (id, &p.games[..])),
            );
            if catalog == table.catalog {
                return;
            }
            table.catalog = catalog.clone();
            catalog
        };
        self.directory.emit(PeerEvent::CatalogChanged { catalog });
    }
}

/// An address being dialled. The dial task owns it, and its drop clears the
/// candidate's `in_flight` mark however the task ends: with a result, with a
/// panic, or aborted because the service stopped or restarted and dropped
/// its `JoinSet`. Without it a restart mid-dial left the address marked
/// forever, never dialled again. Never drop it under the table lock.
struct InFlight {
    directory: Arc<PeerDirectory>,
    addr: SocketAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(candidate) = self.directory.lock().candidates.get_mut(&self.addr) {
            candidate.in_flight = false;
        }
    }
}

async fn list_games(conn: &PeerConnection) -> Option<Vec<GameSummary>> {
    match conn.request(&Request::ListGames).await {
        Ok(Response::Games(games)) => Some(games),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use crate::events::EventSink;

    use super::*;
    use crate::health::HealthBoard;
    use crate::library::Indexer;
    use crate::store::Store;
    use crate::supervisor::{Backoff, SupervisionPolicy, Supervisor};

    /// Every wait of these tests ends within this, or the test fails.
    const WITHIN: Duration = Duration::from_secs(10);

    struct Rig {
        live: Arc<Liveness>,
        events: EventSink,
        _games: tempfile::TempDir,
    }

    fn rig() -> Rig {
        let games = tempfile::tempdir().unwrap();
        let (events, _) = EventSink::new(256);
        let identity = Arc::new(Identity::ephemeral());
        let directory = Arc::new(PeerDirectory::new(
            identity.peer_id().clone(),
            events.clone(),
        ));
        let store = Arc::new(Store::open_in_memory().unwrap());
        let library = Arc::new(Library::new(
            Indexer::new(games.path().to_owned(), store),
            events.clone(),
            Duration::ZERO,
        ));
        let offer = Arc::new(crate::offer::Offer::new(library.clone()));
        let endpoint =
            crate::net::bind_endpoint("127.0.0.1:0".parse().unwrap(), None).expect("bind");
        let live = Arc::new(Liveness {
            directory,
            endpoint,
            identity,
            library,
            offer,
            display_name: "tester".into(),
            party_key: None,
            listen_port: 0,
            lost_after: DEFAULT_LOST_AFTER,
        });
        Rig {
            live,
            events,
            _games: games,
        }
    }

    /// One run of the service under the supervisor, as the runtime starts it.
    struct Run {
        token: CancellationToken,
        tasks: crate::tasks::RuntimeTasks,
    }

    impl Run {
        fn start(rig: &Rig) -> Self {
            let (token, tasks) = (CancellationToken::new(), crate::tasks::RuntimeTasks::new());
            let supervisor = Supervisor::new(
                tasks.clone(),
                token.clone(),
                HealthBoard::new(rig.events.clone()),
                rig.events.clone(),
            );
            let live = rig.live.clone();
            supervisor.spawn_supervised_service(
                "liveness",
                SupervisionPolicy::Restart(Backoff::DEFAULT),
                move |ctx| run(ctx, live.clone()),
            );
            Run { token, tasks }
        }

        async fn stop(self) {
            self.token.cancel();
            self.tasks.close();
            timeout(WITHIN, self.tasks.wait())
                .await
                .expect("the liveness service stops when cancelled");
        }
    }

    fn in_flight(live: &Liveness, addr: SocketAddr) -> bool {
        live.directory.lock().candidates[&addr].in_flight
    }

    /// The destination connection id of a QUIC long-header packet: a new
    /// dial picks a new one; a retransmission or a close repeats it.
    fn connection_id(datagram: &[u8]) -> Option<Vec<u8>> {
        // Flags (top bit set), 4 bytes of version, the id's length, the id.
        if datagram.first()? & 0x80 == 0 {
            return None;
        }
        let len = *datagram.get(5)? as usize;
        datagram.get(6..6 + len).map(<[u8]>::to_vec)
    }

    /// Wait for a dial to `hole` other than those in `seen`; returns its id.
    async fn next_dial(hole: &tokio::net::UdpSocket, seen: &[Vec<u8>]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        timeout(WITHIN, async {
            loop {
                let (len, _) = hole.recv_from(&mut buf).await.unwrap();
                match connection_id(&buf[..len]) {
                    Some(id) if !seen.contains(&id) => return id,
                    _ => continue,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no new dial within {WITHIN:?}"))
    }

    /// Bug: a liveness run stopped mid-dial (a restart, or shutdown) dropped
    /// its `JoinSet` and with it the dial's outcome, the only thing that
    /// cleared the address's `in_flight` mark: the address was never dialled
    /// again. The address here never answers (a socket that only reads, to
    /// see the dials), so the first run is always stopped mid-dial.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_address_dialled_when_the_service_stops_is_dialled_by_the_next_run() {
        let rig = rig();
        let hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = hole.local_addr().unwrap();
        rig.live.directory.add_candidate(addr, None, Source::Manual);

        let first = Run::start(&rig);
        let first_dial = next_dial(&hole, &[]).await;
        assert!(in_flight(&rig.live, addr), "marked while being dialled");
        first.stop().await;

        // The aborted dial task drops soon after its JoinSet went.
        timeout(WITHIN, async {
            while in_flight(&rig.live, addr) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the stopped dial no longer marks the address in flight");

        let second = Run::start(&rig);
        next_dial(&hole, &[first_dial]).await;
        second.stop().await;
        rig.live.endpoint.close(0u32.into(), b"test over");
    }

    /// A dial task that panics clears its mark too (the task is dropped
    /// while unwinding, and the guard with it).
    #[tokio::test]
    async fn a_dial_task_that_panics_clears_its_mark() {
        let rig = rig();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        rig.live.directory.add_candidate(addr, None, Source::Manual);
        rig.live
            .directory
            .lock()
            .candidates
            .get_mut(&addr)
            .unwrap()
            .in_flight = true;
        let guard = InFlight {
            directory: rig.live.directory.clone(),
            addr,
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let _guard = guard;
            panic!("the dial blew up");
        });
        let joined = tasks.join_next().await.expect("one task");
        assert!(joined.unwrap_err().is_panic());
        assert!(!in_flight(&rig.live, addr));
    }
}
