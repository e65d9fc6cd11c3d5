//! Tunnels that CNIs use: VXLAN (UDP 4789, flannel's 8472), Geneve (UDP 6081), IP-in-IP, GRE.
//! Each yields the inner frame; the inner connection is what gets classified.

use etherparse::UdpHeaderSlice;

use super::{ip, link, DecodeError, Layer, Next, Skip};

pub const VXLAN_PORT: u16 = 4789;
pub const VXLAN_FLANNEL_PORT: u16 = 8472;
pub const GENEVE_PORT: u16 = 6081;
const VXLAN_HEADER_LEN: usize = 8;
const GENEVE_BASE_LEN: usize = 8;

/// The encapsulation a segment arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tunnel {
    Vxlan,
    Geneve,
    Ipip,
    Gre,
}

impl Tunnel {
    pub fn as_str(self) -> &'static str {
        match self {
            Tunnel::Vxlan => "vxlan",
            Tunnel::Geneve => "geneve",
            Tunnel::Ipip => "ipip",
            Tunnel::Gre => "gre",
        }
    }
}

/// The inner frame of a tunnel packet; `None` when `protocol` is not a tunnel we unwrap.
pub(super) fn unwrap(
    protocol: u8,
    payload: &[u8],
) -> Result<Option<(Tunnel, Next<'_>)>, DecodeError> {
    match protocol {
        ip::IPIP | ip::IPV6_IN_IP => Ok(Some((Tunnel::Ipip, Next::Ip(payload)))),
        ip::GRE => gre(payload).map(|inner| inner.map(|next| (Tunnel::Gre, next))),
        ip::UDP => udp(payload),
        _ => Ok(None),
    }
}

/// Why a non-TCP, non-tunnel IP packet was skipped.
pub(super) fn skip_reason(protocol: u8) -> Skip {
    match protocol {
        ip::GRE => Skip::UnsupportedEncapsulation,
        _ => Skip::NotTcp,
    }
}

fn udp(payload: &[u8]) -> Result<Option<(Tunnel, Next<'_>)>, DecodeError> {
    let header =
        UdpHeaderSlice::from_slice(payload).map_err(|_| DecodeError::Truncated(Layer::Tunnel))?;
    let body = payload.get(header.slice().len()..).unwrap_or_default();
    match header.destination_port() {
        VXLAN_PORT | VXLAN_FLANNEL_PORT => vxlan(body).map(|n| Some((Tunnel::Vxlan, n))),
        GENEVE_PORT => geneve(body).map(|n| n.map(|n| (Tunnel::Geneve, n))),
        _ => Ok(None),
    }
}

/// VXLAN (RFC 7348): flags (the I bit says the VNI is valid), 24-bit VNI, then Ethernet.
fn vxlan(body: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (header, inner) = body
        .split_at_checked(VXLAN_HEADER_LEN)
        .ok_or(DecodeError::Truncated(Layer::Tunnel))?;
    if header.first().is_some_and(|flags| flags & 0x08 == 0) {
        return Err(DecodeError::Malformed(Layer::Tunnel));
    }
    Ok(Next::Ethernet(inner))
}

/// Geneve (RFC 8926): version and option length, flags, protocol type, VNI, options.
fn geneve(body: &[u8]) -> Result<Option<Next<'_>>, DecodeError> {
    let header = body
        .get(..GENEVE_BASE_LEN)
        .ok_or(DecodeError::Truncated(Layer::Tunnel))?;
    let (ver_optlen, proto_hi, proto_lo) = match header {
        [a, _, c, d, ..] => (*a, *c, *d),
        _ => return Err(DecodeError::Truncated(Layer::Tunnel)),
    };
    if ver_optlen >> 6 != 0 {
        return Err(DecodeError::Malformed(Layer::Tunnel));
    }
    let header_len = GENEVE_BASE_LEN + usize::from(ver_optlen & 0x3f) * 4;
    let inner = body
        .get(header_len..)
        .ok_or(DecodeError::Truncated(Layer::Tunnel))?;
    Ok(ether_payload(
        u16::from_be_bytes([proto_hi, proto_lo]),
        inner,
    ))
}

/// GRE (RFC 2784/2890): flags and version, protocol type, then optional checksum, key and
/// sequence words. Version 1 (PPTP) and routing (obsolete) are not unwrapped.
fn gre(payload: &[u8]) -> Result<Option<Next<'_>>, DecodeError> {
    let (flags, protocol) = match payload {
        [f0, f1, p0, p1, ..] => (
            u16::from_be_bytes([*f0, *f1]),
            u16::from_be_bytes([*p0, *p1]),
        ),
        _ => return Err(DecodeError::Truncated(Layer::Tunnel)),
    };
    const CHECKSUM: u16 = 0x8000;
    const ROUTING: u16 = 0x4000;
    const KEY: u16 = 0x2000;
    const SEQUENCE: u16 = 0x1000;
    if flags & 0x0007 != 0 || flags & ROUTING != 0 {
        return Ok(None);
    }
    let words = [CHECKSUM, KEY, SEQUENCE]
        .iter()
        .filter(|bit| flags & **bit != 0)
        .count();
    let inner = payload
        .get(4 + 4 * words..)
        .ok_or(DecodeError::Truncated(Layer::Tunnel))?;
    Ok(ether_payload(protocol, inner))
}

/// What a tunnel's EtherType-typed payload is, if it leads to IP.
fn ether_payload(protocol: u16, inner: &[u8]) -> Option<Next<'_>> {
    match protocol {
        link::ETHERTYPE_TEB => Some(Next::Ethernet(inner)),
        link::ETHERTYPE_IPV4 | link::ETHERTYPE_IPV6 => Some(Next::Ip(inner)),
        _ => None,
    }
}
