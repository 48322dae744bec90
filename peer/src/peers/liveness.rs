//! The liveness service: the control plane's loop. It dials addresses it
//! is told of to check who is there, holds connections to the few peers it
//! watches (ring neighbours, `membership.rs`) and to those a download or a
//! picture wants, finds dead connections, checks rumours, passes news
//! (gossip) to the peers it watches, lists games when a library digest
//! changes, and keeps the catalog current. Policy `Restart`: all state
//! lives in the directory, so a restart only re-dials.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lanspread_proto::wire::{
    games_digest, PeerRecord, Request, Response, WireLineup, MAX_GOSSIP_RECORDS,
};
use lanspread_proto::{GameSummary, Hash};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use super::catalog::build_catalog;
use super::dialer::Dialer;
use super::membership::watch_targets;
use super::{PeerDirectory, RemotePeer, LOST_REDIAL_FOR, REDIAL_MAX};
use crate::events::{PeerEvent, PeerInfo, PeerState, Source};
use crate::library::monitor::Library;
use crate::net::client::{ConnectError, PeerConnection};
use crate::net::close_code;
use crate::net::identity::PeerId;
use crate::offer::Offer;
use crate::supervisor::ServiceContext;

/// How often the loop looks at the table while anything is going on: a
/// download's source (silent for `lost_after` is dead), a dial, a peer to
/// check, news to pass on.
const TICK: Duration = Duration::from_millis(250);
/// How often it looks when nothing is: a watched peer is dead after
/// [`WATCH_LOST_AFTER`] of silence, which this granularity hardly changes,
/// and a closed connection wakes the loop by itself. Each look is a wake-up
/// of the runtime, and an idle peer's CPU is mostly wake-ups.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// An address we were told of is dialled again after this.
const REDIAL_AFTER: Duration = Duration::from_secs(2);
/// Time allowed for one dial (QUIC + Hello + game list).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a dial that checks whether a peer is still there (its
/// connection died, or another peer says it is gone). A LAN answers within
/// milliseconds; a loaded peer within this.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection to a peer we watch, and that nothing else uses, is dead
/// after this long without a datagram. The client side sends keep-alives
/// every `tls::KEEP_ALIVE`, so this is two missed answers.
pub const WATCH_LOST_AFTER: Duration = Duration::from_secs(4);
/// Peer exchange with one watched peer this often. In sync, only a digest
/// crosses.
const SYNC_EVERY: Duration = Duration::from_secs(30);
/// Default for `lost_after`: a connection a download (or a picture fetch)
/// uses is dead after this long without a datagram. A download keeps asking
/// its sources, so silence means the source is gone.
pub const DEFAULT_LOST_AFTER: Duration = Duration::from_secs(3);

/// What the liveness loop needs.
pub struct Liveness {
    pub directory: Arc<PeerDirectory>,
    pub dialer: Arc<Dialer>,
    pub library: Arc<Library>,
    /// What we offer: its digest is our record's.
    pub offer: Arc<Offer>,
    pub lost_after: Duration,
}

/// What a dial is for.
#[derive(Debug, Clone)]
enum Target {
    /// An address we were told of: who is there?
    Address,
    /// A peer we know: connect, check it is still there, or find it again.
    Peer(PeerId),
}

enum Outcome {
    Dialed {
        addr: SocketAddr,
        target: Target,
        result: Result<(PeerConnection, Option<Vec<GameSummary>>), ConnectError>,
        /// Dropped once the result is handled, so the address is not dialled
        /// again between the dial's end and its bookkeeping.
        in_flight: InFlight,
    },
    Listed {
        peer: PeerId,
        games: Option<Vec<GameSummary>>,
    },
    Synced {
        from: PeerId,
        addr: SocketAddr,
        records: Vec<PeerRecord>,
    },
    /// Its lineup, as it served it.
    Lineup {
        peer: PeerId,
        lineup: Option<WireLineup>,
    },
    Told,
}

/// A lineup that could not be fetched is asked for again after this.
const LINEUP_RETRY: Duration = Duration::from_secs(2);

pub async fn run(ctx: ServiceContext, live: Arc<Liveness>) -> anyhow::Result<()> {
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut closes = Closes::default();
    let mut library = live.library.subscribe();
    library.mark_changed();
    let mut next_tick = Instant::now();
    let mut last_sync: Option<Instant> = None;
    let mut synced = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = ctx.token().cancelled() => return Ok(()),
            Some(done) = tasks.join_next() => {
                if let Ok(outcome) = done {
                    live.handle_outcome(outcome);
                }
                live.act(&mut tasks);
                closes.watch_new(&live.directory);
            }
            Some(closed) = closes.waiting.join_next() => {
                if let Ok(id) = closed {
                    closes.held.remove(&id);
                }
                // A goodbye (close code 5) is taken at once, not at the next
                // look; any other close makes its peer one to check.
                live.check_connections();
                live.act(&mut tasks);
            }
            _ = live.directory.woken() => live.act(&mut tasks),
            changed = library.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the library went away");
                }
                library.borrow_and_update();
                // Our offer changed: a new version of our record, told to
                // the peers we watch (and announced by mDNS).
                live.directory.set_own_digest(live.offer.digest());
                live.directory.lock().catalog_dirty = true;
            }
            () = tokio::time::sleep_until(next_tick) => {
                ctx.heartbeat();
                live.check_connections();
                live.update_watch();
                live.dial_due(&mut tasks);
                live.refresh_flagged(&mut tasks);
                live.send_outbox(&mut tasks);
                if last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY)
                    && live.sync(&mut tasks, synced)
                {
                    last_sync = Some(Instant::now());
                    synced += 1;
                }
                live.publish_catalog();
                closes.watch_new(&live.directory);
                next_tick = Instant::now() + IDLE_TICK;
            }
        }
        // While anything is going on (news may have started it), look again
        // within a busy tick.
        if live.busy(&tasks) {
            next_tick = next_tick.min(Instant::now() + TICK);
        }
    }
}

/// A task per connection the directory holds, returning when it closes
/// (by its stable id), so a peer's goodbye or a closed link is seen at once.
/// Every place that drops a held connection closes it, so a waiting task
/// never keeps one open.
#[derive(Default)]
struct Closes {
    waiting: JoinSet<usize>,
    held: std::collections::HashSet<usize>,
}

impl Closes {
    fn watch_new(&mut self, directory: &PeerDirectory) {
        let table = directory.lock();
        for peer in table.peers.values() {
            let Some(conn) = &peer.connection else {
                continue;
            };
            let id = conn.connection.stable_id();
            if self.held.insert(id) {
                let connection = conn.connection.clone();
                self.waiting.spawn(async move {
                    connection.closed().await;
                    id
                });
            }
        }
    }
}

impl Liveness {
    /// Whether anything is going on that wants the busy tick: tasks in
    /// flight, a peer a download or a picture wants, a peer to check, a
    /// dial due or in flight, gossip to send, an address to try.
    fn busy(&self, tasks: &JoinSet<Outcome>) -> bool {
        if !tasks.is_empty() {
            return true;
        }
        let now = Instant::now();
        let table = self.directory.lock();
        !table.outbox.is_empty()
            || !table.dialing.is_empty()
            || table
                .candidates
                .values()
                .any(|c| !c.is_self && (c.last_attempt.is_none() || c.failures > 0))
            || table.peers.values().any(|p| {
                p.wanted(now)
                    || p.suspect.is_some()
                    || p.redial.is_some()
                    || p.refresh
                    || p.lineup_refresh
                    || p.needs_connection(now) && p.connection.is_none()
            })
    }

    /// What news calls for at once: dials, listings, gossip, the catalog.
    /// (Finding dead connections and peer exchange wait for the tick.)
    fn act(self: &Arc<Self>, tasks: &mut JoinSet<Outcome>) {
        self.update_watch();
        self.dial_due(tasks);
        self.refresh_flagged(tasks);
        self.send_outbox(tasks);
        self.publish_catalog();
    }

    fn dial_due(self: &Arc<Self>, tasks: &mut JoinSet<Outcome>) {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut table = self.directory.lock();
            let table = &mut *table;
            table.forget_old_lost();
            // Peers we know: connect to those that need it, dial lost ones
            // again on their schedule.
            for (id, p) in table.peers.iter_mut() {
                let Some(addr) = p.info.addr else { continue };
                if table.dialing.contains(id) {
                    continue;
                }
                let dial = match p.info.state {
                    PeerState::Connected => p.connection.is_none() && p.needs_connection(now),
                    PeerState::Lost => match p.redial {
                        Some((at, wait)) if now >= at => {
                            let next = (wait * 2).min(REDIAL_MAX);
                            p.redial = (now.duration_since(p.last_ok) < LOST_REDIAL_FOR)
                                .then_some((now + super::jitter(next), next));
                            true
                        }
                        _ => false,
                    },
                    PeerState::Incompatible => false,
                };
                let checking = p.suspect.is_some() || p.info.state == PeerState::Lost;
                if !dial {
                    continue;
                }
                table.dialing.insert(id.clone());
                due.push(Dial {
                    addr,
                    expected: Some(id.clone()),
                    target: Target::Peer(id.clone()),
                    within: if checking {
                        PROBE_TIMEOUT
                    } else {
                        DIAL_TIMEOUT
                    },
                    held: games_digest(&p.games),
                });
            }
            // Addresses we were told of: who is there? Not those of peers
            // we know there (dialled above).
            let peers = &table.peers;
            let at_known: Vec<SocketAddr> = peers
                .values()
                .filter(|p| p.info.state != PeerState::Lost)
                .filter_map(|p| p.info.addr)
                .collect();
            for (addr, candidate) in table.candidates.iter_mut() {
                let busy = candidate.in_flight || candidate.is_self;
                let recent = candidate
                    .last_attempt
                    .is_some_and(|t| now.duration_since(t) < REDIAL_AFTER);
                let known = match candidate.expected.as_ref().and_then(|id| peers.get(id)) {
                    Some(p) => p.info.state != PeerState::Lost || p.info.addr == Some(*addr),
                    None => at_known.contains(addr),
                };
                if busy || recent || known {
                    continue;
                }
                candidate.in_flight = true;
                candidate.last_attempt = Some(now);
                let held = candidate
                    .expected
                    .as_ref()
                    .and_then(|id| peers.get(id))
                    .map_or_else(|| games_digest(&[]), |p| games_digest(&p.games));
                due.push(Dial {
                    addr: *addr,
                    expected: candidate.expected.clone(),
                    target: Target::Address,
                    within: DIAL_TIMEOUT,
                    held,
                });
            }
        }
        for dial in due {
            let live = self.clone();
            // Made outside the table lock: its drop takes that lock.
            let in_flight = InFlight {
                directory: self.directory.clone(),
                addr: dial.addr,
                target: dial.target.clone(),
            };
            tasks.spawn(async move {
                let result = live.dial(&dial).await;
                Outcome::Dialed {
                    addr: dial.addr,
                    target: dial.target,
                    result,
                    in_flight,
                }
            });
        }
    }

    /// Connect, and list its games unless its hello announces the digest
    /// of the list we hold.
    async fn dial(
        &self,
        dial: &Dial,
    ) -> Result<(PeerConnection, Option<Vec<GameSummary>>), ConnectError> {
        let addr = dial.addr;
        let attempt = async {
            let conn = self.dialer.connect(addr, dial.expected.clone()).await?;
            // A list that fails is asked for once more by `refresh_flagged`.
            let games = if conn.hello.library_digest == dial.held {
                None
            } else {
                list_games(&conn).await
            };
            Ok((conn, games))
        };
        timeout(dial.within, attempt).await.unwrap_or_else(|_| {
            Err(ConnectError::Unreachable {
                addr,
                reason: "timed out".into(),
            })
        })
    }

    fn handle_outcome(&self, outcome: Outcome) {
        match outcome {
            Outcome::Dialed {
                addr,
                target,
                result,
                in_flight,
            } => {
                self.handle_dialed(addr, &target, result);
                // After the table lock above is released: this takes it.
                drop(in_flight);
            }
            Outcome::Lineup { peer, lineup } => {
                let mut table = self.directory.lock();
                if let Some(p) = table.peers.get_mut(&peer) {
                    p.lineup_refresh = false;
                    let held = p.lineup.as_ref().map_or(0, |l| l.version);
                    match lineup {
                        Some(lineup) if lineup.version > held => p.lineup = Some(lineup),
                        Some(_) => {}
                        None => p.lineup = None,
                    }
                }
            }
            Outcome::Listed { peer, games } => {
                let Some(games) = games else {
                    // Not asked again before its next announcement.
                    tracing::debug!(%peer, "it did not list its games");
                    return;
                };
                let mut table = self.directory.lock();
                let table = &mut *table;
                if let Some(p) = table.peers.get_mut(&peer) {
                    p.info.games = games.len();
                    p.games = games;
                    p.refresh = games_digest(&p.games) != p.announced;
                    table.catalog_dirty = true;
                    if let Some(record) = p.record() {
                        table.outbox.push((record, None));
                    }
                }
            }
            Outcome::Synced {
                from,
                addr,
                records,
            } => {
                self.directory
                    .observe(records, Some((&from, addr)), Source::Exchange);
            }
            Outcome::Told => {}
        }
    }

    fn handle_dialed(
        &self,
        addr: SocketAddr,
        target: &Target,
        result: Result<(PeerConnection, Option<Vec<GameSummary>>), ConnectError>,
    ) {
        let (conn, games) = match result {
            Ok(ok) => ok,
            Err(e) => return self.handle_dial_failed(addr, target, e),
        };
        let mut table = self.directory.lock();
        let table = &mut *table;
        if conn.peer_id == *self.directory.our_id() {
            if let Some(candidate) = table.candidates.get_mut(&addr) {
                candidate.is_self = true;
            }
            conn.connection
                .close(close_code::UNNEEDED.into(), b"that is us");
            return;
        }
        if let Some(candidate) = table.candidates.get_mut(&addr) {
            candidate.last_error = None;
            candidate.failures = 0;
        }
        let source = table.candidates.get(&addr).map(|c| c.source);
        let peer_id = conn.peer_id.clone();
        let now = Instant::now();
        let hello = conn.hello.clone();
        let rtt_ms = Some(conn.connection.rtt().as_secs_f64() * 1000.0);
        let entry = table.peers.entry(peer_id.clone()).or_insert_with(|| {
            let info = PeerInfo {
                peer_id: peer_id.clone(),
                display_name: String::new(),
                addr: Some(addr),
                state: PeerState::Lost,
                rtt_ms,
                games: 0,
                source: source.unwrap_or(Source::Manual),
                last_error: None,
            };
            RemotePeer::new(info, 0, games_digest(&[]))
        });
        if entry.present() && entry.connection.is_some() {
            // Already connected by another address: keep the first.
            conn.connection
                .close(close_code::UNNEEDED.into(), b"duplicate");
            return;
        }
        let discovered = !entry.present();
        entry.info.display_name = hello.display_name.clone();
        entry.info.addr = Some(addr);
        entry.info.state = PeerState::Connected;
        entry.info.rtt_ms = rtt_ms;
        entry.info.last_error = None;
        if let Some(source) = source {
            entry.info.source = source;
        }
        entry.connection = Some(conn);
        entry.rx_datagrams = 0;
        entry.last_ok = now;
        entry.last_used = now;
        entry.suspect = None;
        entry.redial = None;
        entry.version = entry.version.max(hello.record_version);
        if hello.record_version >= entry.version {
            entry.announced = hello.library_digest;
        }
        if let Some(games) = games {
            entry.info.games = games.len();
            entry.games = games;
        }
        entry.refresh = games_digest(&entry.games) != entry.announced;
        let info = entry.info.clone();
        let record = entry.record();
        table.catalog_dirty = true;
        if !discovered {
            return;
        }
        // News: pass it on once checked.
        if let Some(record) = record {
            table.outbox.push((record, None));
        }
        tracing::info!(peer = %peer_id, %addr, name = %info.display_name, "peer discovered");
        self.directory
            .emit(PeerEvent::PeerDiscovered { peer: info });
    }

    fn handle_dial_failed(&self, addr: SocketAddr, target: &Target, e: ConnectError) {
        tracing::debug!(%addr, "dial failed: {e}");
        let mut table = self.directory.lock();
        if matches!(e, ConnectError::IncompatibleVersion { .. }) {
            let expected = match target {
                Target::Peer(id) => Some(id.clone()),
                Target::Address => table.candidates.get(&addr).and_then(|c| c.expected.clone()),
            };
            if let Some(candidate) = table.candidates.get_mut(&addr) {
                candidate.last_error = Some(e.to_string());
            }
            drop(table);
            if let Some(id) = expected {
                self.directory.mark_incompatible(id, addr, None);
            }
            return;
        }
        let wrong_peer = matches!(e, ConnectError::WrongPeer { .. });
        table.handle_dial_failed(addr, e.to_string(), wrong_peer);
        let Target::Peer(id) = target else { return };
        // Not when another dial (or its own hello) brought it back meanwhile.
        let present = table
            .peers
            .get(id)
            .is_some_and(|p| p.present() && p.connection.is_none());
        drop(table);
        if present {
            // A peer we had present does not answer: gone.
            self.directory.lose(id, &format!("stopped answering ({e})"));
        }
    }

    /// Find dead connections (closed, or silent too long) and make their
    /// peers suspect; a peer that closed ours because it is leaving is lost
    /// at once; close connections nothing needs any more.
    fn check_connections(&self) {
        let now = Instant::now();
        let mut left = Vec::new();
        let mut table = self.directory.lock();
        for (id, peer) in table.peers.iter_mut() {
            if !peer.present() {
                continue;
            }
            let Some(conn) = &peer.connection else {
                continue;
            };
            let rx = conn.connection.stats().udp_rx.datagrams;
            if rx != peer.rx_datagrams {
                peer.rx_datagrams = rx;
                peer.last_ok = now;
            }
            let limit = if peer.wanted(now) {
                self.lost_after
            } else {
                WATCH_LOST_AFTER.max(self.lost_after)
            };
            let closed = conn.connection.close_reason();
            if closed.as_ref().is_some_and(close_code::said_goodbye) {
                left.push(id.clone());
                continue;
            }
            let silent = now.duration_since(peer.last_ok) > limit;
            if closed.is_some() || silent {
                let reason = match closed {
                    Some(reason) => format!("connection closed: {reason}"),
                    None => format!("no answer for {limit:?}"),
                };
                tracing::debug!(peer = %peer.info.peer_id, %reason, "checking whether it is still there");
                conn.connection
                    .close(close_code::UNNEEDED.into(), b"silent");
                peer.connection = None;
                peer.suspect = Some(reason);
                continue;
            }
            if peer.wanted(now) {
                peer.last_used = now;
            }
            let idle = !peer.watched
                && !peer.wanted(now)
                && !peer.refresh
                && now.duration_since(peer.last_used) > super::IDLE_CLOSE;
            if idle {
                conn.connection.close(close_code::UNNEEDED.into(), b"idle");
                peer.connection = None;
            }
        }
        drop(table);
        for id in left {
            self.directory.goodbye_from(&id);
        }
    }

    /// Mark the peers we watch: ring neighbours among those present.
    fn update_watch(&self) {
        let mut table = self.directory.lock();
        let present: Vec<PeerId> = table
            .peers
            .iter()
            .filter(|(_, p)| p.present())
            .map(|(id, _)| id.clone())
            .collect();
        let targets = watch_targets(self.directory.our_id(), &present);
        for (id, peer) in table.peers.iter_mut() {
            peer.watched = peer.present() && targets.contains(id);
        }
    }

    fn refresh_flagged(&self, tasks: &mut JoinSet<Outcome>) {
        let flagged: Vec<(PeerId, PeerConnection)> = {
            let mut table = self.directory.lock();
            table
                .peers
                .iter_mut()
                .filter(|(_, p)| p.refresh && p.present())
                .filter_map(|(id, p)| {
                    let conn = p.connection.clone()?;
                    p.refresh = false;
                    p.last_used = Instant::now();
                    Some((id.clone(), conn))
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
        let lineups: Vec<(PeerId, PeerConnection)> = {
            let mut table = self.directory.lock();
            table
                .peers
                .iter_mut()
                .filter(|(_, p)| p.lineup_refresh && p.present())
                .filter(|(_, p)| p.lineup_asked.is_none_or(|at| at.elapsed() >= LINEUP_RETRY))
                .filter_map(|(id, p)| {
                    let conn = p.connection.clone()?;
                    // Cleared by the answer; asked again if none comes.
                    p.lineup_asked = Some(Instant::now());
                    p.last_used = Instant::now();
                    Some((id.clone(), conn))
                })
                .collect()
        };
        for (peer, conn) in lineups {
            tasks.spawn(async move {
                let lineup = match timeout(DIAL_TIMEOUT, conn.request(&Request::GetLineup)).await {
                    Ok(Ok(Response::Lineup(lineup))) => lineup,
                    _ => {
                        tracing::debug!(%peer, "it did not serve its lineup");
                        return Outcome::Told;
                    }
                };
                Outcome::Lineup { peer, lineup }
            });
        }
    }

    /// Tell the peers we watch what we learnt since the last tick (each
    /// record to all but the peer it came from and the peer it is about).
    fn send_outbox(&self, tasks: &mut JoinSet<Outcome>) {
        let outbox = self.directory.take_outbox();
        if outbox.is_empty() {
            return;
        }
        let watched = self.directory.watched_connections();
        for (id, conn) in watched {
            let records: Vec<PeerRecord> = outbox
                .iter()
                .filter(|(record, from)| {
                    from.as_ref() != Some(&id) && record.peer_id != id.as_str()
                })
                .map(|(record, _)| record.clone())
                .collect();
            for chunk in records.chunks(MAX_GOSSIP_RECORDS) {
                let request = Request::Gossip(chunk.to_vec());
                let conn = conn.clone();
                tasks.spawn(async move {
                    let _ = timeout(DIAL_TIMEOUT, conn.request(&request)).await;
                    Outcome::Told
                });
            }
        }
    }

    /// Peer exchange with one peer we watch (the `turn`-th, round robin):
    /// only the digest of what we know crosses when we agree. Returns
    /// whether there was a peer to ask.
    fn sync(&self, tasks: &mut JoinSet<Outcome>, turn: usize) -> bool {
        let watched = self.directory.watched_connections();
        let Some((from, conn)) = watched.get(turn % watched.len().max(1)).cloned() else {
            return false;
        };
        let digest = self.directory.digest_to_ask();
        tasks.spawn(async move {
            let request = Request::GetPeers { digest };
            match timeout(DIAL_TIMEOUT, conn.request(&request)).await {
                Ok(Ok(Response::Peers(records))) => Outcome::Synced {
                    from,
                    addr: conn.connection.remote_address(),
                    records,
                },
                _ => Outcome::Told,
            }
        });
        true
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
                    .filter(|(_, p)| p.present())
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

/// One dial to make.
struct Dial {
    addr: SocketAddr,
    expected: Option<PeerId>,
    target: Target,
    within: Duration,
    /// The digest of the game list we hold of it: not listed again if its
    /// hello announces the same.
    held: Hash,
}

/// An address or a peer being dialled. The dial task owns it, and its drop
/// clears the mark however the task ends: with a result, with a panic, or
/// aborted because the service stopped or restarted and dropped its
/// `JoinSet`. Without it a restart mid-dial left the address marked
/// forever, never dialled again. Never drop it under the table lock.
struct InFlight {
    directory: Arc<PeerDirectory>,
    addr: SocketAddr,
    target: Target,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut table = self.directory.lock();
        match &self.target {
            Target::Address => {
                if let Some(candidate) = table.candidates.get_mut(&self.addr) {
                    candidate.in_flight = false;
                }
            }
            Target::Peer(id) => {
                table.dialing.remove(id);
            }
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
    use crate::net::identity::Identity;
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
        let dialer = Arc::new(Dialer {
            directory: directory.clone(),
            endpoint,
            identity,
            display_name: "tester".into(),
            party_key: None,
            listen_port: 0,
        });
        let live = Arc::new(Liveness {
            directory,
            dialer,
            library,
            offer,
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
        rig.live.dialer.endpoint.close(0u32.into(), b"test over");
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
            target: Target::Address,
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
