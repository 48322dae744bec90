//! The persistent identity of an install: a key pair in the data dir, a
//! self-signed certificate made from it at each start, and the peer id: a
//! short hash of the public key, typeable by a person.

use std::path::Path;

pub use lanspread_proto::PeerId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The key file's name in the data dir (PKCS#8 DER).
pub const KEY_FILE: &str = "identity.key";
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
            Ok(der) => {
                // Readable by its owner only, even if made wider since.
                crate::fsx::restrict_to_owner(&path).map_err(io)?;
                der
            }
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
    let mut file = crate::fsx::owner_only_options()
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
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

    /// Issue 13: the key is readable by its owner only, and made so again
    /// if found wider.
    #[cfg(unix)]
    #[test]
    fn the_key_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(mode(), 0o600);
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
}
