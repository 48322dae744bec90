//! Real mDNS: two `lanspread-peer serve` processes in their own network
//! namespaces, joined by a bridge, find each other with no address typed.
//! Needs root and `ip` (iproute2); elsewhere it prints why it skipped.
#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{ServeChild, PEER};

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
        lan.wait_until_up()?;
        Ok(lan)
    }

    /// Wait until every host's link is up and its bridge port forwards, so
    /// no announcement is lost before anyone binds multicast sockets. The
    /// kernel has no event for this that `ip` can wait on without a
    /// monitor process; its state is read again every 20 ms, for at most 5 s.
    fn wait_until_up(&self) -> Result<(), String> {
        let show = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let hosts_up = self
                .namespaces
                .iter()
                .all(|ns| show(&["-n", ns, "-o", "link", "show", "lan0"]).contains("LOWER_UP"));
            let ports_forward = self.links[1..].iter().all(|port| {
                show(&["-d", "-o", "link", "show", port]).contains("bridge_slave state forwarding")
            });
            if hosts_up && ports_forward {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the test LAN's links did not come up within 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
    let mut serves = Vec::new();
    for (i, ns) in lan.namespaces.iter().enumerate() {
        let games = dir.path().join(format!("h{i}/games/game{i}"));
        std::fs::create_dir_all(&games).unwrap();
        std::fs::write(games.join("data.bin"), vec![i as u8; 5000]).unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, PEER, "serve", "--json"])
            .args(["--name", &format!("host{i}")])
            .arg("--games")
            .arg(dir.path().join(format!("h{i}/games")))
            .arg("--data")
            .arg(dir.path().join(format!("h{i}/data")));
        // `ip netns exec` execs the peer: the child is the peer itself.
        serves.push(ServeChild::spawn(command));
    }

    // Each must see the other (display name) and its game, by mDNS alone.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (host, serve) in serves.iter().enumerate() {
        let other = 1 - host;
        let (mut saw_peer, mut saw_game) = (false, false);
        let left = deadline.saturating_duration_since(Instant::now());
        serve.wait_event(
            &format!("host{host} discovers host{other}"),
            left,
            |event| {
                match event["type"].as_str() {
                    Some("peerDiscovered")
                        if event["peer"]["displayName"] == format!("host{other}") =>
                    {
                        saw_peer = true;
                    }
                    Some("catalogChanged") => {
                        let catalog = event["catalog"].as_array().cloned().unwrap_or_default();
                        saw_game |= catalog.iter().any(|e| {
                            e["gameId"] == format!("game{other}")
                                && !e["sources"].as_array().unwrap().is_empty()
                        });
                    }
                    _ => {}
                }
                (saw_peer && saw_game).then_some(())
            },
        );
    }
    for serve in serves {
        serve.stop();
    }
    drop(lan);
}
