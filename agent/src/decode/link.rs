//! Link layers: strip the capture's link header, then walk Ethernet and VLAN tags to IP.

use etherparse::{Ethernet2HeaderSlice, SingleVlanHeaderSlice};

use super::{DecodeError, Layer, Next};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Transparent Ethernet bridging: an Ethernet frame follows (GRE, Geneve).
pub const ETHERTYPE_TEB: u16 = 0x6558;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// Bytes of a Linux cooked v1 header (`LINKTYPE_LINUX_SLL`).
pub const SLL_HEADER_LEN: usize = 16;
/// Bytes of a Linux cooked v2 header (`LINKTYPE_LINUX_SLL2`), which etherparse does not parse.
pub const SLL2_HEADER_LEN: usize = 20;
/// Bytes of the BSD loopback/null header: the address family in host byte order.
const NULL_HEADER_LEN: usize = 4;
/// VLAN tags we walk through before calling the frame hostile (QinQ is 2).
const MAX_VLAN_TAGS: usize = 4;
/// `ARPHRD_LOOPBACK`: the device type a Linux cooked header gives packets captured on `lo`.
const ARPHRD_LOOPBACK: u16 = 772;

/// A capture's link type (the `LINKTYPE_*` number of pcap/pcapng).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    pub const NULL: Self = Self(0);
    pub const ETHERNET: Self = Self(1);
    pub const RAW: Self = Self(101);
    pub const LOOP: Self = Self(108);
    pub const LINUX_SLL: Self = Self(113);
    pub const IPV4: Self = Self(228);
    pub const IPV6: Self = Self(229);
    pub const LINUX_SLL2: Self = Self(276);
    /// `DLT_RAW` as some BSDs number it in files.
    const RAW_BSD: Self = Self(12);
    const RAW_OPENBSD: Self = Self(14);

    /// Whether [`super::decode`] understands this link type.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            Self::NULL
                | Self::ETHERNET
                | Self::RAW
                | Self::RAW_BSD
                | Self::RAW_OPENBSD
                | Self::LOOP
                | Self::LINUX_SLL
                | Self::IPV4
                | Self::IPV6
                | Self::LINUX_SLL2
        )
    }
}

/// Remove the capture's link header. The flag says whether the frame was captured on a
/// loopback device: a BSD null/loop link, a Linux cooked header whose device type is
/// `ARPHRD_LOOPBACK`, or an Ethernet header with both addresses zero (what Linux `lo` writes).
pub(super) fn strip(link: LinkType, frame: &[u8]) -> Result<(Next<'_>, bool), DecodeError> {
    match link {
        LinkType::ETHERNET => {
            let loopback = frame
                .get(..12)
                .is_some_and(|macs| macs.iter().all(|b| *b == 0));
            Ok((Next::Ethernet(frame), loopback))
        }
        LinkType::RAW
        | LinkType::RAW_BSD
        | LinkType::RAW_OPENBSD
        | LinkType::IPV4
        | LinkType::IPV6 => Ok((Next::Ip(frame), false)),
        LinkType::NULL | LinkType::LOOP => {
            // The family is in the capturing host's byte order (NULL) or network order (LOOP);
            // either way what follows is IP, told apart by its version nibble.
            frame
                .get(NULL_HEADER_LEN..)
                .map(|ip| (Next::Ip(ip), true))
                .ok_or(DecodeError::Truncated(Layer::Link))
        }
        LinkType::LINUX_SLL => sll(frame),
        LinkType::LINUX_SLL2 => sll2(frame),
        LinkType(other) => Err(DecodeError::UnsupportedLinkType(other)),
    }
}

/// Linux cooked v1: packet type (2), ARPHRD (2), address length (2), address (8), protocol (2).
/// Read by hand like v2: etherparse's parser refuses device types it does not list — loopback,
/// tun (`ARPHRD_NONE`), IP-in-IP — and those are exactly what `-i any` inside a pod shows.
fn sll(frame: &[u8]) -> Result<(Next<'_>, bool), DecodeError> {
    let (header, rest) = frame
        .split_at_checked(SLL_HEADER_LEN)
        .ok_or(DecodeError::Truncated(Layer::Link))?;
    let loopback = be16(header, 2)? == ARPHRD_LOOPBACK;
    Ok((Next::EtherType(be16(header, 14)?, rest), loopback))
}

/// Linux cooked v2: protocol (2), reserved (2), ifindex (4), ARPHRD (2), packet type (1),
/// address length (1), address (8). The protocol is an EtherType for IP.
fn sll2(frame: &[u8]) -> Result<(Next<'_>, bool), DecodeError> {
    let (header, rest) = frame
        .split_at_checked(SLL2_HEADER_LEN)
        .ok_or(DecodeError::Truncated(Layer::Link))?;
    let loopback = be16(header, 8)? == ARPHRD_LOOPBACK;
    Ok((Next::EtherType(be16(header, 0)?, rest), loopback))
}

/// A big-endian u16 at `at`, or a truncated-link error.
fn be16(bytes: &[u8], at: usize) -> Result<u16, DecodeError> {
    match bytes.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(DecodeError::Truncated(Layer::Link)),
    }
}

/// Walk Ethernet headers and VLAN tags until an IP packet; `None` when the frame is not IP.
pub(super) fn to_ip(mut next: Next<'_>) -> Result<Option<&[u8]>, DecodeError> {
    for _ in 0..=MAX_VLAN_TAGS {
        next = match next {
            Next::Ip(bytes) => return Ok(Some(bytes)),
            Next::Ethernet(bytes) => {
                let eth = Ethernet2HeaderSlice::from_slice(bytes)
                    .map_err(|_| DecodeError::Truncated(Layer::Link))?;
                let rest = bytes.get(eth.slice().len()..).unwrap_or_default();
                Next::EtherType(eth.ether_type().0, rest)
            }
            Next::EtherType(ETHERTYPE_IPV4 | ETHERTYPE_IPV6, bytes) => Next::Ip(bytes),
            Next::EtherType(ETHERTYPE_TEB, bytes) => Next::Ethernet(bytes),
            Next::EtherType(ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD, bytes) => {
                let vlan = SingleVlanHeaderSlice::from_slice(bytes)
                    .map_err(|_| DecodeError::Truncated(Layer::Link))?;
                let rest = bytes.get(vlan.slice().len()..).unwrap_or_default();
                Next::EtherType(vlan.ether_type().0, rest)
            }
            Next::EtherType(..) => return Ok(None),
        };
    }
    Err(DecodeError::TooDeep)
}
