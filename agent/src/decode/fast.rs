//! The common frame read by hand: Ethernet, IPv4 without options, not fragmented, TCP — what
//! nearly every packet of a capture is. Fixed offsets, no layer walk; anything else (VLAN tags,
//! IPv6, IP options, tunnels, a header cut short, a length that lies) returns `None` and goes the
//! general way through etherparse, which says what is wrong. For a frame it accepts, the
//! segment is the one the general way gives (tested against it on mutated frames).
//!
//! PURE: bytes in, a borrowed view out; never panics.

use std::net::{IpAddr, Ipv4Addr};

use super::{TcpFlags, TcpSegment};

const ETHERNET_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
/// Version 4, header length 5 words (20 bytes, no options).
const IPV4_NO_OPTIONS: u8 = 0x45;
const IPV4_HEADER: usize = 20;
/// More-fragments bit and fragment offset.
const FRAGMENT_BITS: u16 = 0x3fff;
const TCP: u8 = 6;
const TCP_MIN_HEADER: usize = 20;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ipv4(b: &[u8], at: usize) -> Option<IpAddr> {
    let octets: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// The TCP segment of an Ethernet/IPv4/TCP frame whose headers are all there and plain, else
/// `None` (the caller decodes it the general way).
pub(super) fn ethernet_ipv4_tcp(frame: &[u8]) -> Option<TcpSegment<'_>> {
    let (link, ip) = frame.split_at_checked(ETHERNET_HEADER)?;
    if link.get(12..14)? != ETHERTYPE_IPV4 || *ip.first()? != IPV4_NO_OPTIONS {
        return None;
    }
    let total = usize::from(be16(ip, 2)?);
    if total < IPV4_HEADER + TCP_MIN_HEADER
        || total > ip.len()
        || be16(ip, 6)? & FRAGMENT_BITS != 0
        || *ip.get(9)? != TCP
    {
        return None;
    }
    let tcp = ip.get(IPV4_HEADER..total)?;
    let header_len = usize::from(tcp.get(12)? >> 4) * 4;
    if header_len < TCP_MIN_HEADER || header_len > tcp.len() {
        return None;
    }
    let loopback = link.get(..12)?.iter().all(|b| *b == 0);
    Some(TcpSegment {
        src: ipv4(ip, 12)?,
        dst: ipv4(ip, 16)?,
        sport: be16(tcp, 0)?,
        dport: be16(tcp, 2)?,
        seq: be32(tcp, 4)?,
        ack: be32(tcp, 8)?,
        flags: TcpFlags(*tcp.get(13)?),
        payload: tcp.get(header_len..)?,
        payload_len: (tcp.len() - header_len) as u32,
        tunnel: None,
        loopback,
    })
}
