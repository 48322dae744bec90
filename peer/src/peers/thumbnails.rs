//! Game pictures for the catalog: from the local library, from a small
//! cache, or fetched from a peer that lists the picture. A picture is
//! addressed by the BLAKE3 hash of its bytes, so a fetched one is checked
//! against the hash it was asked by: a peer cannot swap pictures.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanspread_proto::{Hash, Request, Response};

use super::PeerDirectory;
use crate::library::metadata::{image_mime, Thumbnail, MAX_THUMBNAIL_BYTES};
use crate::library::{thumbnail_with_hash, LibrarySnapshot};

/// Pictures kept in memory, in bytes: a few hundred games' covers.
pub const CACHE_BUDGET: usize = 64 << 20;

/// How long one peer may take to send a picture before the next is asked.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Pictures fetched from peers, oldest dropped first past [`CACHE_BUDGET`].
#[derive(Default)]
pub struct ThumbnailCache {
    inner: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    pictures: HashMap<Hash, Thumbnail>,
    order: VecDeque<Hash>,
    bytes: usize,
}

impl ThumbnailCache {
    fn get(&self, hash: &Hash) -> Option<Thumbnail> {
        let cached = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        cached.pictures.get(hash).cloned()
    }

    fn insert(&self, picture: Thumbnail) {
        let hash = picture.hash;
        let mut cached = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if cached.pictures.contains_key(&hash) {
            return;
        }
        cached.bytes += picture.bytes.len();
        cached.pictures.insert(hash, picture);
        cached.order.push_back(hash);
        while cached.bytes > CACHE_BUDGET {
            let Some(oldest) = cached.order.pop_front() else {
                break;
            };
            if let Some(gone) = cached.pictures.remove(&oldest) {
                cached.bytes -= gone.bytes.len();
            }
        }
    }
}

/// The picture with `hash`: ours, cached, or fetched from a peer listing it.
pub async fn thumbnail(
    hash: Hash,
    local: &LibrarySnapshot,
    directory: &PeerDirectory,
    cache: &ThumbnailCache,
) -> Option<Thumbnail> {
    if let Some(picture) = thumbnail_with_hash(local, &hash).or_else(|| cache.get(&hash)) {
        return Some(picture);
    }
    // Peers listing it that we hold no connection to are connected to
    // (liveness does it, as for a download); each is asked once.
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    let mut asked = std::collections::BTreeSet::new();
    loop {
        let holders = directory.holders_of_thumbnail(&hash);
        if holders.iter().all(|(id, _)| asked.contains(id)) {
            return None;
        }
        for (peer_id, connection) in holders {
            let Some(connection) = connection else {
                continue;
            };
            if !asked.insert(peer_id.clone()) {
                continue;
            }
            if let Some(picture) = fetch(&hash, &peer_id, &connection, cache).await {
                return Some(picture);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// How long a picture fetch waits for a connection to a peer listing it.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ask `peer_id` for the picture `hash`; cached when it is the right one.
async fn fetch(
    hash: &Hash,
    peer_id: &lanspread_proto::PeerId,
    connection: &crate::net::client::PeerConnection,
    cache: &ThumbnailCache,
) -> Option<Thumbnail> {
    let hash = *hash;
    let request = Request::GetThumbnail { hash };
    let answer = tokio::time::timeout(FETCH_TIMEOUT, connection.request(&request)).await;
    let bytes = match answer {
        Ok(Ok(Response::Thumbnail { bytes, .. })) => bytes,
        Ok(Ok(other)) => {
            tracing::debug!(peer = %peer_id, "thumbnail request answered with {other:?}");
            return None;
        }
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer_id, "thumbnail request failed: {e}");
            return None;
        }
        Err(_) => return None,
    };
    match check(&hash, &bytes) {
        Ok(mime) => {
            let picture = Thumbnail {
                hash,
                mime,
                bytes: Arc::new(bytes),
            };
            cache.insert(picture.clone());
            Some(picture)
        }
        Err(problem) => {
            tracing::warn!(peer = %peer_id, "thumbnail refused: {problem}");
            None
        }
    }
}

/// The picture's type, if `bytes` are the picture `hash` names.
fn check(hash: &Hash, bytes: &[u8]) -> Result<&'static str, &'static str> {
    if bytes.len() as u64 > MAX_THUMBNAIL_BYTES {
        return Err("larger than the limit");
    }
    if Hash::of(bytes) != *hash {
        return Err("its bytes do not match its hash");
    }
    image_mime(bytes).ok_or("not a png, jpeg or webp picture")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nrest of a picture";

    #[test]
    fn a_picture_is_accepted_only_under_its_own_hash() {
        assert_eq!(check(&Hash::of(PNG), PNG), Ok("image/png"));
        assert!(check(&Hash::of(b"other"), PNG).is_err());
        assert!(check(&Hash::of(b"text"), b"text").is_err());
    }

    #[test]
    fn the_cache_drops_the_oldest_past_its_budget() {
        let cache = ThumbnailCache::default();
        let big = |n: u8| Thumbnail {
            hash: Hash::of(&[n]),
            mime: "image/png",
            bytes: Arc::new(vec![n; CACHE_BUDGET / 2]),
        };
        let hashes: Vec<Hash> = (0..3u8).map(|n| Hash::of(&[n])).collect();
        for n in 0..3u8 {
            cache.insert(big(n));
        }
        assert_eq!(cache.get(&hashes[0]), None);
        assert_eq!(cache.get(&hashes[1]), Some(big(1)));
        assert_eq!(cache.get(&hashes[2]), Some(big(2)));
    }
}
