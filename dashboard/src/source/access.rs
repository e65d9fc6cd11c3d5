//! How the dashboard reaches a live source that is not plain HTTP on loopback: which
//! certificates it trusts (`--ca FILE`, else the bundled webpki roots; `--insecure-skip-verify`
//! for labs) and the bearer token it sends (`--token-file FILE`, read again at each refresh, so
//! a projected service-account token that the kubelet rotates is picked up).
//!
//! Reading and parsing the CA bundle and the token are the agent library's
//! ([`meshwatch::cluster::credentials`], shared with `meshwatch verdicts|check`); [`Access`]
//! holds what the flags name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use meshwatch::cluster::credentials::{read_ca_file, read_token_file};

use super::SourceError;

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
        read_token_file(path)
            .map(Some)
            .map_err(|reason| SourceError::Token {
                path: path.clone(),
                reason,
            })
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
    read_ca_file(path).map_err(|reason| SourceError::Ca {
        path: path.to_owned(),
        reason,
    })
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
