//! Packet decoding: link layer -> IP -> (tunnel -> IP)* -> TCP.
//!
//! PURE and allocation-free: bytes in, a borrowed [`TcpSegment`] out. Every way a frame can fail
//! to yield a TCP segment is a [`Skip`] (not TCP: counted, not an error) or a [`DecodeError`]
//! (malformed or truncated: counted by reason). Nothing here panics on any input.
//!
//! etherparse does the header slicing; this module owns only the walk between layers, the link
//! types etherparse lacks or refuses (Linux cooked v1 on loopback and tun devices, cooked v2,
//! BSD null/loop) and the tunnel headers (VXLAN, Geneve,
//! GRE), which are a few fixed fields each.

mod fast;
mod ip;
mod link;
mod tcp;
mod tunnel;

use std::net::IpAddr;

pub use link::LinkType;
pub use tunnel::Tunnel;

/// How many encapsulations we unwrap before calling the packet hostile.
pub const MAX_ENCAPSULATIONS: usize = 4;

/// A TCP segment with the innermost IP addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// Payload bytes present in the capture (may be shorter than on the wire: snaplen).
    pub payload: &'a [u8],
    /// Payload bytes the IP header announces (what was on the wire).
    pub payload_len: u32,
    /// The outermost tunnel the segment was carried in, if any.
    pub tunnel: Option<Tunnel>,
    /// Captured on a loopback device (see [`LinkType`]): local traffic, never evidence.
    pub loopback: bool,
}

/// TCP flag bits, as on the wire (low byte of the flags field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// A frame that is well-formed but carries no TCP segment we look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// ARP, LLDP, ... anything that is not IP.
    NotIp,
    /// UDP (not a tunnel port), ICMP, SCTP, ...
    NotTcp,
    /// A tunnel or link encapsulation we do not unwrap (ERSPAN, MPLS, PPPoE, GTP, ...).
    UnsupportedEncapsulation,
}

/// Why a frame could not be decoded. Each variant is a counter label (`reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
    #[error("truncated {0} header")]
    Truncated(Layer),
    #[error("malformed {0} header")]
    Malformed(Layer),
    #[error("IP fragment (not reassembled)")]
    Fragment,
    #[error("more than {MAX_ENCAPSULATIONS} nested encapsulations")]
    TooDeep,
}

impl DecodeError {
    /// A fixed lowercase name, for counters and JSON.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedLinkType(_) => "unsupported_link_type",
            Self::Truncated(Layer::Link) => "truncated_link",
            Self::Truncated(Layer::Ip) => "truncated_ip",
            Self::Truncated(Layer::Tunnel) => "truncated_tunnel",
            Self::Truncated(Layer::Tcp) => "truncated_tcp",
            Self::Malformed(Layer::Link) => "malformed_link",
            Self::Malformed(Layer::Ip) => "malformed_ip",
            Self::Malformed(Layer::Tunnel) => "malformed_tunnel",
            Self::Malformed(Layer::Tcp) => "malformed_tcp",
            Self::Fragment => "ip_fragment",
            Self::TooDeep => "too_many_encapsulations",
        }
    }
}

/// The layer a [`DecodeError`] happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Link,
    Ip,
    Tunnel,
    Tcp,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layer::Link => "link",
            Layer::Ip => "IP",
            Layer::Tunnel => "tunnel",
            Layer::Tcp => "TCP",
        })
    }
}

/// What decoding one frame gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Tcp(TcpSegment<'a>),
    Skipped(Skip),
}

/// What the next layer is, while walking down the encapsulations.
#[derive(Debug, Clone, Copy)]
enum Next<'a> {
    /// An Ethernet frame (the link, or inside VXLAN, Geneve or GRE).
    Ethernet(&'a [u8]),
    /// A payload identified by an EtherType (cooked captures, VLAN tags, GRE).
    EtherType(u16, &'a [u8]),
    /// An IP packet (raw IP link, BSD loopback, IP-in-IP).
    Ip(&'a [u8]),
}

/// Decode one captured frame of the given link type.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    if link == LinkType::ETHERNET {
        if let Some(seg) = fast::ethernet_ipv4_tcp(frame) {
            return Ok(Decoded::Tcp(seg));
        }
    }
    decode_layers(link, frame)
}

/// The general way: walk the layers (etherparse slices each header).
fn decode_layers(link: LinkType, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let (mut next, loopback) = link::strip(link, frame)?;
    let mut tunnel = None;
    for _ in 0..=MAX_ENCAPSULATIONS {
        let Some(ip_bytes) = link::to_ip(next)? else {
            return Ok(Decoded::Skipped(Skip::NotIp));
        };
        let packet = ip::parse(ip_bytes)?;
        if packet.protocol == ip::TCP {
            return tcp::parse(&packet, tunnel, loopback).map(Decoded::Tcp);
        }
        match tunnel::unwrap(packet.protocol, packet.payload)? {
            Some((kind, inner)) => {
                tunnel.get_or_insert(kind);
                next = inner;
            }
            None => return Ok(Decoded::Skipped(tunnel::skip_reason(packet.protocol))),
        }
    }
    Err(DecodeError::TooDeep)
}

#[cfg(test)]
mod tests;
