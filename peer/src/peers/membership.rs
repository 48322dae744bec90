//! Who watches whom, and how records of peers replace each other: the pure
//! rules of the control plane (docs/ARCHITECTURE.md "Control plane").
//!
//! Every peer orders the present peers (itself included) by peer id into a
//! ring and keeps a connection to a few of them: the ones at ring distance
//! 1 and 2 after it, and at a quarter and half of the ring. Each peer is so
//! watched by about [`MAX_WATCHED`] others, news crosses the ring in a few
//! hops, and the connections a peer holds do not grow with the party.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanspread_proto::PeerId;

/// Most peers one peer watches (holds a connection to and checks).
pub const MAX_WATCHED: usize = 4;

/// The peers `us` watches among `present` (which may or may not hold `us`;
/// duplicates are ignored): ring distances 1, 2, n/4 and n/2, where n
/// counts `us` too. Deterministic: every peer computes the same ring.
pub fn watch_targets(us: &PeerId, present: &[PeerId]) -> Vec<PeerId> {
    let mut ring: Vec<&PeerId> = present.iter().chain(std::iter::once(us)).collect();
    ring.sort();
    ring.dedup();
    let n = ring.len();
    let Some(at) = ring.iter().position(|id| *id == us) else {
        return Vec::new();
    };
    let mut targets: Vec<PeerId> = Vec::with_capacity(MAX_WATCHED);
    for distance in [1, 2, n / 4, n / 2] {
        if distance == 0 || distance >= n {
            continue;
        }
        let id = ring[(at + distance) % n];
        if !targets.contains(id) {
            targets.push(id.clone());
        }
    }
    targets.truncate(MAX_WATCHED);
    targets
}

/// Our record's version at start: the wall clock in milliseconds, so a
/// restarted peer's record replaces the one peers remember of it.
pub fn first_version() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Our record's next version after `current`: the clock, or one more when
/// the clock has not moved on (or went back).
pub fn next_version(current: u64) -> u64 {
    first_version().max(current + 1)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::net::identity::Identity;

    fn ids(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|_| Identity::ephemeral().peer_id().clone())
            .collect()
    }

    #[test]
    fn small_parties_watch_everyone() {
        let all = ids(3);
        for us in &all {
            let targets = watch_targets(us, &all);
            assert_eq!(targets.len(), 2, "the two others");
            assert!(!targets.contains(us));
        }
        let two = ids(2);
        assert_eq!(watch_targets(&two[0], &two), vec![two[1].clone()]);
        assert!(watch_targets(&two[0], &two[..1]).is_empty(), "alone");
    }

    /// Every peer is watched by a few others, none by many, and news sent
    /// along watch links reaches everyone in a few hops.
    #[test]
    fn watching_is_bounded_and_spreads_news_in_few_hops() {
        for n in [4, 10, 100, 500] {
            let all = ids(n);
            let links: BTreeMap<&PeerId, Vec<PeerId>> =
                all.iter().map(|us| (us, watch_targets(us, &all))).collect();
            let mut watchers: BTreeMap<&PeerId, usize> = BTreeMap::new();
            for targets in links.values() {
                assert!(targets.len() <= MAX_WATCHED);
                for t in targets {
                    *watchers.entry(t).or_default() += 1;
                }
            }
            for id in &all {
                let w = watchers.get(id).copied().unwrap_or(0);
                assert!((1..=MAX_WATCHED).contains(&w), "n={n}: watched by {w}");
            }
            // Flood from one peer along watch links.
            let mut reached = vec![&all[0]];
            let mut frontier = vec![&all[0]];
            let mut hops = 0;
            while !frontier.is_empty() {
                let mut next = Vec::new();
                for id in frontier {
                    for t in &links[id] {
                        if !reached.contains(&t) {
                            reached.push(t);
                            next.push(t);
                        }
                    }
                }
                if !next.is_empty() {
                    hops += 1;
                }
                frontier = next;
            }
            assert_eq!(reached.len(), n, "n={n}: everyone reached");
            // A ring with links at 1, 2, n/4 and n/2: about n/8 + 4 hops.
            assert!(hops <= n / 8 + 4, "n={n}: {hops} hops");
        }
    }

    #[test]
    fn versions_only_grow() {
        let first = first_version();
        assert!(next_version(first) > first);
        assert_eq!(next_version(u64::MAX - 1), u64::MAX);
    }
}
