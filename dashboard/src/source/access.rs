//! How the dashboard reaches a live source that is not plain HTTP on loopback: which
//! certificates it trusts (`--ca FILE`, else the bundled webpki roots; `--insecure-skip-verify`
//! for labs) and the bearer token it sends (`--token-file FILE`, read again at each refresh, so
//! a projected service-account token that the kubelet rotates is picked up).
//!
//! Parsing is pure ([`parse_ca_bundle`], [`parse_token`]); the files are read by [`Access`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::SourceError;

/// The largest token accepted (the agent refuses longer ones too).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest CA bundle read.
const MAX_CA_BYTES: u64 = 4 << 20;

/// Which server certificates are trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Mozilla's roots (webpki-roots), bundled.
    WebPki,
    /// The certificates of a PEM bundle, and only those.
    Bundle {
        path: PathBuf,
        roots: Vec<CertificateDer<'static>>,
    },
    /// Any certificate (`--insecure-skip-verify`): the connection is encrypted but anyone on
    /// the path can read the token. Labs only.
    InsecureSkipVerify,
}

/// Trust and credentials of a live source.
#[derive(Debug, Clone)]
pub struct Access {
    trust: Trust,
    token_file: Option<PathBuf>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            trust: Trust::WebPki,
            token_file: None,
        }
    }
}

impl Access {
    /// From the flags: the CA bundle is read and checked now; the token file must be readable
    /// now (it is read again at each refresh).
    pub fn from_flags(
        ca: Option<&Path>,
        token_file: Option<&Path>,
        insecure_skip_verify: bool,
    ) -> Result<Self, SourceError> {
        let trust = match (ca, insecure_skip_verify) {
            (Some(_), true) => {
                return Err(SourceError::Flag(
                    "--ca and --insecure-skip-verify exclude each other".to_owned(),
                ))
            }
            (None, true) => Trust::InsecureSkipVerify,
            (None, false) => Trust::WebPki,
            (Some(path), false) => Trust::Bundle {
                path: path.to_owned(),
                roots: read_bundle(path)?,
            },
        };
        let access = Access {
            trust,
            token_file: token_file.map(Path::to_owned),
        };
        access.token()?;
        Ok(access)
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token_file.is_some()
    }

    /// The token as the file holds it now (`None` without `--token-file`).
    pub fn token(&self) -> Result<Option<String>, SourceError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let bad = |reason: String| SourceError::Token {
            path: path.clone(),
            reason,
        };
        let bytes = read_bounded(path, MAX_TOKEN_BYTES as u64 + 1).map_err(bad)?;
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".to_owned()))?;
        parse_token(&text).map(Some).map_err(bad)
    }

    /// The rustls configuration of this trust (ring, TLS 1.2 and 1.3).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, SourceError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| SourceError::Flag(format!("TLS: {e}")))?;
        let config = match &self.trust {
            Trust::WebPki => {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Bundle { path, roots } => {
                let mut store = RootCertStore::empty();
                for cert in roots {
                    store.add(cert.clone()).map_err(|e| SourceError::Ca {
                        path: path.clone(),
                        reason: format!("a certificate rustls does not accept as a root: {e}"),
                    })?;
                }
                builder.with_root_certificates(store).with_no_client_auth()
            }
            Trust::InsecureSkipVerify => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The CA certificates (DER) for a client that takes them as bytes.
    pub fn ca_der(&self) -> Option<Vec<Vec<u8>>> {
        match &self.trust {
            Trust::Bundle { roots, .. } => Some(roots.iter().map(|c| c.to_vec()).collect()),
            _ => None,
        }
    }

    pub fn insecure_skip_verify(&self) -> bool {
        matches!(self.trust, Trust::InsecureSkipVerify)
    }
}

fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, SourceError> {
    let bad = |reason: String| SourceError::Ca {
        path: path.to_owned(),
        reason,
    };
    let bytes = read_bounded(path, MAX_CA_BYTES).map_err(bad)?;
    parse_ca_bundle(&bytes).map_err(bad)
}

/// A file's bytes, refused past `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// The certificates of a PEM bundle (other PEM sections are skipped); at least one.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM bundle: {e}"))?;
    if certs.is_empty() {
        return Err(
            "no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)".to_owned(),
        );
    }
    Ok(certs)
}

/// The token of a token file: its text without surrounding whitespace (a trailing newline is
/// common); never empty, no spaces or control characters inside, at most [`MAX_TOKEN_BYTES`].
pub fn parse_token(text: &str) -> Result<String, String> {
    let token = text.trim();
    if token.is_empty() {
        return Err("empty".to_owned());
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!("a token longer than {MAX_TOKEN_BYTES} bytes"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("whitespace or control characters inside the token".to_owned());
    }
    Ok(token.to_owned())
}

/// `--insecure-skip-verify`: any certificate, any name; the handshake's signatures are still
/// checked (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        assert_eq!(parse_token("abc.def\n"), Ok("abc.def".to_owned()));
        assert_eq!(parse_token("  eyJ.x.y  "), Ok("eyJ.x.y".to_owned()));
        assert!(parse_token("").is_err());
        assert!(parse_token(" \n").is_err());
        assert!(parse_token("a b").is_err());
        assert!(parse_token("a\u{7}b").is_err());
        assert!(parse_token(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        assert!(parse_token(&"x".repeat(MAX_TOKEN_BYTES)).is_ok());
    }

    #[test]
    fn a_bundle_without_certificates_is_refused_with_the_reason() {
        let e = parse_ca_bundle(b"hello").err().unwrap_or_default();
        assert!(e.contains("no certificate"), "{e}");
        let e = parse_ca_bundle(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .err()
            .unwrap_or_default();
        assert!(e.contains("no certificate"), "{e}");
        let one = rcgen::generate_simple_self_signed(vec!["a".into()])
            .map(|c| c.cert.pem())
            .unwrap_or_default();
        let two = rcgen::generate_simple_self_signed(vec!["b".into()])
            .map(|c| c.cert.pem())
            .unwrap_or_default();
        let bundle = format!("# a comment\n{one}\n{two}");
        assert_eq!(parse_ca_bundle(bundle.as_bytes()).map(|c| c.len()), Ok(2));
        let truncated = &one[..one.len() / 2];
        assert!(parse_ca_bundle(truncated.as_bytes()).is_err());
    }
}
