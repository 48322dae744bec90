//! Real mDNS: two `lanspread-peer serve` processes in their own network
//! namespaces, joined by a bridge, find each other with no address typed.
//! Needs root and `ip` (iproute2); elsewhere it prints why it skipped.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Namespaces, bridge and veths made for this test; removed on drop.
struct Lan {
    namespaces: Vec<String>,
    links: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lan {
    /// Two hosts, 198.51.100.1 and .2 (TEST-NET-2), on one bridge.
    fn new() -> Result<Self, String> {
        let tag = std::process::id() % 100_000;
        let mut lan = Lan {
            namespaces: Vec::new(),
            links: Vec::new(),
        };
        let bridge = format!("lsbr{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        lan.links.push(bridge.clone());
        ip(&["link", "set", &bridge, "up"])?;
        for host in 1..=2 {
            let ns = format!("lsns{tag}h{host}");
            ip(&["netns", "add", &ns])?;
            lan.namespaces.push(ns.clone());
            let outer = format!("lsv{tag}h{host}");
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", "lan0", "netns", &ns,
            ])?;
            lan.links.push(outer.clone());
            ip(&["link", "set", &outer, "master", &bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            let addr = format!("198.51.100.{host}/24");
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "lan0"])?;
            ip(&["-n", &ns, "link", "set", "lan0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        // Let the links settle before anyone binds multicast sockets.
        std::thread::sleep(Duration::from_secs(1));
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = ip(&["link", "del", link]);
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn peers_in_separate_namespaces_find_each_other_by_mdns() {
    let lan = match Lan::new() {
        Ok(lan) => lan,
        Err(reason) => {
            println!("skipped: cannot build network namespaces here ({reason})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel::<(usize, serde_json::Value)>();
    let mut serves = Vec::new();
    for (i, ns) in lan.namespaces.iter().enumerate() {
        let games = dir.path().join(format!("h{i}/games/game{i}"));
        std::fs::create_dir_all(&games).unwrap();
        std::fs::write(games.join("data.bin"), vec![i as u8; 5000]).unwrap();
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_lanspread-peer"),
                "serve",
                "--json",
            ])
            .args(["--name", &format!("host{i}")])
            .arg("--games")
            .arg(dir.path().join(format!("h{i}/games")))
            .arg("--data")
            .arg(dir.path().join(format!("h{i}/data")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str(&line) {
                    if tx.send((i, event)).is_err() {
                        break;
                    }
                }
            }
        });
        serves.push(Serve(child));
    }

    // Each must see the other (display name) and its game, by mDNS alone.
    let mut saw_peer = [false, false];
    let mut saw_game = [false, false];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(saw_peer.iter().all(|s| *s) && saw_game.iter().all(|s| *s)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (host, event) = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("no discovery within 30 s: peers {saw_peer:?}, games {saw_game:?}")
        });
        let other = 1 - host;
        match event["type"].as_str() {
            Some("peerDiscovered") if event["peer"]["displayName"] == format!("host{other}") => {
                saw_peer[host] = true;
            }
            Some("catalogChanged") => {
                let catalog = event["catalog"].as_array().cloned().unwrap_or_default();
                if catalog.iter().any(|e| {
                    e["gameId"] == format!("game{other}")
                        && !e["sources"].as_array().unwrap().is_empty()
                }) {
                    saw_game[host] = true;
                }
            }
            _ => {}
        }
    }
    drop(serves);
}
