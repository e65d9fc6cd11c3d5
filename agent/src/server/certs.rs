//! The server's certificate: a PEM pair from files (a Secret, cert-manager), checked for changes
//! and swapped in while connections go on, or a self-signed one generated at start. rustls asks
//! [`CertStore`] for the current pair at each handshake.
//!
//! A new pair is used only when both files parse and the key belongs to the certificate; a bad
//! pair (half-written, mismatched) is logged and the previous one kept. Files are compared by
//! modification time, size and inode, so a Secret's symlink swap is seen too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// Why a certificate pair is not usable.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("--tls-cert {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("--tls-key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("--tls-key {key} does not belong to --tls-cert {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("self-signed certificate: {0}")]
    Generate(String),
}

/// What a reload check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Generated at start, or the files did not change.
    Unchanged,
    /// A new pair is served.
    Reloaded,
    /// The files changed but the new pair is not usable: the previous one is served.
    Kept(String),
}

/// Identity of a file's current content, as far as metadata tells.
type Stamp = Option<(SystemTime, u64, u64)>;

#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    seen: Mutex<(Stamp, Stamp)>,
}

/// The certificate rustls serves.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    files: Option<Files>,
    provider: Arc<CryptoProvider>,
}

impl CertStore {
    /// The pair from `cert` and `key` (PEM): a chain, then a PKCS#8, PKCS#1 or SEC1 key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let provider = provider();
        let seen = (stamp(cert), stamp(key));
        let pair = load(&provider, cert, key)?;
        Ok(CertStore {
            current: RwLock::new(Arc::new(pair)),
            files: Some(Files {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                seen: Mutex::new(seen),
            }),
            provider,
        })
    }

    /// A self-signed certificate for `names` (DNS names or IP addresses), made now.
    pub fn self_signed(names: Vec<String>) -> Result<Self, CertError> {
        let provider = provider();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| CertError::Generate(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::Generate(e.to_string()))?;
        let pair = CertifiedKey::new(vec![generated.cert.der().clone()], signing);
        Ok(CertStore {
            current: RwLock::new(Arc::new(pair)),
            files: None,
            provider,
        })
    }

    /// Whether the pair came from files (and is reloaded).
    pub fn from_files_source(&self) -> bool {
        self.files.is_some()
    }

    /// The leaf certificate served now (DER).
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        let pair = self.current.read().ok()?.clone();
        pair.cert.first().cloned()
    }

    /// SHA-256 of the leaf served now, in hex (what `openssl x509 -fingerprint -sha256` shows).
    pub fn fingerprint(&self) -> String {
        self.leaf()
            .map(|der| {
                ring::digest::digest(&ring::digest::SHA256, der.as_ref())
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default()
    }

    /// Load the files again if they changed since the last look.
    pub fn reload_if_changed(&self) -> Reload {
        let Some(files) = &self.files else {
            return Reload::Unchanged;
        };
        let now = (stamp(&files.cert), stamp(&files.key));
        {
            let Ok(mut seen) = files.seen.lock() else {
                return Reload::Unchanged;
            };
            if *seen == now {
                return Reload::Unchanged;
            }
            // a bad pair is reported once, and tried again when either file changes again
            *seen = now;
        }
        match load(&self.provider, &files.cert, &files.key) {
            Ok(pair) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(pair);
                }
                Reload::Reloaded
            }
            Err(e) => Reload::Kept(e.to_string()),
        }
    }

    /// The rustls configuration serving this store's pair (HTTP/1.1 only, TLS 1.2 and 1.3).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Check the files every `every` until `stop`, logging what changed.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        if self.files.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.reload_if_changed() {
                Reload::Unchanged => {}
                Reload::Reloaded => {
                    tracing::info!(fingerprint = %self.fingerprint(), "TLS certificate reloaded")
                }
                Reload::Kept(error) => tracing::warn!(
                    %error,
                    fingerprint = %self.fingerprint(),
                    "TLS certificate files changed but are not usable: the previous certificate is kept"
                ),
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// rustls with ring, as kube's client uses it: explicit, so that no process-wide default is
/// needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn load(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let cert_err = |reason: String| CertError::Cert {
        path: cert.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| CertError::Key {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        // the key type cannot tell its public key: nothing to compare, accept it
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(_) => Err(CertError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let g = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("generate");
        (g.cert.pem(), g.signing_key.serialize_pem())
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "meshwatch-certs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn files_are_loaded_reloaded_and_a_bad_pair_is_not_taken() {
        let d = dir();
        let (cert, key) = (d.join("tls.crt"), d.join("tls.key"));
        let (c1, k1) = pair("one.example");
        std::fs::write(&cert, &c1).expect("write");
        std::fs::write(&key, &k1).expect("write");
        let store = CertStore::from_files(&cert, &key).expect("first pair");
        let first = store.fingerprint();
        assert_eq!(store.reload_if_changed(), Reload::Unchanged);

        // a new certificate with the old key: mismatched, the first pair stays
        let (c2, k2) = pair("two.example");
        std::fs::write(&cert, &c2).expect("write");
        assert!(
            matches!(store.reload_if_changed(), Reload::Kept(e) if e.contains("does not belong"))
        );
        assert_eq!(store.fingerprint(), first);
        assert_eq!(
            store.reload_if_changed(),
            Reload::Unchanged,
            "reported once"
        );

        // then its key: the second pair is served
        std::fs::write(&key, &k2).expect("write");
        assert_eq!(store.reload_if_changed(), Reload::Reloaded);
        assert_ne!(store.fingerprint(), first);
        let second = store.fingerprint();

        // garbage keeps the second pair
        std::fs::write(&key, "not a key").expect("write");
        assert!(matches!(store.reload_if_changed(), Reload::Kept(_)));
        assert_eq!(store.fingerprint(), second);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_files_at_start_name_the_flag() {
        let d = dir().join("start");
        std::fs::create_dir_all(&d).expect("dir");
        let (cert, key) = (d.join("tls.crt"), d.join("tls.key"));
        let e = CertStore::from_files(&cert, &key).expect_err("missing");
        assert!(e.to_string().starts_with("--tls-cert"), "{e}");
        let (c, _) = pair("x");
        let (_, k) = pair("y");
        std::fs::write(&cert, c).expect("write");
        std::fs::write(&key, "junk").expect("write");
        let e = CertStore::from_files(&cert, &key).expect_err("junk key");
        assert!(e.to_string().starts_with("--tls-key"), "{e}");
        std::fs::write(&key, k).expect("write");
        let e = CertStore::from_files(&cert, &key).expect_err("mismatch");
        assert!(e.to_string().contains("does not belong"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_self_signed_pair_serves() {
        let s = Arc::new(
            CertStore::self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("gen"),
        );
        assert!(!s.from_files_source());
        assert_eq!(s.fingerprint().len(), 32 * 3 - 1);
        assert!(s.server_config().is_ok());
        assert_eq!(s.reload_if_changed(), Reload::Unchanged);
    }
}
