//! Other peers: who they are, how to reach them, whether they are alive, and
//! what they share. The [`PeerDirectory`] is the shared table; the liveness
//! service (`liveness.rs`) dials, pings and exchanges peers; the discovery
//! service (`discovery.rs`) feeds it addresses found by mDNS.

pub mod catalog;
pub mod diagnostics;
pub mod dialer;
pub mod discovery;
pub mod liveness;
pub mod membership;
pub mod thumbnails;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use lanspread_proto::wire::{games_digest, members_digest, PeerRecord, PeerStatus, WireLineup};
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
    /// Our connection to it, when we hold one: while we watch it, a download
    /// or a picture wants it, or for [`IDLE_CLOSE`] after its last use.
    pub connection: Option<PeerConnection>,
    pub games: Vec<GameSummary>,
    /// Its last sign of life: traffic on our connection, a dial, a hello.
    pub last_ok: Instant,
    /// UDP datagrams received on its connection at the last check: any
    /// traffic from it counts as a sign of life.
    pub rx_datagrams: u64,
    /// Its record's version, and the library digest it announced at it.
    pub version: u64,
    pub announced: Hash,
    /// `announced` is not the digest of `games`: list its games again.
    pub refresh: bool,
    /// A ring neighbour of ours (`membership::watch_targets`): we hold a
    /// connection to it and tell the others when it goes.
    pub watched: bool,
    /// A download or a picture needs a connection to it until then.
    pub wanted_until: Option<Instant>,
    /// When its connection was last used or wanted.
    pub last_used: Instant,
    /// Why it may be gone (its connection died, or a peer said so): it is
    /// dialled once more, and lost if that fails.
    pub suspect: Option<String>,
    /// The version of it we last told others was gone: a rumour goes
    /// round once.
    pub gone_told: Option<u64>,
    /// Lost: when it is dialled again, and the wait after that.
    pub redial: Option<(Instant, Duration)>,
    /// Its party state (`PeerStatus`), and the record version it came with.
    pub status: Option<PeerStatus>,
    pub status_version: u64,
    /// The lineup it publishes, as it served it to us.
    pub lineup: Option<WireLineup>,
    /// Its status names a newer lineup than `lineup`: ask it.
    pub lineup_refresh: bool,
    /// When we last asked it for its lineup.
    pub lineup_asked: Option<Instant>,
}

impl RemotePeer {
    fn new(info: PeerInfo, version: u64, announced: Hash) -> Self {
        let now = Instant::now();
        Self {
            info,
            connection: None,
            games: Vec::new(),
            last_ok: now,
            rx_datagrams: 0,
            version,
            announced,
            refresh: false,
            watched: false,
            wanted_until: None,
            last_used: now,
            suspect: None,
            gone_told: None,
            redial: None,
            status: None,
            status_version: 0,
            lineup: None,
            lineup_refresh: false,
            lineup_asked: None,
        }
    }

    pub fn present(&self) -> bool {
        self.info.state == PeerState::Connected
    }

    pub fn wanted(&self, now: Instant) -> bool {
        self.wanted_until.is_some_and(|until| now < until)
    }

    /// Whether it needs a connection now.
    pub fn needs_connection(&self, now: Instant) -> bool {
        self.present()
            && (self.watched
                || self.wanted(now)
                || self.refresh
                || self.lineup_refresh
                || self.suspect.is_some())
    }

    /// Take the status `record` carries when it is newer than the one we
    /// hold (a version raised by its hello or mDNS carries none, so the
    /// status is compared by the version it came with). Returns whether
    /// it changed.
    fn take_status(&mut self, record: &PeerRecord) -> bool {
        let Some(status) = &record.status else {
            return false;
        };
        if record.version <= self.status_version && self.status.is_some() {
            return false;
        }
        self.status_version = record.version;
        let held = self.lineup.as_ref().map_or(0, |l| l.version);
        self.lineup_refresh = status.lineup > held;
        if status.lineup == 0 {
            self.lineup = None;
        }
        let changed = self.status.as_ref() != Some(status);
        self.status = Some(status.clone());
        changed
    }

    /// Take `record` of it if it is newer than ours: returns whether it
    /// goes on to others now. When its digest is not that of the games we
    /// hold, they are listed again first (and it goes on after that). Its
    /// status is taken by [`Self::take_status`], not here.
    fn take_newer(&mut self, record: &PeerRecord) -> bool {
        if record.version <= self.version {
            return false;
        }
        self.version = record.version;
        self.announced = record.library_digest;
        self.refresh = games_digest(&self.games) != record.library_digest;
        !self.refresh
    }

    /// What we tell others of it.
    pub fn record(&self) -> Option<PeerRecord> {
        Some(PeerRecord {
            peer_id: self.info.peer_id.to_string(),
            addr: self.info.addr?,
            version: self.version,
            library_digest: self.announced,
            gone: !self.present(),
            status: self.status.clone(),
        })
    }
}

/// A connection is closed after this long unused, unless we watch its peer.
pub const IDLE_CLOSE: Duration = Duration::from_secs(10);
/// How long one call of [`PeerDirectory::sources_of`] (or a picture fetch)
/// keeps connections to the peers it names wanted.
pub const WANTED_FOR: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct Table {
    pub peers: BTreeMap<PeerId, RemotePeer>,
    pub candidates: BTreeMap<SocketAddr, Candidate>,
    pub catalog: Vec<CatalogEntry>,
    pub catalog_dirty: bool,
    /// Known peers being dialled (the dial owns a `liveness::InFlight`).
    pub dialing: std::collections::BTreeSet<PeerId>,
    /// Records to tell the peers we watch, and who told us each (not told
    /// back).
    pub outbox: Vec<(PeerRecord, Option<PeerId>)>,
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

/// Our own record: its version and our library's digest at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnRecord {
    pub version: u64,
    pub digest: Hash,
}

/// A connection that carried something within this long is healthy: a
/// rumour that its peer is gone is not believed.
const HEALTHY_WITHIN: Duration = Duration::from_secs(2);
/// A lost peer is dialled again after this, then after twice as long each
/// time, up to [`REDIAL_MAX`], for [`LOST_REDIAL_FOR`].
pub const REDIAL_FIRST: Duration = Duration::from_secs(2);
pub const REDIAL_MAX: Duration = Duration::from_secs(60);

/// `wait` stretched by a random 0-100 %.
pub(crate) fn jitter(wait: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    wait + wait.mul_f64((random % 1000) as f64 / 1000.0)
}

/// The shared table of peers.
pub struct PeerDirectory {
    // A std Mutex: short bookkeeping under it, never an await.
    table: Mutex<Table>,
    events: EventSink,
    our_id: PeerId,
    own: tokio::sync::watch::Sender<OwnRecord>,
    /// Our party state, told with our record, and the lineup we publish
    /// (served by `GetLineup`). std Mutexes: a copy under each, no await.
    own_status: Mutex<PeerStatus>,
    own_lineup: Mutex<Option<WireLineup>>,
    /// Told when there is work for the liveness loop (news to pass on, a
    /// peer to dial or list), so it does not wait for its next tick.
    wake: tokio::sync::Notify,
}

impl PeerDirectory {
    pub fn new(our_id: PeerId, events: EventSink) -> Self {
        Self {
            table: Mutex::default(),
            events,
            our_id,
            own: tokio::sync::watch::Sender::new(OwnRecord {
                version: membership::first_version(),
                digest: games_digest(&[]),
            }),
            own_status: Mutex::default(),
            own_lineup: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Our party state is `status` now: when it changed, our record gets a
    /// new version and goes to the peers we watch (and so to the party).
    pub(crate) fn set_own_status(&self, status: PeerStatus) {
        {
            let mut own = self.own_status.lock().unwrap_or_else(|e| e.into_inner());
            if *own == status {
                return;
            }
            *own = status;
        }
        self.own
            .send_modify(|own| own.version = membership::next_version(own.version));
        let record = self.own_record(self.own());
        self.lock().outbox.push((record, None));
        self.wake.notify_one();
    }

    /// Our party state as told now.
    pub fn own_status(&self) -> PeerStatus {
        self.own_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The lineup we publish: what `GetLineup` answers.
    pub fn own_lineup(&self) -> Option<WireLineup> {
        self.own_lineup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_own_lineup(&self, lineup: Option<WireLineup>) {
        *self.own_lineup.lock().unwrap_or_else(|e| e.into_inner()) = lineup;
    }

    /// Every peer we know (present or lost) with its name, whether it is
    /// present, its games, status and lineup, for the party's board.
    pub(crate) fn party_view<T>(
        &self,
        view: impl FnOnce(&mut dyn Iterator<Item = (&PeerId, &RemotePeer)>) -> T,
    ) -> T {
        let table = self.lock();
        let mut peers = table
            .peers
            .iter()
            .filter(|(_, p)| p.info.state != PeerState::Incompatible);
        view(&mut peers)
    }

    /// Wait until there is work for the liveness loop.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
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

    /// Our record as we announce it now.
    pub fn own(&self) -> OwnRecord {
        *self.own.borrow()
    }

    /// Our record, each time it changes (mDNS announces it).
    pub fn watch_own(&self) -> tokio::sync::watch::Receiver<OwnRecord> {
        self.own.subscribe()
    }

    /// Our library's digest is `digest` now: when it changed, our record
    /// gets a new version and goes to the peers we watch.
    pub(crate) fn set_own_digest(&self, digest: Hash) {
        let mut changed = None;
        self.own.send_if_modified(|own| {
            if own.digest == digest {
                return false;
            }
            own.version = membership::next_version(own.version);
            own.digest = digest;
            changed = Some(*own);
            true
        });
        if let Some(own) = changed {
            let record = self.own_record(own);
            self.lock().outbox.push((record, None));
            self.wake.notify_one();
        }
    }

    /// Our own record; the address is filled in by whoever receives it,
    /// with the one it sees us at.
    fn own_record(&self, own: OwnRecord) -> PeerRecord {
        PeerRecord {
            peer_id: self.our_id.to_string(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            version: own.version,
            library_digest: own.digest,
            gone: false,
            status: Some(self.own_status()),
        }
    }

    /// Remember an address to dial, within the bounds of [`Table::admit`].
    /// Our own id and peers already present at that address are ignored.
    pub fn add_candidate(&self, addr: SocketAddr, expected: Option<PeerId>, source: Source) {
        if expected.as_ref() == Some(&self.our_id) {
            return;
        }
        let mut table = self.lock();
        if let Some(id) = &expected {
            if let Some(peer) = table.peers.get(id) {
                if peer.present() && peer.info.addr == Some(addr) {
                    return;
                }
            }
        }
        if !table.admit(addr, expected, source) {
            tracing::debug!(%addr, ?source, "address not kept: the table is full for it");
        }
        drop(table);
        self.wake.notify_one();
    }

    /// A peer that speaks another protocol version: listed, never dialled.
    pub fn mark_incompatible(&self, peer_id: PeerId, addr: SocketAddr, name: Option<&str>) {
        let mut table = self.lock();
        if let Some(candidate) = table.candidates.get_mut(&addr) {
            candidate.is_self = true; // never dialled again
        }
        let entry = table.peers.entry(peer_id.clone()).or_insert_with(|| {
            let info = PeerInfo {
                peer_id: peer_id.clone(),
                display_name: String::new(),
                addr: Some(addr),
                state: PeerState::Incompatible,
                rtt_ms: None,
                games: 0,
                source: Source::Mdns,
                last_error: None,
            };
            RemotePeer::new(info, 0, games_digest(&[]))
        });
        if let Some(name) = name {
            entry.info.display_name = name.to_owned();
        }
        entry.info.state = PeerState::Incompatible;
        entry.info.last_error = Some("speaks another lanspread protocol version".into());
    }

    /// `peer` is gone (`reason` says why): lost now, its games leave the
    /// catalog, and the peers we watch are told once.
    pub(crate) fn lose(&self, peer: &PeerId, reason: &str) {
        self.lose_as(peer, reason, true);
    }

    /// [`Self::lose`], dialling it again later only when `redial`.
    fn lose_as(&self, peer: &PeerId, reason: &str, redial: bool) {
        let lost = {
            let mut table = self.lock();
            let Some(p) = table.peers.get_mut(peer) else {
                return;
            };
            if !p.present() {
                return;
            }
            p.info.state = PeerState::Lost;
            p.info.last_error = Some(reason.to_owned());
            p.info.rtt_ms = None;
            p.suspect = None;
            p.watched = false;
            p.wanted_until = None;
            // Jittered: the whole party lost it at once, and should not
            // dial it back at once.
            p.redial = redial.then(|| (Instant::now() + jitter(REDIAL_FIRST), REDIAL_FIRST));
            if let Some(conn) = p.connection.take() {
                conn.connection
                    .close(crate::net::close_code::UNNEEDED.into(), b"lost");
            }
            let tell = (p.gone_told != Some(p.version)).then(|| {
                p.gone_told = Some(p.version);
                p.record()
            });
            table.catalog_dirty = true;
            if let Some(record) = tell.flatten() {
                table.outbox.push((record, None));
            }
            true
        };
        if lost {
            self.wake.notify_one();
            tracing::info!(%peer, %reason, "peer lost");
            self.emit(PeerEvent::PeerLost {
                peer_id: peer.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    /// A peer said goodbye (over QUIC, or mDNS): it is lost now, not after
    /// the timeout, and not dialled again: it left on purpose, and comes
    /// back by itself (its hello, mDNS, or a newer record of it).
    pub fn goodbye_from(&self, peer: &PeerId) {
        self.lose_as(peer, "said goodbye", false);
    }

    /// `peer` dialled us and said hello from `addr` (its IP and the port it
    /// listens on; `None` when it serves nothing): what it says of itself is
    /// verified by its certificate. A peer we do not have present is
    /// dialled back (to list its games and tell the others).
    pub fn hello_from(&self, peer: &PeerId, addr: Option<SocketAddr>, version: u64, digest: Hash) {
        let mut table = self.lock();
        if let Some(p) = table.peers.get_mut(peer) {
            if p.present() {
                p.last_ok = Instant::now();
                if version > p.version {
                    p.version = version;
                    p.announced = digest;
                    p.refresh |= games_digest(&p.games) != digest;
                    drop(table);
                    self.wake.notify_one();
                }
                return;
            }
            if let Some((at, _)) = &mut p.redial {
                *at = Instant::now();
            }
        }
        drop(table);
        if let Some(addr) = addr {
            self.add_candidate(addr, Some(peer.clone()), Source::Incoming);
        }
    }

    /// Records of peers told by `from` (a peer's gossip or peer exchange
    /// answer: its id and the address we see it at) or found by mDNS
    /// (`from` is `None`). Hearsay: a peer we do not have present is
    /// dialled to check; a present peer said to be gone is dialled once
    /// more and lost only if that fails; what we checked goes on to the
    /// peers we watch.
    pub fn observe(
        &self,
        records: Vec<PeerRecord>,
        from: Option<(&PeerId, SocketAddr)>,
        source: Source,
    ) {
        let mut dial = Vec::new();
        let mut gone = Vec::new();
        {
            let mut table = self.lock();
            let table = &mut *table;
            for mut record in records {
                let Some(id) = PeerId::parse(&record.peer_id) else {
                    continue;
                };
                let sender = from.map(|(sender, _)| sender.clone());
                if let Some((sender, seen_at)) = from {
                    if id == *sender {
                        record.addr = seen_at;
                    }
                }
                if id == self.our_id {
                    if record.gone && record.version >= self.own().version {
                        // Someone thinks we left: a newer record says not.
                        let own = self.own();
                        self.own.send_replace(OwnRecord {
                            version: membership::next_version(own.version),
                            ..own
                        });
                        table.outbox.push((self.own_record(self.own()), None));
                    }
                    continue;
                }
                match table.peers.get_mut(&id) {
                    Some(p) if p.info.state == PeerState::Incompatible => {}
                    Some(p) if p.present() => {
                        if record.gone {
                            let healthy =
                                p.connection.is_some() && p.last_ok.elapsed() < HEALTHY_WITHIN;
                            if record.version != p.version
                                || p.gone_told == Some(record.version)
                                || healthy
                            {
                                continue;
                            }
                            // Its watchers found it silent and checked it
                            // with a dial: not dialled again by everyone at
                            // once (a party of probes would bury a busy
                            // peer). Alive after all, it answers with a
                            // newer record of itself.
                            p.gone_told = Some(record.version);
                            gone.push(id.clone());
                            table.outbox.push((record, sender));
                        } else {
                            // A status we lacked goes on too, even with a
                            // version we had: mDNS tells every peer the new
                            // version first, without the status, and the
                            // status would then cross only by peer exchange
                            // (each asking for every record meanwhile).
                            let status_news = p.take_status(&record);
                            if p.take_newer(&record) || status_news {
                                table.outbox.push((record, sender));
                            }
                        }
                    }
                    known => {
                        if record.gone {
                            continue;
                        }
                        if let Some(p) = known {
                            // Old news of a lost peer: it is dialled
                            // again on its own schedule.
                            if record.version <= p.version {
                                continue;
                            }
                            p.redial = Some((Instant::now(), REDIAL_FIRST));
                        }
                        dial.push((record.addr, id));
                    }
                }
            }
        }
        for (addr, id) in dial {
            self.add_candidate(addr, Some(id), source);
        }
        for id in gone {
            self.lose(&id, "gone: the peers watching it say so");
        }
        self.wake.notify_one();
    }

    /// A peer's own mDNS announcement (`name` from its TXT): present at
    /// once, without a dial, as on any mDNS LAN (a machine on the LAN can
    /// spoof it, as it can answer for any name); it is dialled only to list
    /// its games when it has some, or to watch it. Its watchers check it
    /// is there, and tell the others if it is not.
    pub fn announced(&self, record: PeerRecord, name: Option<&str>) {
        let Some(id) = PeerId::parse(&record.peer_id) else {
            return;
        };
        if id == self.our_id {
            return;
        }
        let discovered = {
            let mut table = self.lock();
            let table = &mut *table;
            if let Some(p) = table.peers.get_mut(&id) {
                match p.info.state {
                    PeerState::Incompatible => return,
                    PeerState::Connected => {
                        if p.take_newer(&record) {
                            table.outbox.push((record, None));
                        }
                        self.wake.notify_one();
                        return;
                    }
                    PeerState::Lost if record.version <= p.version => return,
                    PeerState::Lost => {}
                }
            }
            let info = PeerInfo {
                peer_id: id.clone(),
                display_name: name.unwrap_or_default().to_owned(),
                addr: Some(record.addr),
                state: PeerState::Connected,
                rtt_ms: None,
                games: 0,
                source: Source::Mdns,
                last_error: None,
            };
            let p = table
                .peers
                .entry(id.clone())
                .or_insert_with(|| RemotePeer::new(info.clone(), 0, games_digest(&[])));
            p.info = PeerInfo {
                games: p.games.len(),
                ..info
            };
            p.version = record.version;
            p.announced = record.library_digest;
            p.refresh = games_digest(&p.games) != record.library_digest;
            p.last_ok = Instant::now();
            p.suspect = None;
            p.redial = None;
            // Not passed on: every peer on the LAN heard the same packet.
            table.catalog_dirty = true;
            p.info.clone()
        };
        self.wake.notify_one();
        tracing::info!(peer = %id, addr = ?discovered.addr, name = %discovered.display_name, "peer announced by mDNS");
        self.emit(PeerEvent::PeerDiscovered { peer: discovered });
    }

    /// The records of every peer present (and ours), for a peer exchange
    /// answer; empty when the asker's `digest` says it has them all.
    pub fn members(&self, digest: &Hash) -> Vec<PeerRecord> {
        if self.members_digest() == *digest {
            return Vec::new();
        }
        let own = self.own_record(self.own());
        let table = self.lock();
        let mut records: Vec<PeerRecord> = table
            .peers
            .values()
            .filter(|p| p.present())
            .filter_map(RemotePeer::record)
            .collect();
        records.truncate(lanspread_proto::wire::MAX_EXCHANGED_PEERS - 1);
        records.push(own);
        records
    }

    /// [`members_digest`] of the peers present and us.
    pub fn members_digest(&self) -> Hash {
        let us = self.our_id.to_string();
        let own = self.own();
        let table = self.lock();
        let ids: Vec<(String, u64)> = table
            .peers
            .iter()
            .filter(|(_, p)| p.present())
            .map(|(id, p)| (id.to_string(), p.version))
            .collect();
        members_digest(
            ids.iter()
                .map(|(id, v)| (id.as_str(), *v))
                .chain(std::iter::once((us.as_str(), own.version))),
        )
    }

    /// The digest to send in a peer exchange: [`Self::members_digest`],
    /// or none that can match while the status of a present peer is
    /// unknown (it was heard by mDNS or a hello, which carry none, and an
    /// exchange in sync would never bring it).
    pub(crate) fn digest_to_ask(&self) -> Hash {
        let unknown = self
            .lock()
            .peers
            .values()
            .any(|p| p.present() && p.status.is_none());
        if unknown {
            Hash([0; 32])
        } else {
            self.members_digest()
        }
    }

    /// Take the records waiting to be told.
    pub(crate) fn take_outbox(&self) -> Vec<(PeerRecord, Option<PeerId>)> {
        std::mem::take(&mut self.lock().outbox)
    }

    /// How many peers are present.
    pub fn present_count(&self) -> usize {
        self.lock().peers.values().filter(|p| p.present()).count()
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.lock().peers.values().map(|p| p.info.clone()).collect()
    }

    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.lock().catalog.clone()
    }

    /// Present peers that have `version_id`, with whether they have all of
    /// it, over the connections we hold to them. Every present peer listing
    /// it is wanted for [`WANTED_FOR`]: liveness connects to those we hold
    /// no connection to, and the next call finds them.
    pub fn sources_of(
        &self,
        version_id: &lanspread_proto::VersionId,
    ) -> Vec<(PeerId, PeerConnection, bool)> {
        let now = Instant::now();
        let mut table = self.lock();
        let mut sources = Vec::new();
        for (id, p) in table.peers.iter_mut().filter(|(_, p)| p.present()) {
            let Some(game) = p.games.iter().find(|g| g.version_id == *version_id) else {
                continue;
            };
            let complete = game.complete;
            p.wanted_until = Some(now + WANTED_FOR);
            p.last_used = now;
            if let Some(conn) = &p.connection {
                sources.push((id.clone(), conn.clone(), complete));
            }
        }
        sources
    }

    /// Present peers whose games list the picture `hash`, over the
    /// connections we hold; like [`Self::sources_of`], the others are
    /// wanted.
    pub(crate) fn holders_of_thumbnail(
        &self,
        hash: &lanspread_proto::Hash,
    ) -> Vec<(PeerId, Option<PeerConnection>)> {
        let now = Instant::now();
        let mut table = self.lock();
        let mut holders = Vec::new();
        for (id, p) in table.peers.iter_mut().filter(|(_, p)| p.present()) {
            if !p.games.iter().any(|g| g.thumbnail.as_ref() == Some(hash)) {
                continue;
            }
            p.wanted_until = Some(now + WANTED_FOR);
            p.last_used = now;
            holders.push((id.clone(), p.connection.clone()));
        }
        holders
    }

    /// The peers we watch, over the connections we hold to them.
    pub(crate) fn watched_connections(&self) -> Vec<(PeerId, PeerConnection)> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, p)| p.watched)
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

    /// A directory of no peer but us.
    fn empty_directory() -> PeerDirectory {
        let (events, _) = EventSink::new(16);
        PeerDirectory::new(id(), events)
    }

    /// A directory holding one peer, connected, whose games we listed.
    fn directory_with(peer: &PeerId, games: Vec<GameSummary>) -> PeerDirectory {
        let directory = empty_directory();
        let info = PeerInfo {
            peer_id: peer.clone(),
            display_name: "host".into(),
            addr: Some(addr([10, 0, 0, 9], 27600)),
            state: PeerState::Connected,
            rtt_ms: None,
            games: games.len(),
            source: Source::Manual,
            last_error: None,
        };
        let mut remote = RemotePeer::new(info, 1, games_digest(&games));
        remote.games = games;
        directory.lock().peers.insert(peer.clone(), remote);
        directory
    }

    fn record(peer: &PeerId, version: u64, games: &[GameSummary], gone: bool) -> PeerRecord {
        PeerRecord {
            peer_id: peer.to_string(),
            addr: addr([10, 0, 0, 9], 27600),
            version,
            library_digest: games_digest(games),
            gone,
            status: None,
        }
    }

    fn check(listed: Vec<GameSummary>, announced: &[GameSummary], refresh: bool) {
        let peer = Identity::ephemeral().peer_id().clone();
        let directory = directory_with(&peer, listed);
        directory.observe(vec![record(&peer, 2, announced, false)], None, Source::Mdns);
        assert_eq!(directory.lock().peers[&peer].refresh, refresh);
        // Passed on at once when there is nothing to list; after the list
        // otherwise.
        assert_eq!(directory.take_outbox().len(), usize::from(!refresh));
    }

    /// Only a different digest makes us list a peer's games again (the
    /// digest does not depend on the list's order).
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

    /// What others say of a peer we do not know is hearsay: it is dialled
    /// to check, not listed and not passed on.
    #[test]
    fn an_unknown_peer_is_checked_before_it_is_believed() {
        let directory = empty_directory();
        let stranger = Identity::ephemeral().peer_id().clone();
        let told = record(&stranger, 5, &[game("quake", 1)], false);
        directory.observe(vec![told.clone()], None, Source::Exchange);
        let table = directory.lock();
        assert!(table.peers.is_empty());
        assert!(table.outbox.is_empty());
        assert_eq!(table.candidates[&told.addr].expected, Some(stranger));
    }

    /// A rumour that a present peer is gone (its watchers checked it) is
    /// taken and goes round once; a rumour about another version of it, or
    /// a second copy, does nothing.
    #[test]
    fn a_gone_rumour_is_taken_and_passed_on_once() {
        let peer = id();
        let directory = directory_with(&peer, Vec::new());
        let teller = id();
        let from = Some((&teller, addr([10, 0, 0, 7], 1)));
        directory.observe(vec![record(&peer, 0, &[], true)], from, Source::Exchange);
        assert!(directory.lock().peers[&peer].present(), "another version");
        directory.observe(vec![record(&peer, 1, &[], true)], from, Source::Exchange);
        directory.observe(vec![record(&peer, 1, &[], true)], from, Source::Exchange);
        assert!(!directory.lock().peers[&peer].present(), "gone");
        let outbox = directory.take_outbox();
        assert_eq!(outbox.len(), 1, "passed on once");
        assert_eq!(
            outbox[0].1.as_ref(),
            Some(&teller),
            "not back to its teller"
        );
    }

    /// Once lost, a peer is believed again only on news newer than what we
    /// had of it; and a peer told that we are gone answers with a newer
    /// record of us.
    #[test]
    fn lost_peers_come_back_on_newer_news_and_rumours_of_us_are_answered() {
        let peer = id();
        let directory = directory_with(&peer, Vec::new());
        directory.lose(&peer, "test");
        assert!(!directory.lock().peers[&peer].present());
        directory.take_outbox();
        let at = addr([10, 0, 0, 8], 27600);
        let mut old = record(&peer, 1, &[], false);
        old.addr = at;
        directory.observe(vec![old.clone()], None, Source::Exchange);
        assert!(!directory.lock().candidates.contains_key(&at), "old news");
        old.version = 2;
        directory.observe(vec![old], None, Source::Exchange);
        assert!(
            directory.lock().candidates.contains_key(&at),
            "newer: checked"
        );

        let us = directory.our_id().clone();
        let before = directory.own().version;
        directory.observe(vec![record(&us, before, &[], true)], None, Source::Exchange);
        assert!(directory.own().version > before);
        let outbox = directory.take_outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].0.peer_id, us.as_str());
        assert!(!outbox[0].0.gone);
    }

    /// A peer's own mDNS announcement makes it present without a dial; it
    /// is dialled only to list its games when it has some. Once lost, only
    /// a newer announcement brings it back.
    #[test]
    fn an_mdns_announcement_is_presence_and_games_are_listed_only_when_there_are_some() {
        let directory = empty_directory();
        let (idle, host) = (id(), id());
        directory.announced(record(&idle, 5, &[], false), Some("idle"));
        directory.announced(record(&host, 5, &[game("quake", 1)], false), Some("host"));
        {
            let table = directory.lock();
            assert!(table.candidates.is_empty(), "no dial to check");
            let p = &table.peers[&idle];
            assert!(p.present() && !p.refresh);
            assert_eq!(p.info.display_name, "idle");
            assert!(table.peers[&host].refresh, "its games get listed");
        }
        directory.lose(&idle, "test");
        directory.announced(record(&idle, 5, &[], false), None);
        assert!(!directory.lock().peers[&idle].present(), "old news");
        directory.announced(record(&idle, 6, &[], false), None);
        assert!(directory.lock().peers[&idle].present(), "restarted");
    }

    /// In sync, a peer exchange answer is empty; otherwise it lists every
    /// present peer and us.
    #[test]
    fn peer_exchange_sends_nothing_when_in_sync() {
        let peer = id();
        let directory = directory_with(&peer, Vec::new());
        assert!(directory.members(&directory.members_digest()).is_empty());
        let all = directory.members(&Hash([0; 32]));
        assert_eq!(all.len(), 2);
        assert!(all.iter().any(|r| r.peer_id == directory.our_id().as_str()));
    }

    /// A peer announced by mDNS is known at its new version without its
    /// status; the record that brings the status goes on to the peers we
    /// watch, so statuses spread with the gossip. Cut at the first hop,
    /// every peer asked for every record in its peer exchanges until one
    /// reached it, and an idle party of 100 sent ~250 B/s per peer more.
    #[test]
    fn a_status_heard_after_the_version_goes_on() {
        let directory = empty_directory();
        let (peer, sender) = (id(), id());
        directory.announced(record(&peer, 5, &[], false), Some("peer"));
        assert_eq!(directory.digest_to_ask(), Hash([0; 32]), "status unknown");
        let mut with_status = record(&peer, 5, &[], false);
        with_status.status = Some(PeerStatus {
            lineup: 3,
            ..PeerStatus::default()
        });
        let from = Some((&sender, addr([10, 0, 0, 7], 27600)));
        directory.observe(vec![with_status.clone()], from, Source::Exchange);
        let outbox = directory.take_outbox();
        assert_eq!(outbox.len(), 1, "the status goes on");
        assert_eq!(
            outbox[0].1.as_ref(),
            Some(&sender),
            "not back to its sender"
        );
        assert_eq!(directory.digest_to_ask(), directory.members_digest());
        // Heard again: nothing new, nothing passed on (the flood ends).
        directory.observe(vec![with_status], from, Source::Exchange);
        assert!(directory.take_outbox().is_empty());
    }
}
