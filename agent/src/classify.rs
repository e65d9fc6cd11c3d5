//! Classification of a connection from the client's first bytes (its preface).
//!
//! PURE. The rules of DESIGN.md: a ClientHello offering an Istio ALPN (or an Istio
//! `outbound_` SNI) is sidecar mTLS; TLS to 15008 with ALPN exactly `h2` and no SNI is ambient
//! HBONE; other TLS is application TLS; anything else the client says first is plaintext; a
//! server that speaks first in clear makes the connection plaintext; a stream whose start was
//! not captured proves plaintext only when it is clearly HTTP, otherwise it is `unknown`.

use serde::{Deserialize, Serialize};

use crate::tls::{self, ClientHello, Incomplete};

/// ALPN values Istio's sidecars have offered, Istio 0.8 to today. The rule is the prefix
/// `istio`; the table documents the values and each has a test.
pub const ISTIO_ALPNS: &[&str] = &[
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
const ISTIO_ALPN_PREFIX: &str = "istio";
/// Istio's outbound cluster SNI: `outbound_.PORT_.SUBSET_.HOST`.
const ISTIO_SNI_PREFIX: &str = "outbound_.";
/// ztunnel and waypoints accept HBONE (HTTP/2 CONNECT over mTLS) here.
pub const HBONE_PORT: u16 = 15008;
const HBONE_ALPN: &str = "h2";
const LINKERD_ALPN: &str = "transport.l5d.io/v1";
/// Bytes of plaintext looked at for the app hint (an HTTP method, the h2c preface).
const APP_HINT_BYTES: usize = 24;
const H2C_PREFACE: &[u8] = b"PRI * HTTP/2.0";
const TLS_RECORD_TYPES_MIDSTREAM: &[u8] = &[0x14, 0x15, 0x16, 0x17];
/// Headers Istio's metadata exchange adds to plaintext HTTP requests: their presence says the
/// client is a sidecar that chose plaintext (lowercase; matched case-insensitively).
pub const ISTIO_METADATA_HEADERS: [&str; 2] = ["x-envoy-peer-metadata-id", "x-envoy-peer-metadata"];
/// What kubelet's HTTP probes send as their User-Agent (`kube-probe/1.30`).
const KUBE_PROBE_USER_AGENT: &[u8] = b"kube-probe/";

/// IANA's HTTP method registry (case-sensitive tokens).
const HTTP_METHODS: &[&str] = &[
    "ACL",
    "BASELINE-CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "OPTIONS",
    "ORDERPATCH",
    "PATCH",
    "POST",
    "PRI",
    "PROPFIND",
    "PROPPATCH",
    "PUT",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "TRACE",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION-CONTROL",
];

/// The security of a connection, as a STRICT PeerAuthentication would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    IstioMtls,
    Tls,
    Plaintext,
    Unknown,
}

impl Security {
    pub const ALL: [Security; 4] = [
        Security::IstioMtls,
        Security::Tls,
        Security::Plaintext,
        Security::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Security::IstioMtls => "istio_mtls",
            Security::Tls => "tls",
            Security::Plaintext => "plaintext",
            Security::Unknown => "unknown",
        }
    }

    /// Whether STRICT mTLS would refuse this connection.
    pub fn blocks_strict(self) -> bool {
        matches!(self, Security::Tls | Security::Plaintext)
    }
}

/// Which Istio data plane the mTLS came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mesh {
    Sidecar,
    Ambient,
    None,
}

impl Mesh {
    pub fn as_str(self) -> &'static str {
        match self {
            Mesh::Sidecar => "sidecar",
            Mesh::Ambient => "ambient",
            Mesh::None => "none",
        }
    }
}

/// What the client appears to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum App {
    Http1,
    H2c,
    Tls,
    Linkerd,
    Other,
}

impl App {
    pub fn as_str(self) -> &'static str {
        match self {
            App::Http1 => "http1",
            App::H2c => "h2c",
            App::Tls => "tls",
            App::Linkerd => "linkerd",
            App::Other => "other",
        }
    }
}

/// Connections per security class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityCounts {
    pub istio_mtls: u64,
    pub tls: u64,
    pub plaintext: u64,
    pub unknown: u64,
}

impl SecurityCounts {
    pub fn add(&mut self, security: Security, n: u64) {
        match security {
            Security::IstioMtls => self.istio_mtls += n,
            Security::Tls => self.tls += n,
            Security::Plaintext => self.plaintext += n,
            Security::Unknown => self.unknown += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.istio_mtls + self.tls + self.plaintext + self.unknown
    }
}

/// How a connection was classified and what the client offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub security: Security,
    pub mesh: Mesh,
    pub app: App,
    /// The ClientHello, boxed: most flows are either not TLS or have it only briefly.
    pub hello: Option<Box<ClientHello>>,
    /// The ClientHello was in the SSLv2 format.
    pub sslv2: bool,
    /// The server spoke first, in clear.
    pub server_first: bool,
    /// A kubelet HTTP probe (`User-Agent: kube-probe/…`).
    pub kube_probe: bool,
}

impl Classification {
    fn simple(security: Security, app: App) -> Self {
        Self {
            security,
            mesh: Mesh::None,
            app,
            hello: None,
            sslv2: false,
            server_first: false,
            kube_probe: false,
        }
    }

    /// No client payload was seen.
    pub fn no_payload() -> Self {
        Self::simple(Security::Unknown, App::Other)
    }

    /// The server sent its greeting in clear before the client said anything (SMTP, MySQL, ...).
    pub fn server_first() -> Self {
        Self {
            server_first: true,
            ..Self::simple(Security::Plaintext, App::Other)
        }
    }
}

/// Classify the client's preface, captured from the stream's first byte. `Err(Incomplete)`
/// asks for more bytes; with `complete` set (no more will come) it always decides.
pub fn classify_preface(
    preface: &[u8],
    server_port: u16,
    complete: bool,
    scratch: &mut Vec<u8>,
) -> Result<Classification, Incomplete> {
    let decide = |r: Result<bool, Incomplete>| match r {
        Err(Incomplete) if complete => Ok(false),
        other => other,
    };
    if decide(tls::is_record_start(preface, &[0x16]))? {
        return match tls::parse_client_hello(preface, scratch) {
            Ok(Some(hello)) => Ok(from_hello(hello, server_port)),
            // TLS records, but no readable ClientHello: TLS of some kind, Istio or not unknown.
            Ok(None) => Ok(Classification::simple(Security::Unknown, App::Tls)),
            Err(Incomplete) if complete => Ok(Classification::simple(Security::Unknown, App::Tls)),
            Err(Incomplete) => Err(Incomplete),
        };
    }
    if decide(tls::is_sslv2_client_hello(preface))? {
        return Ok(Classification {
            sslv2: true,
            ..Classification::simple(Security::Tls, App::Tls)
        });
    }
    match app_hint(preface) {
        Some(App::Http1) => {
            // wait for the end of the request's headers: they tell a sidecar's plaintext
            let (head, ended) = scan_head(preface);
            if !ended && !complete {
                return Err(Incomplete);
            }
            Ok(http1(head))
        }
        Some(app) => Ok(Classification::simple(Security::Plaintext, app)),
        None if complete => Ok(Classification::simple(Security::Plaintext, App::Other)),
        None => Err(Incomplete),
    }
}

/// What an HTTP/1 request's header block says about its client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Http1Head {
    /// One of [`ISTIO_METADATA_HEADERS`]: a sidecar chose plaintext.
    pub istio_metadata: bool,
    /// `User-Agent: kube-probe/…`: a kubelet probe.
    pub kube_probe: bool,
}

/// Read an HTTP/1 request's header lines in one pass (the request line is not a header), up to
/// the empty line that ends them; also whether that line was reached. Lines are found eight
/// bytes at a time ([`find_byte`]): a connection's request is read once, but a churn of short
/// connections reads one per connection.
pub fn scan_head(bytes: &[u8]) -> (Http1Head, bool) {
    let mut head = Http1Head::default();
    let Some(end) = find_byte(bytes, b'\n') else {
        return (head, false);
    };
    let mut rest = bytes.get(end + 1..).unwrap_or_default();
    // the last piece has no newline after it: not a line yet
    while let Some(end) = find_byte(rest, b'\n') {
        let line = rest.get(..end).unwrap_or_default();
        rest = rest.get(end + 1..).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return (head, true);
        }
        // the names looked for start with `x` or `u` (any case): other lines end here
        let first = line.trim_ascii_start().first().map_or(0, |b| b | 0x20);
        if first != b'x' && first != b'u' {
            continue;
        }
        let Some(colon) = find_byte(line, b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default().trim_ascii();
        let is = |h: &str| name.len() == h.len() && same_ignoring_case(name, h.as_bytes());
        if ISTIO_METADATA_HEADERS.iter().any(|h| is(h)) {
            head.istio_metadata = true;
        } else if is("user-agent") {
            let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
            head.kube_probe = value.starts_with(KUBE_PROBE_USER_AGENT);
        }
    }
    (head, false)
}

/// `bytes` equals `lower` (lowercase ASCII) ignoring ASCII case, as `eq_ignore_ascii_case` says,
/// in a few instructions a byte: a lowercase letter matches itself with bit 5 forced on (only
/// its uppercase form also does), any other byte only itself.
fn same_ignoring_case(bytes: &[u8], lower: &[u8]) -> bool {
    bytes.len() == lower.len()
        && bytes.iter().zip(lower).all(|(b, l)| {
            if l.is_ascii_lowercase() {
                b | 0x20 == *l
            } else {
                b == l
            }
        })
}

/// The index of the first `needle` in `hay`, eight bytes at a time: a word XORed with the
/// needle repeated has a zero byte where the needle is, and `(w - 0x01..) & !w & 0x80..` flags
/// the first zero byte exactly (a borrow can only add flags above it). PURE.
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(word) ^ pattern;
        let zero = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = hay.get(at..).unwrap_or_default();
    tail.iter().position(|b| *b == needle).map(|i| at + i)
}

/// A plaintext HTTP/1 request; from a sidecar when it carries Istio's metadata headers; a
/// kubelet probe when its User-Agent says so.
fn http1(head: Http1Head) -> Classification {
    Classification {
        mesh: if head.istio_metadata {
            Mesh::Sidecar
        } else {
            Mesh::None
        },
        kube_probe: head.kube_probe,
        ..Classification::simple(Security::Plaintext, App::Http1)
    }
}

/// Whether an HTTP/1 header block (or the part of it at hand) has one of
/// [`ISTIO_METADATA_HEADERS`].
pub fn has_istio_metadata(head: &[u8]) -> bool {
    scan_head(head).0.istio_metadata
}

/// Classify bytes from the middle of a stream (its start was not captured). A ClientHello
/// is still a start; other TLS records prove nothing about Istio; HTTP proves plaintext.
pub fn classify_midstream(bytes: &[u8], server_port: u16, scratch: &mut Vec<u8>) -> Classification {
    if let Ok(Some(hello)) = tls::parse_client_hello(bytes, scratch) {
        return from_hello(hello, server_port);
    }
    if matches!(
        tls::is_record_start(bytes, TLS_RECORD_TYPES_MIDSTREAM),
        Ok(true)
    ) {
        return Classification::simple(Security::Unknown, App::Tls);
    }
    match app_hint(bytes) {
        Some(App::Http1) => http1(scan_head(bytes).0),
        Some(App::H2c) => Classification::simple(Security::Plaintext, App::H2c),
        _ if is_http_response(bytes) => Classification::simple(Security::Plaintext, App::Http1),
        _ => Classification::simple(Security::Unknown, App::Other),
    }
}

/// Whether bytes are the start of an HTTP/1.x response (the sender is the server).
pub fn is_http_response(bytes: &[u8]) -> bool {
    bytes.starts_with(b"HTTP/1.")
}

/// Whether bytes are the start of an HTTP/1.x request or the h2c preface (the sender is the
/// client).
pub fn is_http_request(bytes: &[u8]) -> bool {
    matches!(app_hint(bytes), Some(App::Http1 | App::H2c))
}

fn from_hello(hello: ClientHello, server_port: u16) -> Classification {
    let istio_alpn = hello.alpn.iter().any(|a| a.starts_with(ISTIO_ALPN_PREFIX));
    let istio_sni = hello
        .sni
        .as_deref()
        .is_some_and(|s| s.starts_with(ISTIO_SNI_PREFIX));
    let hbone = server_port == HBONE_PORT
        && hello.sni.is_none()
        && matches!(hello.alpn.as_slice(), [only] if only == HBONE_ALPN);
    let (security, mesh) = if istio_alpn || istio_sni {
        (Security::IstioMtls, Mesh::Sidecar)
    } else if hbone {
        (Security::IstioMtls, Mesh::Ambient)
    } else {
        (Security::Tls, Mesh::None)
    };
    let app = if hello.alpn.iter().any(|a| a == LINKERD_ALPN) {
        App::Linkerd
    } else {
        App::Tls
    };
    Classification {
        security,
        mesh,
        app,
        hello: Some(Box::new(hello)),
        sslv2: false,
        server_first: false,
        kube_probe: false,
    }
}

/// `Some(hint)` once the bytes decide it; `None` while they are a proper prefix of an HTTP
/// method plus space or of the h2c preface.
fn app_hint(bytes: &[u8]) -> Option<App> {
    let head = bytes.get(..APP_HINT_BYTES).unwrap_or(bytes);
    if head.starts_with(H2C_PREFACE) {
        return Some(App::H2c);
    }
    if H2C_PREFACE.starts_with(head) {
        return None;
    }
    if let Some(space) = head.iter().position(|b| *b == b' ') {
        let token = head.get(..space).unwrap_or_default();
        let is_method = HTTP_METHODS.iter().any(|m| m.as_bytes() == token);
        return Some(if is_method { App::Http1 } else { App::Other });
    }
    let could_grow = HTTP_METHODS.iter().any(|m| m.as_bytes().starts_with(head));
    if could_grow && head.len() < APP_HINT_BYTES {
        None
    } else {
        Some(App::Other)
    }
}

#[cfg(test)]
mod tests;
