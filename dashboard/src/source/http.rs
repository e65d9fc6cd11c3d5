//! A small GET client for the agents' JSON API, over HTTP or HTTPS (rustls through
//! hyper-rustls, trust and token from [`super::access`]): bounded time and body size, errors
//! that say what went wrong (cannot connect, the TLS handshake and why, no answer, refused
//! credentials, another status, too large).

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::access::Access;
use super::SourceError;

/// The largest body read (an agent's edges are bounded; this bounds a misbehaving server).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("HTTP 401 Unauthorized: {0}")]
    Unauthorized(String),
    #[error("HTTP 403 Forbidden: {0}")]
    Forbidden(String),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("reading the answer: {0}")]
    Body(String),
}

/// A base URL checked once: `http[s]://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let trimmed = url.trim().trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected https://HOST:PORT"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err("expected https://HOST:PORT or http://HOST:PORT".to_owned());
        }
        if uri.authority().is_none() {
            return Err("no host: expected https://HOST:PORT".to_owned());
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("credentials in the URL are not sent: use --token-file".to_owned());
        }
        if uri.query().is_some() {
            return Err("a base URL takes no query".to_owned());
        }
        Ok(BaseUrl(trimmed.to_owned()))
    }

    /// `path` (starting with `/`) under this base.
    pub fn join(&self, path: &str) -> Result<Uri, String> {
        format!("{}{path}", self.0)
            .parse()
            .map_err(|e| format!("{e}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

/// A GET client with a timeout, for `http://` and `https://` URLs.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// HTTP, and HTTPS with the trust of `access`.
    pub fn with_access(timeout: Duration, access: &Access) -> Result<Self, SourceError> {
        let tls = access.client_config()?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http_connector(timeout));
        Ok(HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// The body of a `200 OK` answer to `GET uri`, with `Authorization: Bearer <token>` when
    /// a token is given.
    pub async fn get(&self, uri: Uri, token: Option<&str>) -> Result<Bytes, FetchError> {
        let secs = self.timeout.as_secs();
        let mut req = Request::get(uri);
        if let Some(token) = token {
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| FetchError::Connect("the token is not a header value".to_owned()))?;
            value.set_sensitive(true);
            req = req.header(AUTHORIZATION, value);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| FetchError::Connect(e.to_string()))?;
        let fetch = async {
            let res = self.client.request(req).await.map_err(connect_error)?;
            let status = res.status();
            let body = Limited::new(res.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| FetchError::Body(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.trim().chars().take(200).collect();
                return Err(match status.as_u16() {
                    401 => FetchError::Unauthorized(text),
                    403 => FetchError::Forbidden(text),
                    status => FetchError::Status { status, body: text },
                });
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| FetchError::Timeout(secs))?
    }
}

fn http_connector(timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    // hyper-rustls takes https:// URLs through it
    connector.enforce_http(false);
    connector
}

/// A failed request: a TLS error (rustls says why, e.g. the certificate's issuer is not
/// trusted) or another connection failure.
fn connect_error(e: hyper_util::client::legacy::Error) -> FetchError {
    match tls_cause(&e) {
        Some(tls) => FetchError::Tls(tls_reason(tls)),
        None => FetchError::Connect(error_chain(&e)),
    }
}

/// The rustls error behind `e`, if there is one: in its causes, or wrapped in `io::Error`s
/// (hyper-rustls wraps tokio-rustls' `io::Error` in another; `io::Error::source` skips them).
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = unwrap_io(err) {
            return Some(tls);
        }
        cur = err.source();
    }
    None
}

/// `e` as a rustls error, looking through nested `io::Error`s.
fn unwrap_io<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = e;
    for _ in 0..8 {
        if let Some(tls) = cur.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = cur.downcast_ref::<std::io::Error>()?.get_ref()?;
        cur = inner;
    }
    None
}

/// What a TLS failure means for the flags.
fn tls_reason(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    let hint = match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            " (the server's certificate is not signed by a CA in --ca, or in the webpki roots without it)"
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => " (the certificate does not name the host of the URL)",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => " (the certificate has expired)",
        Error::InvalidMessage(_) => " (is it an HTTPS port? try http://)",
        _ => "",
    };
    format!("{e}{hint}")
}

/// An error and its causes, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("http://node-1:9477/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.join("/api/v1/edges").map(|u| u.to_string()),
            Ok("http://node-1:9477/api/v1/edges".to_owned())
        );
        let b = BaseUrl::parse("https://node-1:9477").unwrap_or_else(|e| panic!("{e}"));
        assert!(b.is_https());
        assert!(BaseUrl::parse("ftp://node-1:9477").is_err());
        assert!(BaseUrl::parse("https://user:pw@node-1:9477").is_err());
        assert!(BaseUrl::parse("node-1:9477").is_err());
        assert!(BaseUrl::parse("http://").is_err());
        assert!(BaseUrl::parse("http://a:1/?x=1").is_err());
    }
}
