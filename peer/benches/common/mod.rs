//! Shared by the benchmarks: data generation and the bare quinn baseline.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use lanspread_peer::net::identity::Identity;
use lanspread_peer::net::{bind_endpoint, tls};

/// Write `mib` MiB of pseudo-random bytes (incompressible, reproducible).
pub fn write_random(path: &Path, mib: usize, seed: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for c in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
}

/// A bare quinn server (our TLS and transport settings, nothing else) that
/// streams, on each stream, the file at `file:PATH`, or `memory:BYTES` bytes
/// of one in-memory buffer. Prints its address, serves until stdin closes.
pub async fn serve_bare(source: String) {
    let identity = Identity::ephemeral();
    let endpoint = bind_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        Some(tls::server_config(&identity).unwrap()),
    )
    .unwrap();
    println!("{}", endpoint.local_addr().unwrap());
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let source = source.clone();
            tokio::spawn(async move {
                let conn = incoming.await.unwrap();
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let asked = recv.read_to_end(64).await.unwrap_or_default();
                    if let Some((start, len)) = range(&asked) {
                        let path = source.strip_prefix("file:").unwrap();
                        let mut file = std::fs::File::open(path).unwrap();
                        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).unwrap();
                        let mut left = len;
                        while left > 0 {
                            let mut chunk = bytes::BytesMut::zeroed((1 << 20).min(left as usize));
                            std::io::Read::read_exact(&mut file, &mut chunk).unwrap();
                            left -= chunk.len() as u64;
                            send.write_chunk(chunk.freeze()).await.unwrap();
                        }
                    } else if let Some(bytes) = source.strip_prefix("memory:") {
                        let data = bytes::Bytes::from(vec![0x5au8; 1 << 20]);
                        let mut left: usize = bytes.parse().unwrap();
                        while left > 0 {
                            let n = left.min(data.len());
                            send.write_chunk(data.slice(..n)).await.unwrap();
                            left -= n;
                        }
                    } else {
                        let path = source.strip_prefix("file:").unwrap();
                        let mut file = std::fs::File::open(path).unwrap();
                        loop {
                            let mut chunk = bytes::BytesMut::zeroed(1 << 20);
                            let n = std::io::Read::read(&mut file, &mut chunk).unwrap();
                            if n == 0 {
                                break;
                            }
                            chunk.truncate(n);
                            send.write_chunk(chunk.freeze()).await.unwrap();
                        }
                    }
                    let _ = send.finish();
                }
            });
        }
    });
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
}

/// A request for part of the file: `START LEN` in decimal.
fn range(asked: &[u8]) -> Option<(u64, u64)> {
    let (start, len) = std::str::from_utf8(asked).ok()?.split_once(' ')?;
    Some((start.parse().ok()?, len.parse().ok()?))
}

/// `n` connections to a bare server from one endpoint (as a peer's extra
/// connections to a fast source are).
pub async fn bare_connections(addr: SocketAddr, n: usize) -> Vec<quinn::Connection> {
    let identity = Identity::ephemeral();
    let endpoint = bind_endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let mut connections = Vec::new();
    for _ in 0..n {
        let config = tls::client_config(&identity, None, Default::default()).unwrap();
        let connecting = endpoint
            .connect_with(config, addr, tls::SERVER_NAME)
            .unwrap();
        connections.push(connecting.await.unwrap());
    }
    connections
}

/// Read `len` bytes of a bare server's file from `start`, on one stream of
/// each connection in turn (the file split evenly between them, all at once).
pub async fn bare_fetch_split(connections: &[quinn::Connection], len: u64) -> usize {
    let part = len.div_ceil(connections.len() as u64);
    let fetches = connections.iter().enumerate().map(|(i, conn)| async move {
        let start = i as u64 * part;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let asked = format!("{start} {}", part.min(len.saturating_sub(start)));
        send.write_all(asked.as_bytes()).await.unwrap();
        send.finish().unwrap();
        let mut got = 0usize;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.unwrap() {
            got += chunk.bytes.len();
        }
        got
    });
    futures::future::join_all(fetches).await.into_iter().sum()
}

/// Connect to a bare server with the same settings.
pub async fn bare_connection(addr: SocketAddr) -> quinn::Connection {
    let identity = Identity::ephemeral();
    let endpoint = bind_endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    endpoint
        .connect_with(
            tls::client_config(&identity, None, Default::default()).unwrap(),
            addr,
            tls::SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap()
}

/// Read one whole bare stream; returns the bytes received.
pub async fn bare_fetch(conn: &quinn::Connection) -> usize {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"go").await.unwrap();
    send.finish().unwrap();
    let mut got = 0usize;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.unwrap() {
        got += chunk.bytes.len();
    }
    got
}

/// Read one whole bare stream into a file at `path`, and fsync it at the
/// end: a plain file copy over quinn, doing the disk work a download must do
/// (but no verification). A writer thread takes the chunks as they arrive
/// and writes them in order, so receiving never waits on the disk unless the
/// disk falls behind by more than a few chunks.
pub async fn bare_fetch_to_file(conn: &quinn::Connection, path: &Path) -> usize {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"go").await.unwrap();
    send.finish().unwrap();
    let (chunks, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let path = path.to_owned();
    let writer = tokio::task::spawn_blocking(move || {
        let mut rx = rx;
        let mut file = std::fs::File::create(path).unwrap();
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
    });
    let mut got = 0usize;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.unwrap() {
        got += chunk.bytes.len();
        chunks.send(chunk.bytes).await.unwrap();
    }
    drop(chunks);
    writer.await.unwrap();
    got
}
