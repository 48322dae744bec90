//! Upload rate limiting: a token bucket, shared fairly between the machines
//! we upload to. The bucket and the sharing are pure (they take `now`);
//! [`UploadLimiter`] owns the clock and the sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Bytes sent per acquisition: small enough that the limit holds closely
/// over short spans, large enough that locking costs nothing.
pub const CHUNK: usize = 64 << 10;

/// A token bucket that may go into debt: a request is granted at once when
/// the bucket is not in debt, and the next one waits until it is paid off.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate,
            tokens: Self::burst_of(rate),
            last: now,
        }
    }

    /// 50 ms of traffic (at least one chunk) may go out at once.
    fn burst_of(rate: u64) -> f64 {
        (rate as f64 / 20.0).max(CHUNK as f64)
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        self.rate = rate;
        self.tokens = self.tokens.min(Self::burst_of(rate));
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(Self::burst_of(self.rate));
    }

    /// Ask to send `bytes` at `now`: how long to wait before sending them.
    pub fn handle_request(&mut self, bytes: usize, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.refill(now);
        let wait = if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        };
        self.tokens -= bytes as f64;
        wait
    }
}

/// A source that asked for bytes within this counts as active: it has a
/// share of the rate. Longer than any pause between the chunks of an
/// honest download; short enough that a finished one frees its share soon.
pub const ACTIVE_FOR: Duration = Duration::from_secs(1);

/// The rate split evenly between the sources (machines) that are active:
/// each has its own bucket at `rate / active`, however many streams,
/// connections or ids it sends from. A source that uses less than its share
/// leaves the rest unused until it goes quiet for [`ACTIVE_FOR`]: a floor
/// for every source is worth more at a party than the last few percent.
#[derive(Debug)]
pub struct FairShare<K> {
    rate: u64,
    sources: HashMap<K, Share>,
}

#[derive(Debug)]
struct Share {
    bucket: TokenBucket,
    last_seen: Instant,
}

impl<K: Hash + Eq + Clone> FairShare<K> {
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            sources: HashMap::new(),
        }
    }

    pub fn set_rate(&mut self, rate: u64) {
        self.rate = rate;
    }

    /// Sources active now.
    pub fn active(&self) -> usize {
        self.sources.len()
    }

    /// `source` asks to send `bytes` at `now`: how long it waits for its
    /// share (before it also waits for the total bucket).
    pub fn handle_request(&mut self, source: &K, bytes: usize, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.sources
            .retain(|_, s| now.saturating_duration_since(s.last_seen) < ACTIVE_FOR);
        let rate = self.rate;
        let n = self.sources.len() as u64 + u64::from(!self.sources.contains_key(source));
        let share = (rate / n.max(1)).max(1);
        for s in self.sources.values_mut() {
            if s.bucket.rate() != share {
                s.bucket.set_rate(share, now);
            }
        }
        let entry = self.sources.entry(source.clone()).or_insert_with(|| Share {
            bucket: TokenBucket::new(share, now),
            last_seen: now,
        });
        let wait = entry.bucket.handle_request(bytes, now);
        // Seen until its bytes go out: a source waiting stays active.
        entry.last_seen = now + wait;
        wait
    }
}

/// The shared upload limit of a peer, split fairly between source IPs.
#[derive(Debug)]
pub struct UploadLimiter {
    // A std Mutex: held for a few float operations, never across an await.
    state: Mutex<Limits>,
}

#[derive(Debug)]
struct Limits {
    total: TokenBucket,
    shares: FairShare<IpAddr>,
}

impl UploadLimiter {
    pub fn new(rate: u64) -> Self {
        Self {
            state: Mutex::new(Limits {
                total: TokenBucket::new(rate, Instant::now()),
                shares: FairShare::new(rate),
            }),
        }
    }

    pub fn set_rate(&self, rate: u64) {
        let mut state = self.lock();
        state.total.set_rate(rate, Instant::now());
        state.shares.set_rate(rate);
    }

    pub fn rate(&self) -> u64 {
        self.lock().total.rate()
    }

    /// Wait until `bytes` may be sent to `source`: first for its fair share,
    /// then for the total. Cancel-safe: dropping the wait after a bucket was
    /// charged only makes the next sender wait a little more.
    pub async fn acquire(&self, source: IpAddr, bytes: usize) {
        let wait = self
            .lock()
            .shares
            .handle_request(&source, bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let wait = self.lock().total.handle_request(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send `total` bytes in chunks through the pure bucket; return the
    /// simulated time the last chunk went out.
    fn simulate(rate: u64, total: usize) -> Duration {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate, start);
        let mut now = start;
        let mut sent = 0;
        while sent < total {
            now += bucket.handle_request(CHUNK, now);
            sent += CHUNK;
        }
        now - start
    }

    #[test]
    fn holds_the_rate_over_seconds() {
        let rate = 8 << 20;
        let took = simulate(rate, 32 << 20).as_secs_f64();
        // 32 MiB at 8 MiB/s: 4 s, less the initial burst and the last chunk.
        assert!((3.9..=4.0).contains(&took), "{took}");
    }

    #[test]
    fn zero_is_unlimited() {
        assert_eq!(simulate(0, 100 << 20), Duration::ZERO);
    }

    /// Simulate `streams[i]` streams of source `i`, each sending chunk
    /// after chunk through the fair share and then the total bucket, for
    /// `secs` seconds; return the bytes each source sent.
    fn share_out(rate: u64, streams: &[usize], secs: u64) -> Vec<u64> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let start = Instant::now();
        let mut total = TokenBucket::new(rate, start);
        let mut shares = FairShare::new(rate);
        let mut sent = vec![0u64; streams.len()];
        // (when the stream asks next, its source, which stage).
        let mut queue = BinaryHeap::new();
        for (source, &n) in streams.iter().enumerate() {
            for stream in 0..n {
                queue.push(Reverse((start, source, stream, false)));
            }
        }
        let end = start + Duration::from_secs(secs);
        while let Some(Reverse((now, source, stream, shared))) = queue.pop() {
            if now >= end {
                break;
            }
            if shared {
                let wait = total.handle_request(CHUNK, now);
                sent[source] += CHUNK as u64;
                queue.push(Reverse((now + wait, source, stream, false)));
            } else {
                let wait = shares.handle_request(&source, CHUNK, now);
                queue.push(Reverse((now + wait, source, stream, true)));
            }
        }
        sent
    }

    /// Bug: one bucket served whoever asked most: 8 greedy peers with 4
    /// streams each took ~97 % of the limit from an honest one with 2.
    #[test]
    fn every_source_gets_its_share_however_many_streams_it_opens() {
        let rate = 20_000_000;
        let check = |streams: &[usize]| {
            let sent = share_out(rate, streams, 20);
            let sum: u64 = sent.iter().sum();
            let fair = sum as f64 / streams.len() as f64;
            for (i, &got) in sent.iter().enumerate() {
                assert!(
                    (0.8 * fair..=1.2 * fair).contains(&(got as f64)),
                    "source {i} with {} streams got {got} of {sum}: {sent:?}",
                    streams[i]
                );
            }
            // And the limit holds: 20 s at the rate, plus bursts.
            assert!(sum as f64 <= rate as f64 * 20.0 * 1.05, "{sum}");
        };
        check(&[32, 2]);
        check(&[1, 64]);
        check(&[8, 8, 1, 1]);
        check(&[3]);
    }

    #[test]
    fn a_lone_source_gets_the_whole_rate() {
        let rate = 10_000_000;
        let sent = share_out(rate, &[1], 10)[0] as f64;
        assert!(sent >= rate as f64 * 10.0 * 0.95, "{sent}");
    }

    #[test]
    fn a_quiet_source_frees_its_share() {
        let start = Instant::now();
        let mut shares = FairShare::new(1_000_000);
        shares.handle_request(&1, CHUNK, start);
        shares.handle_request(&2, CHUNK, start);
        assert_eq!(shares.active(), 2);
        shares.handle_request(&1, CHUNK, start + ACTIVE_FOR * 2);
        assert_eq!(shares.active(), 1);
    }

    #[test]
    fn a_rate_change_applies_at_once() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1 << 20, start);
        bucket.handle_request(4 << 20, start);
        bucket.set_rate(0, start);
        assert_eq!(bucket.handle_request(CHUNK, start), Duration::ZERO);
    }
}
