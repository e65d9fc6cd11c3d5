//! Link layers: strip the capture's link header, then walk Ethernet and VLAN tags to IP.

use etherparse::{Ethernet2HeaderSlice, LinuxSllHeaderSlice, SingleVlanHeaderSlice};

use super::{DecodeError, Layer, Next};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Transparent Ethernet bridging: an Ethernet frame follows (GRE, Geneve).
pub const ETHERTYPE_TEB: u16 = 0x6558;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// Bytes of a Linux cooked v2 header (`LINKTYPE_LINUX_SLL2`), which etherparse does not parse.
pub const SLL2_HEADER_LEN: usize = 20;
/// Bytes of the BSD loopback/null header: the address family in host byte order.
const NULL_HEADER_LEN: usize = 4;
/// VLAN tags we walk through before calling the frame hostile (QinQ is 2).
const MAX_VLAN_TAGS: usize = 4;

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

/// Remove the capture's link header.
pub(super) fn strip(link: LinkType, frame: &[u8]) -> Result<Next<'_>, DecodeError> {
    match link {
        LinkType::ETHERNET => Ok(Next::Ethernet(frame)),
        LinkType::RAW
        | LinkType::RAW_BSD
        | LinkType::RAW_OPENBSD
        | LinkType::IPV4
        | LinkType::IPV6 => Ok(Next::Ip(frame)),
        LinkType::NULL | LinkType::LOOP => {
            // The family is in the capturing host's byte order (NULL) or network order (LOOP);
            // either way what follows is IP, told apart by its version nibble.
            frame
                .get(NULL_HEADER_LEN..)
                .map(Next::Ip)
                .ok_or(DecodeError::Truncated(Layer::Link))
        }
        LinkType::LINUX_SLL => {
            // etherparse validates the header (ARPHRD, packet type); the protocol field is
            // an EtherType for the IP frames we care about, read as such.
            let header = LinuxSllHeaderSlice::from_slice(frame)
                .map_err(|_| DecodeError::Malformed(Layer::Link))?;
            let (head, rest) = frame
                .split_at_checked(header.slice().len())
                .ok_or(DecodeError::Truncated(Layer::Link))?;
            Ok(Next::EtherType(be16(head, 14)?, rest))
        }
        LinkType::LINUX_SLL2 => sll2(frame),
        LinkType(other) => Err(DecodeError::UnsupportedLinkType(other)),
    }
}

/// Linux cooked v2: protocol (2), reserved (2), ifindex (4), ARPHRD (2), packet type (1),
/// address length (1), address (8). The protocol is an EtherType for IP.
fn sll2(frame: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (header, rest) = frame
        .split_at_checked(SLL2_HEADER_LEN)
        .ok_or(DecodeError::Truncated(Layer::Link))?;
    Ok(Next::EtherType(be16(header, 0)?, rest))
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
