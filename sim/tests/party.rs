//! A small party (8 peers) through every scenario: everyone converges, every
//! download completes and matches the seed, a lineup makes everyone ready,
//! nothing is left behind. It
//! asserts correctness only, never speed; the figures are for
//! `lanspread-sim` runs (docs/BENCHMARKS.md).
//!
//! It needs root and `ip netns` (it says why it skips otherwise) and a built
//! `lanspread-peer`: `$LANSPREAD_PEER_BIN`, or the one in this target dir,
//! which `cargo nextest run --workspace` builds for the peer's own tests.

#![cfg(target_os = "linux")]

use std::time::Duration;

use lanspread_sim::{lab, RushConfig, Shape};

const PEERS: usize = 8;

#[test]
fn small_party() {
    if let Some(why) = lanspread_sim::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let bin = match lanspread_sim::find_peer_bin(None) {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("skipped: {e:#}");
            return;
        }
    };
    lab::clean_leftovers(None);
    let shape = Shape::default();
    let warmup = Duration::from_secs(30);

    let idle = lanspread_sim::idle(
        &bin,
        &[PEERS],
        &shape,
        warmup,
        Duration::ZERO,
        Duration::from_secs(3),
    )
    .expect("idle");
    println!("{idle}");
    assert!(idle.converged(), "idle peers did not all see each other");
    assert!(
        lab::own_namespaces().is_empty(),
        "namespaces left after idle"
    );

    let convergence =
        lanspread_sim::convergence(&bin, PEERS, &shape, warmup, Duration::from_secs(20))
            .expect("convergence");
    println!("{convergence}");
    assert!(convergence.complete(), "not every peer saw every change");

    let rush = RushConfig {
        n: PEERS,
        size: 4 << 20,
        files: 3,
        shape: Shape {
            rate: "50mbit".into(),
            ..Shape::default()
        },
        timeout: Some(Duration::from_secs(60)),
        warmup,
    };
    let report = lanspread_sim::rush(&bin, &rush, false).expect("rush");
    println!("{report}");
    assert!(
        report.complete(),
        "not every download completed and matched"
    );

    // Slower links, so the kills land while the pieces move.
    let churn = RushConfig {
        size: 8 << 20,
        shape: Shape {
            rate: "20mbit".into(),
            ..Shape::default()
        },
        timeout: Some(Duration::from_secs(90)),
        ..rush
    };
    let report = lanspread_sim::churn(&bin, &churn).expect("churn");
    println!("{report}");
    assert!(
        report.complete(),
        "not every download completed and matched"
    );
    assert!(report.killed_seed == 1 && report.killed_downloaders > 0);

    let lineup = lanspread_sim::LineupConfig {
        n: PEERS,
        size: 2 << 20,
        shape: Shape {
            rate: "50mbit".into(),
            ..Shape::default()
        },
        timeout: Some(Duration::from_secs(90)),
    };
    let report = lanspread_sim::lineup(&bin, &lineup, warmup).expect("lineup");
    println!("{report}");
    assert!(
        report.complete(),
        "not every attendee got the lineup's games, or the board did not show it"
    );

    assert!(lab::own_namespaces().is_empty(), "namespaces left behind");
}
