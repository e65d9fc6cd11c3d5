//! The credentials of a source reached over HTTPS — Prometheus for `meshwatch verdicts|check`,
//! the agents and Prometheus for the dashboard: a CA bundle (`--ca FILE`) and a bearer token
//! file (`--token-file FILE`). One implementation for both.
//!
//! Parsing is pure ([`parse_ca_bundle`], [`parse_token`]: bytes or text in, values or the
//! reason out); [`read_ca_file`] and [`read_token_file`] read a bounded file and parse it. A
//! token is only ever sent over HTTPS ([`token_over_plain_http`]).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::ClusterError;

/// The largest token accepted (the agent refuses longer ones too).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest CA bundle read.
pub const MAX_CA_BYTES: u64 = 4 << 20;

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

/// Why a token must not go to `url`: a URL that is not `https://` would carry it in clear.
pub fn token_over_plain_http(url: &str) -> Option<&'static str> {
    (!url.trim().starts_with("https://"))
        .then_some("plain HTTP would send the --token-file token in clear: use https://")
}

/// A file's bytes, refused past `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
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

/// The certificates of the CA bundle at `path` (the reason when it cannot be used).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    parse_ca_bundle(&read_bounded(path, MAX_CA_BYTES)?)
}

/// The token the file at `path` holds now (the reason when it cannot be used).
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let bytes = read_bounded(path, MAX_TOKEN_BYTES as u64 + 1)?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    parse_token(&text)
}

/// What a refused request means for the credential flags (empty when it is not that).
pub fn credential_hint(e: &ClusterError, with_token: bool) -> &'static str {
    match e {
        ClusterError::Http { status: 401, .. } if with_token => {
            " — the --token-file token was not accepted"
        }
        ClusterError::Http { status: 401, .. } => {
            " — it wants credentials: pass --token-file (a bearer token)"
        }
        ClusterError::Http { status: 403, .. } => " — the token's user may not query Prometheus",
        _ => "",
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

    #[test]
    fn a_token_goes_over_https_only() {
        assert!(token_over_plain_http("https://prometheus:9090").is_none());
        assert!(token_over_plain_http(" https://p").is_none());
        assert!(token_over_plain_http("http://prometheus:9090").is_some());
        assert!(token_over_plain_http("HTTPS-ish://p").is_some());
    }

    #[test]
    fn refusals_name_the_flag_to_fix() {
        let http = |status| ClusterError::Http {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(credential_hint(&http(401), true).contains("not accepted"));
        assert!(credential_hint(&http(401), false).contains("pass --token-file"));
        assert!(credential_hint(&http(403), true).contains("may not query"));
        assert_eq!(credential_hint(&http(500), true), "");
    }
}
