//! The TLS ClientHello: ALPN list, SNI and offered versions, from the client's first bytes.
//!
//! PURE. tls-parser parses the ClientHello body and each extension; this module adds what
//! tls-parser 0.12 lacks: joining a handshake message split over several TLS records (large
//! post-quantum hellos, small `max_fragment_length`), and walking extensions one by one so a
//! single malformed extension does not hide the ALPN list.
//!
//! [`parse_client_hello`] follows the stream-parser convention: `Err(Incomplete)` = need more
//! bytes, `Ok(None)` = definitely not a (well-formed) ClientHello.

use tls_parser::{
    parse_tls_client_hello_extension, parse_tls_handshake_client_hello, SNIType, TlsExtension,
};

use crate::reassembly::MAX_PREFACE_BYTES;

const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const HANDSHAKE_SERVER_HELLO: u8 = 0x02;
const EXT_HEADER_LEN: usize = 4;
/// ALPN names and their bytes we keep per hello (a hostile hello may offer thousands).
pub const MAX_ALPN_NAMES: usize = 64;
const MAX_NAME_BYTES: usize = 255;

/// More bytes are needed to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete;

/// What the client offered in its ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// ALPN protocol names, in the client's order.
    pub alpn: Vec<String>,
    /// The `host_name` server name, if any.
    pub sni: Option<String>,
    /// Versions offered: the `supported_versions` extension, else the legacy version field.
    pub versions: Vec<u16>,
}

/// Whether `bytes` start like a TLS record: content type, then major version 3, minor 0..=4.
/// `Err(Incomplete)` when fewer than three bytes are there and they could still be one.
pub fn is_record_start(bytes: &[u8], content_types: &[u8]) -> Result<bool, Incomplete> {
    match bytes {
        [] => Err(Incomplete),
        [t] => content_types
            .contains(t)
            .then_some(())
            .map_or(Ok(false), |_| Err(Incomplete)),
        [t, 3] => content_types
            .contains(t)
            .then_some(())
            .map_or(Ok(false), |_| Err(Incomplete)),
        [t, major, minor, ..] => Ok(content_types.contains(t) && *major == 3 && *minor <= 4),
        [_, _] => Ok(false),
    }
}

/// Whether `bytes` start with an SSLv2-format ClientHello (2-byte length with the high bit set,
/// message type 1, version 0x0002 or 0x03xx), as very old or very compatible clients send.
pub fn is_sslv2_client_hello(bytes: &[u8]) -> Result<bool, Incomplete> {
    match bytes.get(..5) {
        Some(&[len_hi, _, msg, major, minor]) => Ok(len_hi & 0x80 != 0
            && msg == HANDSHAKE_CLIENT_HELLO
            && ((major == 3 && minor <= 4) || (major == 0 && minor == 2))),
        _ if bytes.first().is_some_and(|b| b & 0x80 == 0) => Ok(false),
        _ => Err(Incomplete),
    }
}

/// Whether the server's first bytes are a TLS handshake record carrying a ServerHello.
pub fn is_server_hello(bytes: &[u8]) -> bool {
    matches!(is_record_start(bytes, &[CONTENT_HANDSHAKE]), Ok(true))
        && bytes.get(RECORD_HEADER_LEN) == Some(&HANDSHAKE_SERVER_HELLO)
}

/// Parse the ClientHello at the start of the client's stream. `scratch` is reused between calls
/// to join a handshake message split across records without allocating per call.
pub fn parse_client_hello(
    stream: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<Option<ClientHello>, Incomplete> {
    let Some(message) = handshake_message(stream, scratch)? else {
        return Ok(None);
    };
    let Ok((_, hello)) = parse_tls_handshake_client_hello(message) else {
        return Ok(None);
    };
    let mut out = ClientHello::default();
    if let Some(extensions) = hello.ext {
        read_extensions(extensions, &mut out);
    }
    if out.versions.is_empty() {
        out.versions.push(hello.version.0);
    }
    Ok(Some(out))
}

/// The body of the first handshake message (after its 4-byte header), which must be a
/// ClientHello, joined from as many handshake records as it spans.
fn handshake_message<'a>(
    stream: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<Option<&'a [u8]>, Incomplete> {
    let mut rest = stream;
    let Some(first) = next_record(&mut rest)? else {
        return Ok(None);
    };
    // The common case, one record holding the whole message, is parsed in place.
    match message_len(first) {
        Ok(None) => return Ok(None),
        Ok(Some(len)) => {
            if let Some(body) = first.get(HANDSHAKE_HEADER_LEN..HANDSHAKE_HEADER_LEN + len) {
                return Ok(Some(body));
            }
        }
        Err(Incomplete) => {} // a record shorter than the handshake header: join more
    }
    scratch.clear();
    scratch.extend_from_slice(first);
    loop {
        let Some(fragment) = next_record(&mut rest)? else {
            return Ok(None);
        };
        scratch.extend_from_slice(fragment);
        if let Some(len) = message_len(scratch)? {
            if scratch.len() >= HANDSHAKE_HEADER_LEN + len {
                return Ok(scratch.get(HANDSHAKE_HEADER_LEN..HANDSHAKE_HEADER_LEN + len));
            }
        }
    }
}

/// The fragment of the next handshake record, advancing `rest` past it. `Ok(None)` when the
/// bytes are not a non-empty handshake record.
fn next_record<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, Incomplete> {
    let Some((header, after)) = rest.split_at_checked(RECORD_HEADER_LEN) else {
        return match is_record_start(rest, &[CONTENT_HANDSHAKE]) {
            Ok(false) => Ok(None),
            Ok(true) | Err(Incomplete) => Err(Incomplete),
        };
    };
    let &[_, _, _, len_hi, len_lo] = header else {
        return Ok(None);
    };
    let record_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if !matches!(is_record_start(header, &[CONTENT_HANDSHAKE]), Ok(true)) || record_len == 0 {
        return Ok(None);
    }
    let fragment = after.get(..record_len).ok_or(Incomplete)?;
    *rest = after.get(record_len..).unwrap_or_default();
    Ok(Some(fragment))
}

/// The announced length of a ClientHello message, `Ok(None)` if this is not one or it could
/// not fit in the preface bound.
fn message_len(joined: &[u8]) -> Result<Option<usize>, Incomplete> {
    match joined.get(..HANDSHAKE_HEADER_LEN) {
        Some(&[msg_type, a, b, c]) => {
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if msg_type != HANDSHAKE_CLIENT_HELLO || len > MAX_PREFACE_BYTES {
                Ok(None)
            } else {
                Ok(Some(len))
            }
        }
        _ if joined.first().is_some_and(|t| *t != HANDSHAKE_CLIENT_HELLO) => Ok(None),
        _ => Err(Incomplete),
    }
}

/// Walk the extensions one at a time: each is framed by type and length, so a malformed one
/// is skipped without losing the others.
fn read_extensions(mut rest: &[u8], out: &mut ClientHello) {
    while let Some(&[_, _, len_hi, len_lo]) = rest.get(..EXT_HEADER_LEN) {
        let end = EXT_HEADER_LEN + usize::from(u16::from_be_bytes([len_hi, len_lo]));
        let Some(one) = rest.get(..end) else { return };
        rest = rest.get(end..).unwrap_or_default();
        match parse_tls_client_hello_extension(one) {
            Ok((_, TlsExtension::ALPN(names))) => {
                out.alpn = names
                    .iter()
                    .take(MAX_ALPN_NAMES)
                    .map(|n| lossy(n))
                    .collect();
            }
            Ok((_, TlsExtension::SNI(names))) => {
                out.sni = names
                    .iter()
                    .find(|(kind, _)| *kind == SNIType::HostName)
                    .map(|(_, name)| lossy(name));
            }
            Ok((_, TlsExtension::SupportedVersions(versions))) => {
                out.versions = versions
                    .iter()
                    .map(|v| v.0)
                    .filter(|v| v & 0x0f0f != 0x0a0a) // GREASE
                    .take(MAX_ALPN_NAMES)
                    .collect();
            }
            _ => {}
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    let bytes = bytes.get(..MAX_NAME_BYTES).unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests;
