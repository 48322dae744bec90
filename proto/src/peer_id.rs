//! Peer ids: who a peer is, derived from its certificate's public key.
//! Pure: the DER walk and the base32 text are plain functions.

use std::fmt;

use serde::Serialize;

/// Bytes of the public-key hash in a peer id: 128 bits, ample against
/// collisions and forgery at LAN scale, 26 characters typed.
const PEER_ID_BYTES: usize = 16;

/// A peer's id: lowercase base32 (RFC 4648 alphabet, no padding) of the first
/// 16 bytes of BLAKE3(SubjectPublicKeyInfo DER).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PeerId(String);

impl PeerId {
    pub fn of_public_key(spki_der: &[u8]) -> Self {
        let hash = blake3::hash(spki_der);
        PeerId(base32(&hash.as_bytes()[..PEER_ID_BYTES]))
    }

    /// The peer id a certificate proves, if it parses.
    pub fn of_certificate(cert_der: &[u8]) -> Option<Self> {
        subject_public_key_info(cert_der).map(Self::of_public_key)
    }

    /// Parse a typed id: case and `-`/space separators are ignored.
    pub fn parse(text: &str) -> Option<Self> {
        let id: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let valid = id.len() == base32_len(PEER_ID_BYTES)
            && id.chars().all(|c| matches!(c, 'a'..='z' | '2'..='7'));
        valid.then_some(PeerId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn base32_len(bytes: usize) -> usize {
    (bytes * 8).div_ceil(5)
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(base32_len(bytes.len()));
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        acc = (acc << 8) | byte as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// One DER element: (tag, the whole element, its contents, what follows).
type DerElement<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn der_element(input: &[u8]) -> Option<DerElement<'_>> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let whole = input.get(..end)?;
    Some((tag, whole, &whole[header..], &input[end..]))
}

/// The SubjectPublicKeyInfo element of an X.509 certificate.
fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (tag, _, cert_body, _) = der_element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _, tbs, _) = der_element(cert_body)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest)?.3;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = der_element(rest)?.3;
    }
    let (tag, spki, _, _) = der_element(rest)?;
    (tag == SEQUENCE).then_some(spki)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(b""), "");
    }

    #[test]
    fn der_walker_refuses_garbage() {
        assert_eq!(subject_public_key_info(b""), None);
        assert_eq!(subject_public_key_info(&[0x30, 0x82, 0xff]), None);
        assert_eq!(
            subject_public_key_info(&[0x30, 0x03, 0x02, 0x01, 0x00]),
            None
        );
    }
}
