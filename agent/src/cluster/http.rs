//! Prometheus' query API over HTTP: `GET {base}/api/v1/query?query=…&time=…`.
//!
//! ureq rather than the hyper client already in the tree: `from_prometheus` is a blocking call
//! (a CLI, or the dashboard from a blocking task), and ureq does blocking HTTP/1.1 with rustls
//! (ring, as the rest of the tree) without an async runtime to start per call — four small
//! crates on top of what the workspace has. Proxies come from `HTTP(S)_PROXY`/`NO_PROXY`, as
//! with curl.

use std::time::Duration;

use super::series::{parse_answer, Answer, Sample};
use super::ClusterError;

/// How long one query may take (a day's window over many series takes a while).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (a large cluster's edges).
const MAX_ANSWER_BYTES: u64 = 256 << 20;
/// How much of an unexpected answer an error quotes.
const QUOTED_CHARS: usize = 300;

/// How to reach a Prometheus behind TLS and authentication (kube-rbac-proxy, an ingress).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// CA certificates (DER) trusted instead of the webpki roots.
    pub ca: Option<Vec<Vec<u8>>>,
    /// Accept any certificate (labs only).
    pub insecure_skip_verify: bool,
    /// Sent as `Authorization: Bearer …`.
    pub bearer: Option<Secret>,
}

/// A credential that `Debug` does not print.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A Prometheus-compatible query endpoint (Prometheus, Thanos Query, Mimir's Prometheus API).
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// The base URL as given, without a trailing `/`.
    base: String,
    /// The base URL without credentials, for messages and reports.
    source: String,
    bearer: Option<Secret>,
}

impl Client {
    /// A client of the Prometheus at `url` (`http://` or `https://`, optionally with a path
    /// prefix such as `/prometheus`).
    pub fn new(url: &str) -> Result<Self, ClusterError> {
        Self::with_access(url, &Access::default())
    }

    /// A client of the Prometheus at `url` reached with `access`.
    pub fn with_access(url: &str, access: &Access) -> Result<Self, ClusterError> {
        let base = url.trim().trim_end_matches('/').to_owned();
        let bad = |reason: &str| ClusterError::BadUrl {
            url: without_credentials(url.trim()),
            reason: reason.to_owned(),
        };
        let uri: ureq::http::Uri = base.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => return Err(bad(&format!("scheme `{other}`: use http:// or https://"))),
            None => return Err(bad("no scheme: use http:// or https://")),
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("no host"));
        };
        if authority.host().is_empty() {
            return Err(bad("no host"));
        }
        if uri.query().is_some() || base.contains('#') {
            return Err(bad("the URL must not carry a query or a fragment"));
        }
        // credentials in the URL (sent as basic authentication) stay out of messages and reports
        let source = without_credentials(&base);
        let mut tls =
            ureq::tls::TlsConfig::builder().disable_verification(access.insecure_skip_verify);
        if let Some(ca) = &access.ca {
            let roots: Vec<_> = ca
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
                .collect();
            tls = tls.root_certs(roots.into());
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(QUERY_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("meshwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            base,
            source,
            bearer: access.bearer.clone(),
        })
    }

    /// The URL without credentials.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluate `query` at `time` (seconds since the epoch) as an instant vector.
    pub fn query(&self, query: &str, time: u64) -> Result<Vec<Sample>, ClusterError> {
        let endpoint = format!("{}/api/v1/query", self.base);
        tracing::debug!(%query, time, "prometheus query");
        let mut request = self
            .agent
            .get(&endpoint)
            .query("query", query)
            .query("time", time.to_string());
        if let Some(Secret(token)) = &self.bearer {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        match (status, parse_answer(&body)) {
            (_, Ok(Answer::Error { error_type, error })) => Err(ClusterError::Query {
                query: query.to_owned(),
                error_type,
                error,
            }),
            (200, Ok(Answer::Vector(samples))) => Ok(samples),
            (200, Err(reason)) => Err(ClusterError::BadResponse {
                url: format!("{}/api/v1/query", self.source),
                reason: format!("{reason}: {}", quote(&body)),
            }),
            // not the API's answer: a proxy's error page, a 404 for a wrong path prefix, ...
            (status, _) => Err(ClusterError::Http {
                url: format!("{}/api/v1/query", self.source),
                status,
                body: quote(&body),
            }),
        }
    }

    fn transport_error(&self, e: ureq::Error) -> ClusterError {
        let reason = match e {
            ureq::Error::BadUri(reason) => {
                return ClusterError::BadUrl {
                    url: self.source.clone(),
                    reason,
                }
            }
            ureq::Error::HostNotFound => "host not found".to_owned(),
            ureq::Error::Timeout(_) => format!(
                "no answer within {}",
                humantime::format_duration(QUERY_TIMEOUT)
            ),
            // rustls' errors come wrapped in an io::Error from the handshake
            ureq::Error::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                Some(tls) => format!("TLS handshake failed: {tls}"),
                None => e.to_string(),
            },
            ureq::Error::Rustls(e) => format!("TLS handshake failed: {e}"),
            other => other.to_string(),
        };
        ClusterError::Unreachable {
            url: self.source.clone(),
            reason,
        }
    }
}

/// The start of an unexpected answer, on one line.
fn quote(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    match one_line.char_indices().nth(QUOTED_CHARS) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None if one_line.is_empty() => "(empty body)".to_owned(),
        None => one_line.to_owned(),
    }
}

/// `url` without the `user:password@` of its authority.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[end..]),
        None => url.to_owned(),
    }
}
