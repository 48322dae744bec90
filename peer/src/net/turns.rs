//! Whose pieces the server sends now: a few machines at a time, in the
//! order they asked.
//!
//! Shared alike between every requester, an upload finishes every piece
//! late: at a rush of 31 downloaders on one seed, each first piece took 31
//! pieces' time, and for that long nobody had anything to pass on (the
//! party's upload ran at 7-22 % for the first 24 s). Served a few at a time,
//! the first pieces are done in one or two pieces' time and their
//! downloaders serve them on. A machine being served takes its further
//! streams along (a fast downloader pipelines), unless others are waiting:
//! then its turn ends with its last stream, and the next in line gets it.
//! A turn counts against [`AT_ONCE`] for a span, so a requester reading
//! slowly (or not at all) holds up the others for no longer than that: twice
//! the time its longest piece takes at the rate recent turns were delivered
//! at (the fastest of the last [`RATES_KEPT`] within [`RATES_FOR`]), and at
//! least [`TURN_SPAN`]. A fixed span shorter than one piece's time let a
//! third and a fourth machine in at once on a slow link (1 MiB pieces at
//! 5 Mbit/s: 3.4 s each, two at a time), and the upload was shared alike
//! again. A request that gets no turn within its wait is told `Busy` and
//! asks elsewhere: its pieces are free for another source.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Machines served at once (beyond those whose turn outlasted its span).
/// Two, not one: a slow reader then leaves the upload half
/// used, not idle.
pub const AT_ONCE: usize = 2;
/// A turn counts against [`AT_ONCE`] this long at least, and no longer
/// unless its request needs it (see the module); its streams go on.
pub const TURN_SPAN: Duration = Duration::from_secs(2);
/// Nor longer than this, however slow the link.
pub const TURN_SPAN_MAX: Duration = Duration::from_secs(30);
/// Delivery rates of this many turns, the latest, size the spans...
pub const RATES_KEPT: usize = 16;
/// ... those of the last minute: a stretch of slow readers long ago does
/// not lengthen the turns of today's.
pub const RATES_FOR: Duration = Duration::from_secs(60);
/// How long a request waits for a turn before it is told `Busy`.
pub const TURN_WAIT: Duration = Duration::from_secs(1);
/// A waiting request looks again this often (a turn may have outlasted its
/// span meanwhile).
const RECHECK: Duration = Duration::from_millis(250);

/// The server's turns; one per server.
pub struct Turns {
    state: Mutex<State>,
    per_machine: usize,
    streams: usize,
}

#[derive(Default)]
struct State {
    serving: HashMap<IpAddr, Serving>,
    /// When the latest turns delivered whole were, and their bytes per
    /// second; newest last.
    rates: VecDeque<(Instant, f64)>,
    /// Streams being served, every machine's.
    streams: usize,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

struct Serving {
    streams: usize,
    since: Instant,
    /// How long this turn counts against [`AT_ONCE`].
    span: Duration,
}

struct Waiter {
    id: u64,
    ip: IpAddr,
    size: Size,
    admit: oneshot::Sender<()>,
}

/// How much a request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Bytes in all.
    pub bytes: u64,
    /// Bytes of its longest piece.
    pub piece: u64,
}

/// A stream's place among those served; dropping it ends it.
pub struct Turn {
    turns: Arc<Turns>,
    ip: IpAddr,
    bytes: u64,
    admitted: Instant,
}

impl Turn {
    /// Its reader acknowledged every byte of the request: the rate it was
    /// delivered at sizes the spans of turns to come.
    pub fn delivered(self) {
        let took = self.admitted.elapsed().as_secs_f64();
        if self.bytes > 0 && took > 0.0 {
            let mut state = self.turns.lock();
            if state.rates.len() == RATES_KEPT {
                state.rates.pop_front();
            }
            state
                .rates
                .push_back((Instant::now(), self.bytes as f64 / took));
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.release(self.ip);
    }
}

impl Turns {
    /// At most `per_machine` streams of one machine and `streams` in all
    /// are served at once.
    pub fn new(per_machine: usize, streams: usize) -> Self {
        Self {
            state: Mutex::default(),
            per_machine,
            streams,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Streams being served now and requests waiting.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.streams, state.queue.len())
    }

    /// Wait up to `wait` for a turn for a stream of `ip` asking for `size`;
    /// `None`: none came (the caller answers `Busy`). Cancel-safe.
    pub async fn take(self: &Arc<Self>, ip: IpAddr, size: Size, wait: Duration) -> Option<Turn> {
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut state = self.lock();
            let now = Instant::now();
            if state.queue.is_empty() && self.admissible(&state, ip, now) {
                state.admit(ip, size, now);
                return Some(self.turn(ip, size));
            }
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push_back(Waiter {
                id,
                ip,
                size,
                admit: tx,
            });
            id
        };
        let mut queued = Queued {
            turns: self.clone(),
            id,
            ip,
            admitted: false,
        };
        let deadline = Instant::now() + wait;
        loop {
            let next = (Instant::now() + RECHECK).min(deadline);
            if tokio::time::timeout_at(next, &mut rx).await.is_ok() {
                queued.admitted = true;
                break;
            }
            let mut state = self.lock();
            self.admit_waiting(&mut state);
            if rx.try_recv().is_ok() {
                queued.admitted = true;
                break;
            }
            if Instant::now() >= deadline {
                return None; // `queued` leaves the queue as it drops
            }
        }
        drop(queued);
        Some(self.turn(ip, size))
    }

    fn turn(self: &Arc<Self>, ip: IpAddr, size: Size) -> Turn {
        Turn {
            turns: self.clone(),
            ip,
            bytes: size.bytes,
            admitted: Instant::now(),
        }
    }

    /// Whether a stream of `ip` may be served now (queue order aside).
    fn admissible(&self, state: &State, ip: IpAddr, now: Instant) -> bool {
        if state.streams >= self.streams {
            return false;
        }
        match state.serving.get(&ip) {
            Some(s) if s.streams >= self.per_machine => false,
            Some(s) if now.duration_since(s.since) < s.span => true,
            _ => state.current_turns(now) < AT_ONCE,
        }
    }

    /// Admit waiting requests in their order: each that fits; one that
    /// needs a new turn and cannot get one stops the rest (no one overtakes
    /// it), one held back only by its own machine's streams does not.
    fn admit_waiting(&self, state: &mut State) {
        let now = Instant::now();
        let mut i = 0;
        while i < state.queue.len() {
            let ip = state.queue[i].ip;
            if self.admissible(state, ip, now) {
                let waiter = state.queue.remove(i).expect("in range");
                state.admit(ip, waiter.size, now);
                if waiter.admit.send(()).is_err() {
                    state.release(ip); // its request is gone
                }
                continue;
            }
            let own_limit = state
                .serving
                .get(&ip)
                .is_some_and(|s| s.streams >= self.per_machine);
            if !own_limit {
                break;
            }
            i += 1;
        }
    }

    fn release(&self, ip: IpAddr) {
        let mut state = self.lock();
        state.release(ip);
        self.admit_waiting(&mut state);
    }
}

impl State {
    /// Turns that still count: begun within their span.
    fn current_turns(&self, now: Instant) -> usize {
        self.serving
            .values()
            .filter(|s| now.duration_since(s.since) < s.span)
            .count()
    }

    /// How long a turn counts whose longest piece is `piece` bytes: twice
    /// that piece's time at the fastest recent delivery rate, within
    /// [`TURN_SPAN`] and [`TURN_SPAN_MAX`]. The fastest, so one slow reader
    /// does not lengthen everyone's turns; one piece, not the request, so a
    /// long request does not either (a downloader asks for about half a
    /// second of pieces, and for one where that is less than a piece). A
    /// rate is one stream's: a machine reading on several streams at once
    /// shows less than its share on each, which the fastest of several
    /// turns makes up for.
    fn span(&self, piece: u64, now: Instant) -> Duration {
        let fastest = self
            .rates
            .iter()
            .filter(|(at, _)| now.duration_since(*at) < RATES_FOR)
            .map(|&(_, rate)| rate)
            .fold(0.0, f64::max);
        if fastest <= 0.0 {
            return TURN_SPAN;
        }
        Duration::from_secs_f64((2.0 * piece as f64 / fastest).min(TURN_SPAN_MAX.as_secs_f64()))
            .max(TURN_SPAN)
    }

    fn admit(&mut self, ip: IpAddr, size: Size, now: Instant) {
        self.streams += 1;
        let span = self.span(size.piece, now);
        let serving = self.serving.entry(ip).or_insert(Serving {
            streams: 0,
            since: now,
            span,
        });
        if now.duration_since(serving.since) >= serving.span {
            // A new turn.
            serving.since = now;
            serving.span = span;
        } else {
            // A stream joining the turn: as long as the longest it holds.
            serving.span = serving.span.max(span);
        }
        serving.streams += 1;
    }

    fn release(&mut self, ip: IpAddr) {
        self.streams -= 1;
        if let Some(serving) = self.serving.get_mut(&ip) {
            serving.streams -= 1;
            if serving.streams == 0 {
                self.serving.remove(&ip);
            }
        }
    }
}

/// A request in the queue: leaves it on every exit path, and gives back a
/// turn it was handed just as it stopped waiting.
struct Queued {
    turns: Arc<Turns>,
    id: u64,
    ip: IpAddr,
    admitted: bool,
}

impl Drop for Queued {
    fn drop(&mut self) {
        let mut state = self.turns.lock();
        let before = state.queue.len();
        state.queue.retain(|w| w.id != self.id);
        let left_queue = state.queue.len() < before;
        if !left_queue && !self.admitted {
            // Admitted after its last look: the turn is its to give back.
            state.release(self.ip);
        }
        if left_queue || !self.admitted {
            self.turns.admit_waiting(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    const PIECE: Size = Size {
        bytes: 1 << 20,
        piece: 1 << 20,
    };

    fn turns() -> Arc<Turns> {
        Arc::new(Turns::new(4, 32))
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_machines_at_a_time_in_the_order_they_asked() {
        let t = turns();
        let a = t.take(ip(1), PIECE, TURN_WAIT).await.expect("free");
        let b = t.take(ip(2), PIECE, TURN_WAIT).await.expect("free");
        let (c, d) = (t.clone(), t.clone());
        let third = tokio::spawn(async move { c.take(ip(3), PIECE, TURN_WAIT).await.is_some() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let fourth = tokio::spawn(async move { d.take(ip(4), PIECE, TURN_WAIT).await.is_some() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(t.counts(), (2, 2), "two served, two waiting");
        drop(a);
        assert!(third.await.unwrap(), "the first in line gets the turn");
        drop(b);
        assert!(fourth.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_with_no_turn_within_its_wait_is_turned_away_and_leaves_the_queue() {
        let t = turns();
        let _a = t.take(ip(1), PIECE, TURN_WAIT).await.unwrap();
        let _b = t.take(ip(2), PIECE, TURN_WAIT).await.unwrap();
        let started = Instant::now();
        assert!(t
            .take(ip(3), PIECE, Duration::from_millis(600))
            .await
            .is_none());
        assert!(started.elapsed() >= Duration::from_millis(600));
        assert_eq!(t.counts(), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_machine_being_served_takes_more_streams_only_while_nobody_waits() {
        let t = turns();
        let a1 = t.take(ip(1), PIECE, TURN_WAIT).await.unwrap();
        let _a2 = t
            .take(ip(1), PIECE, TURN_WAIT)
            .await
            .expect("joins its turn");
        let _b = t.take(ip(2), PIECE, TURN_WAIT).await.unwrap();
        let c = t.clone();
        let third = tokio::spawn(async move { c.take(ip(3), PIECE, TURN_WAIT).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let e = t.clone();
        let more = tokio::spawn(async move { e.take(ip(1), PIECE, TURN_WAIT).await.is_some() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            t.counts(),
            (3, 2),
            "the third machine waits, and so does A's next"
        );
        drop(a1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(t.counts(), (2, 2), "A still streams; its next waits behind");
        assert!(third.await.unwrap().is_none(), "A and B kept theirs");
        assert!(more.await.unwrap(), "A's next joins once nobody is ahead");
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_that_outlasts_its_span_lets_the_next_in() {
        let t = turns();
        let _slow_a = t.take(ip(1), PIECE, TURN_WAIT).await.unwrap();
        let _slow_b = t.take(ip(2), PIECE, TURN_WAIT).await.unwrap();
        tokio::time::sleep(TURN_SPAN - Duration::from_millis(500)).await;
        let waited = Instant::now();
        let _c = t.take(ip(3), PIECE, TURN_WAIT).await.expect("a turn");
        let took = waited.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took <= Duration::from_millis(500) + RECHECK,
            "admitted once the old turns stopped counting: {took:?}"
        );
        assert_eq!(t.counts(), (3, 0), "the slow ones still stream");
    }

    /// On a slow link a turn counts as long as its request takes, twice
    /// over, at the rate turns were delivered at; not a fixed 2 s, after
    /// which a third machine would share the link.
    #[tokio::test(start_paused = true)]
    async fn a_turn_counts_as_long_as_its_request_takes_at_the_delivered_rate() {
        let t = turns();
        // Two turns of one piece each delivered in 4 s: 256 KiB/s each.
        let (a, b) = (
            t.take(ip(1), PIECE, TURN_WAIT).await.unwrap(),
            t.take(ip(2), PIECE, TURN_WAIT).await.unwrap(),
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        a.delivered();
        b.delivered();
        assert_eq!(t.lock().rates.len(), 2);
        // The next turns count for 8 s each.
        let _a = t.take(ip(1), PIECE, TURN_WAIT).await.unwrap();
        let _b = t.take(ip(2), PIECE, TURN_WAIT).await.unwrap();
        let waited = Instant::now();
        let c = t.clone();
        let third =
            tokio::spawn(async move { c.take(ip(3), PIECE, TURN_SPAN_MAX).await.is_some() });
        assert!(third.await.unwrap());
        let took = waited.elapsed();
        assert!(
            took >= Duration::from_secs(8) && took <= Duration::from_secs(8) + RECHECK,
            "the third machine waited for the spans: {took:?}"
        );
        // A tiny request still counts for the least span, a huge one for
        // the most.
        let now = Instant::now();
        let state = t.lock();
        assert_eq!(state.span(1, now), TURN_SPAN);
        assert_eq!(state.span(1 << 40, now), TURN_SPAN_MAX);
    }

    /// The fastest of the recent rates sizes the spans (one slow reader
    /// does not lengthen everyone's turns), and rates older than
    /// [`RATES_FOR`] count no more.
    #[tokio::test(start_paused = true)]
    async fn the_fastest_recent_rate_sizes_the_spans() {
        let t = turns();
        let slow = t.take(ip(1), PIECE, TURN_WAIT).await.unwrap();
        let fast = t.take(ip(2), PIECE, TURN_WAIT).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        fast.delivered(); // 512 KiB/s
        tokio::time::sleep(Duration::from_secs(6)).await;
        slow.delivered(); // 128 KiB/s
        assert_eq!(
            t.lock().span(PIECE.piece, Instant::now()),
            Duration::from_secs(4),
            "twice a piece at the fastest rate"
        );
        tokio::time::sleep(RATES_FOR).await;
        assert_eq!(t.lock().span(PIECE.piece, Instant::now()), TURN_SPAN);
    }

    /// A stream that joins its machine's turn lengthens the turn to its own
    /// span: a turn begun with a short piece (or before any rate was known)
    /// does not let a third machine in halfway through a long one.
    #[tokio::test(start_paused = true)]
    async fn a_stream_joining_a_turn_lengthens_it_to_its_own_span() {
        let t = turns();
        let short = Size {
            bytes: 1 << 10,
            piece: 1 << 10,
        };
        let first = t.take(ip(1), PIECE, TURN_WAIT).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        first.delivered(); // 256 KiB/s: a 1 MiB piece's span is 8 s
        let _a = t.take(ip(1), short, TURN_WAIT).await.unwrap();
        let _a2 = t
            .take(ip(1), PIECE, TURN_WAIT)
            .await
            .expect("joins its turn");
        let _b = t.take(ip(2), PIECE, TURN_WAIT).await.unwrap();
        tokio::time::sleep(TURN_SPAN + Duration::from_secs(1)).await;
        assert!(
            t.take(ip(3), PIECE, Duration::from_millis(100))
                .await
                .is_none(),
            "machine 1's turn still counts past the short piece's span"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_bounds_per_machine_and_in_all_hold_and_leave_no_entries() {
        let t = Arc::new(Turns::new(2, 3));
        let a: Vec<Turn> = vec![
            t.take(ip(1), PIECE, TURN_WAIT).await.unwrap(),
            t.take(ip(1), PIECE, TURN_WAIT).await.unwrap(),
        ];
        assert!(t
            .take(ip(1), PIECE, Duration::from_millis(300))
            .await
            .is_none());
        let b = t.take(ip(2), PIECE, TURN_WAIT).await.unwrap();
        let later = t.clone();
        let long = 2 * TURN_SPAN;
        let waiting = tokio::spawn(async move { later.take(ip(3), PIECE, long).await.is_some() });
        tokio::time::sleep(TURN_SPAN).await;
        assert_eq!(t.counts(), (3, 1), "three in all, however old the turns");
        drop(b);
        assert!(waiting.await.unwrap());
        drop(a);
        let state = t.lock();
        assert_eq!(
            (state.streams, state.serving.len(), state.queue.len()),
            (0, 0, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_while_waiting_frees_its_place() {
        let t = turns();
        let a = t.take(ip(1), PIECE, TURN_WAIT).await.unwrap();
        let _b = t.take(ip(2), PIECE, TURN_WAIT).await.unwrap();
        let c = t.clone();
        let gone = tokio::spawn(async move { c.take(ip(3), PIECE, TURN_WAIT).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(t.counts(), (2, 0));
        drop(a);
        assert!(
            t.take(ip(4), PIECE, TURN_WAIT).await.is_some(),
            "nobody left ahead"
        );
    }
}
