//! Who talks to whom, from the wire: a packet socket in the root namespace
//! sees every frame a peer sends into the bridge (on the host end of its
//! veth); the distinct unicast UDP destinations of each peer over a window
//! are its working connections, whatever the control plane calls them.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::bail;

/// `PACKET_IGNORE_OUTGOING` (Linux 4.20), in case libc lacks it.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// A running capture; [`Capture::finish`] returns, per peer, the unicast
/// addresses it sent UDP to.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<HashMap<usize, HashSet<Ipv4Addr>>>>,
}

impl Capture {
    /// Count what the peers behind `host_ifs` (host ends of their veths,
    /// by node index) send.
    pub fn start(host_ifs: &[String]) -> anyhow::Result<Self> {
        let mut by_ifindex = HashMap::new();
        for (node, name) in host_ifs.iter().enumerate() {
            let index: i32 = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?
                .trim()
                .parse()?;
            by_ifindex.insert(index, node);
        }
        // SAFETY: plain socket calls on a descriptor we own; the option
        // values are local integers that outlive the calls.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                // Every protocol: on a bridge port only the taps for all of
                // them see a frame before the bridge takes it.
                (libc::ETH_P_ALL as u16).to_be() as libc::c_int,
            );
            if fd < 0 {
                bail!("packet socket: {}", std::io::Error::last_os_error());
            }
            let one: libc::c_int = 1;
            let size: libc::c_int = 16 << 20;
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                int,
            );
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                int,
            );
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            fd
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen: HashMap<usize, HashSet<Ipv4Addr>> = HashMap::new();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: `buf` and `from` are valid for the lengths given.
                    let (n, ifindex, protocol) = unsafe {
                        let mut from: libc::sockaddr_ll = std::mem::zeroed();
                        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                        let n = libc::recvfrom(
                            fd,
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            libc::MSG_TRUNC,
                            (&mut from as *mut libc::sockaddr_ll).cast(),
                            &mut len,
                        );
                        (n, from.sll_ifindex, u16::from_be(from.sll_protocol))
                    };
                    if n < 20 || protocol != libc::ETH_P_IP as u16 {
                        continue;
                    }
                    let Some(&node) = by_ifindex.get(&ifindex) else {
                        continue;
                    };
                    // IPv4, UDP, unicast destination.
                    if buf[0] >> 4 != 4 || buf[9] != 17 {
                        continue;
                    }
                    let dst = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
                    if dst.is_multicast() || dst.is_broadcast() {
                        continue;
                    }
                    seen.entry(node).or_default().insert(dst);
                }
                // SAFETY: our descriptor, closed once.
                unsafe { libc::close(fd) };
                seen
            })
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop and return, per node index, the unicast addresses it sent to.
    pub fn finish(mut self) -> HashMap<usize, HashSet<Ipv4Addr>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
