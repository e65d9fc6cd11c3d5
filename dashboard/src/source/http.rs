//! A small plain-HTTP GET client for the agents' JSON API: bounded time and body size, errors
//! that say what went wrong (cannot connect, no answer, a status, too large).

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The largest body read (an agent's edges are bounded; this bounds a misbehaving server).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("reading the answer: {0}")]
    Body(String),
}

/// A base URL checked once: `http://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let trimmed = url.trim().trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(
                    "https is not supported here: the agents serve plain HTTP (use http://)"
                        .to_owned(),
                )
            }
            _ => return Err("expected http://HOST:PORT".to_owned()),
        }
        if uri.authority().is_none() {
            return Err("no host: expected http://HOST:PORT".to_owned());
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
}

/// A GET client with a timeout.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// The body of a `200 OK` answer to `GET uri`.
    pub async fn get(&self, uri: Uri) -> Result<Bytes, FetchError> {
        let secs = self.timeout.as_secs();
        let fetch = async {
            let res = self
                .client
                .get(uri)
                .await
                .map_err(|e| FetchError::Connect(error_chain(&e)))?;
            let status = res.status();
            let body = Limited::new(res.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| FetchError::Body(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(FetchError::Status {
                    status: status.as_u16(),
                    body: text.trim().chars().take(200).collect(),
                });
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| FetchError::Timeout(secs))?
    }
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
        assert!(BaseUrl::parse("https://node-1:9477").is_err());
        assert!(BaseUrl::parse("node-1:9477").is_err());
        assert!(BaseUrl::parse("http://").is_err());
        assert!(BaseUrl::parse("http://a:1/?x=1").is_err());
    }
}
