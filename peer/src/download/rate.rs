//! Download rates, per source and in total, and the ETA: a pure meter fed the
//! bytes that verified and the time of each tick (`now` is passed in, so the
//! arithmetic is tested without a clock).

use std::collections::HashMap;
use std::time::Instant;

use lanspread_proto::PeerId;

use crate::events::SourceRate;

/// Weight of the newest window in the moving average: smooth enough for a
/// progress bar, quick enough to follow a source that slows down.
const NEWEST_WEIGHT: f64 = 0.3;

/// Bytes per second, as an exponentially weighted moving average over the
/// windows between ticks.
#[derive(Debug)]
pub struct RateMeter {
    window_start: Instant,
    window_bytes: u64,
    window_by_source: HashMap<PeerId, u64>,
    total: f64,
    by_source: HashMap<PeerId, f64>,
    /// Each source's rate over the last window alone.
    latest: HashMap<PeerId, f64>,
}

impl RateMeter {
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            window_bytes: 0,
            window_by_source: HashMap::new(),
            total: 0.0,
            by_source: HashMap::new(),
            latest: HashMap::new(),
        }
    }

    /// `bytes` of a piece from `source` verified and were written.
    pub fn handle_bytes(&mut self, source: &PeerId, bytes: u64) {
        self.window_bytes += bytes;
        *self.window_by_source.entry(source.clone()).or_default() += bytes;
    }

    /// Close the window at `now`. Sources for which `still_used` is false
    /// are forgotten.
    pub fn handle_tick(&mut self, now: Instant, still_used: impl Fn(&PeerId) -> bool) {
        let elapsed = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64()
            .max(0.001);
        let blend = |old: f64, bytes: u64| {
            (1.0 - NEWEST_WEIGHT) * old + NEWEST_WEIGHT * (bytes as f64 / elapsed)
        };
        self.total = blend(self.total, self.window_bytes);
        self.latest.clear();
        for (source, rate) in self.by_source.iter_mut() {
            let bytes = self.window_by_source.remove(source).unwrap_or(0);
            *rate = blend(*rate, bytes);
            self.latest.insert(source.clone(), bytes as f64 / elapsed);
        }
        for (source, bytes) in self.window_by_source.drain() {
            self.by_source.insert(source.clone(), blend(0.0, bytes));
            self.latest.insert(source, bytes as f64 / elapsed);
        }
        self.by_source.retain(|source, _| still_used(source));
        self.latest.retain(|source, _| still_used(source));
        self.window_bytes = 0;
        self.window_start = now;
    }

    /// The whole download's rate.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// One source's rate; 0 until it delivered something.
    pub fn of(&self, source: &PeerId) -> f64 {
        self.by_source.get(source).copied().unwrap_or(0.0)
    }

    /// What a source has shown it can do: its last window or its average,
    /// whichever is higher. The average takes a few windows to reach a fast
    /// source's rate; deciding how many streams it gets on it made a 1 GiB
    /// download from loopback open its second connection 1.3 s in.
    pub fn capacity(&self, source: &PeerId) -> f64 {
        self.of(source)
            .max(self.latest.get(source).copied().unwrap_or(0.0))
    }

    /// Seconds until `bytes_left` are done at the current rate; `None` while
    /// nothing moves.
    pub fn eta_secs(&self, bytes_left: u64) -> Option<u64> {
        (self.total > 1.0).then(|| (bytes_left as f64 / self.total).ceil() as u64)
    }

    /// Every source's rate, for a progress event.
    pub fn sources(&self) -> Vec<SourceRate> {
        let mut rates: Vec<SourceRate> = self
            .by_source
            .iter()
            .map(|(peer_id, rate)| SourceRate {
                peer_id: peer_id.clone(),
                bytes_per_sec: *rate,
            })
            .collect();
        rates.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        rates
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn peer(text: &str) -> PeerId {
        PeerId::parse(&text.repeat(26)).unwrap()
    }

    #[test]
    fn a_steady_source_converges_to_its_rate() {
        let start = Instant::now();
        let mut meter = RateMeter::new(start);
        let a = peer("a");
        for tick in 1..=40 {
            meter.handle_bytes(&a, 1000);
            meter.handle_tick(start + Duration::from_millis(250 * tick), |_| true);
        }
        assert!((meter.total() - 4000.0).abs() < 1.0, "{}", meter.total());
        assert!((meter.of(&a) - 4000.0).abs() < 1.0);
        assert_eq!(meter.eta_secs(7000), Some(2));
    }

    #[test]
    fn capacity_is_the_last_window_until_the_average_catches_up() {
        let start = Instant::now();
        let mut meter = RateMeter::new(start);
        let a = peer("a");
        meter.handle_bytes(&a, 1000);
        meter.handle_tick(start + Duration::from_secs(1), |_| true);
        assert_eq!(meter.of(&a), 300.0);
        assert_eq!(meter.capacity(&a), 1000.0);
        // Slowing down: the average, above the last window, is what counts.
        meter.handle_bytes(&a, 100);
        meter.handle_tick(start + Duration::from_secs(2), |_| true);
        assert_eq!(meter.capacity(&a), meter.of(&a));
        assert!(meter.capacity(&a) > 100.0);
        meter.handle_tick(start + Duration::from_secs(3), |_| false);
        assert_eq!(meter.capacity(&a), 0.0, "forgotten");
    }

    #[test]
    fn the_newest_window_weighs_three_tenths() {
        let start = Instant::now();
        let mut meter = RateMeter::new(start);
        let (a, b) = (peer("a"), peer("b"));
        meter.handle_bytes(&a, 1000);
        meter.handle_bytes(&b, 3000);
        meter.handle_tick(start + Duration::from_secs(1), |_| true);
        assert_eq!(meter.total(), 1200.0);
        assert_eq!(meter.of(&a), 300.0);
        assert_eq!(meter.of(&b), 900.0);
        // An idle second halves nothing at once: it decays by 0.7.
        meter.handle_tick(start + Duration::from_secs(2), |_| true);
        assert_eq!(meter.of(&a), 210.0);
        let listed: Vec<PeerId> = meter.sources().into_iter().map(|s| s.peer_id).collect();
        assert_eq!(listed, vec![a.clone(), b.clone()]);
    }

    #[test]
    fn sources_no_longer_used_are_forgotten() {
        let start = Instant::now();
        let mut meter = RateMeter::new(start);
        let (a, b) = (peer("a"), peer("b"));
        meter.handle_bytes(&a, 1000);
        meter.handle_bytes(&b, 1000);
        meter.handle_tick(start + Duration::from_secs(1), |p| *p == a);
        assert_eq!(meter.sources().len(), 1);
        assert_eq!(meter.of(&b), 0.0);
    }

    #[test]
    fn nothing_moving_has_no_eta_and_a_zero_window_does_not_divide_by_zero() {
        let start = Instant::now();
        let mut meter = RateMeter::new(start);
        assert_eq!(meter.eta_secs(10), None);
        meter.handle_bytes(&peer("a"), 5);
        meter.handle_tick(start, |_| true);
        assert!(meter.total().is_finite());
    }
}
