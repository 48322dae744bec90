//! Upload rate limiting: a token bucket. The bucket is pure (it takes `now`);
//! [`UploadLimiter`] owns the clock and the sleeping.

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

/// The shared upload limit of a peer.
#[derive(Debug)]
pub struct UploadLimiter {
    // A std Mutex: held for a few float operations, never across an await.
    bucket: Mutex<TokenBucket>,
}

impl UploadLimiter {
    pub fn new(rate: u64) -> Self {
        Self {
            bucket: Mutex::new(TokenBucket::new(rate, Instant::now())),
        }
    }

    pub fn set_rate(&self, rate: u64) {
        self.lock().set_rate(rate, Instant::now());
    }

    pub fn rate(&self) -> u64 {
        self.lock().rate()
    }

    /// Wait until `bytes` may be sent. Cancel-safe: dropping the wait after
    /// the bucket was charged only makes the next sender wait a little more.
    pub async fn acquire(&self, bytes: usize) {
        let wait = self.lock().handle_request(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
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

    #[test]
    fn a_rate_change_applies_at_once() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1 << 20, start);
        bucket.handle_request(4 << 20, start);
        bucket.set_rate(0, start);
        assert_eq!(bucket.handle_request(CHUNK, start), Duration::ZERO);
    }
}
