//! The persistent identity of an install: a key pair in the data dir, a
//! self-signed certificate made from it at each start, and the peer id: a
//! short hash of the public key, typeable by a person.

use std::fmt;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The key file's name in the data dir (PKCS#8 DER).
pub const KEY_FILE: &str = "identity.key";
/// Bytes of the public-key hash in a peer id: 128 bits, ample against
/// collisions and forgery at LAN scale, 26 characters typed.
const PEER_ID_BYTES: usize = 16;

/// A peer's id: lowercase base32 (RFC 4648 alphabet, no padding) of the first
/// 16 bytes of BLAKE3(SubjectPublicKeyInfo DER).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
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

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write the identity key {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("the identity key {path} is damaged ({reason}); move it away to make a new identity")]
    Damaged { path: String, reason: String },
    #[error("cannot make a certificate: {0}")]
    Certificate(String),
}

/// This install's key and certificate.
pub struct Identity {
    key_der: Vec<u8>,
    cert_der: CertificateDer<'static>,
    peer_id: PeerId,
}

impl Identity {
    /// Load the key from `data_dir`, or create and save one.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        let shown = path.display().to_string();
        let io = |error| IdentityError::Io {
            path: shown.clone(),
            error,
        };
        let key_der = match std::fs::read(&path) {
            Ok(der) => der,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate()
                    .map_err(|e| IdentityError::Certificate(e.to_string()))?;
                let der = key.serialize_der();
                write_private(&path, &der).map_err(io)?;
                der
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_key_der(key_der).map_err(|reason| IdentityError::Damaged {
            path: shown.clone(),
            reason,
        })
    }

    /// A throwaway identity (tests, one-shot CLI runs).
    pub fn ephemeral() -> Self {
        let key = rcgen::KeyPair::generate().expect("key generation");
        Self::from_key_der(key.serialize_der()).expect("fresh key is valid")
    }

    fn from_key_der(key_der: Vec<u8>) -> Result<Self, String> {
        let pkcs8 = PrivatePkcs8KeyDer::from(key_der.clone());
        let key = rcgen::KeyPair::try_from(&pkcs8).map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(vec!["lanspread.peer".to_owned()])
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let peer_id = PeerId::of_certificate(cert.der())
            .ok_or_else(|| "our own certificate does not parse".to_owned())?;
        Ok(Self {
            key_der,
            cert_der: cert.der().clone(),
            peer_id,
        })
    }

    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone()]
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
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
    fn the_peer_id_survives_restarts_and_matches_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let again = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.peer_id(), again.peer_id());
        assert_eq!(
            PeerId::of_certificate(&again.cert_chain()[0]).as_ref(),
            Some(first.peer_id())
        );
        assert_ne!(Identity::ephemeral().peer_id(), first.peer_id());
        assert_eq!(first.peer_id().as_str().len(), 26);
    }

    #[test]
    fn a_damaged_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        let err = Identity::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn typed_ids_parse_leniently() {
        let id = Identity::ephemeral().peer_id().clone();
        let typed = id.as_str().to_uppercase();
        let dashed = format!("{}-{}", &typed[..13], &typed[13..]);
        assert_eq!(PeerId::parse(&dashed), Some(id));
        assert_eq!(PeerId::parse("short"), None);
        assert_eq!(PeerId::parse(&"1".repeat(26)), None);
    }

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
