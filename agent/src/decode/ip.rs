//! IPv4 and IPv6, leniently (snaplen-truncated packets still yield their headers).

use std::net::IpAddr;

use etherparse::{err::ip::LaxHeaderSliceError, LaxIpSlice};

use super::{DecodeError, Layer};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const IPIP: u8 = 4;
pub const IPV6_IN_IP: u8 = 41;
pub const GRE: u8 = 47;

/// The parts of an IP packet the next layer needs.
#[derive(Debug, Clone, Copy)]
pub struct IpPacket<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// The payload bytes present in the capture.
    pub payload: &'a [u8],
    /// The payload length the header announces (>= `payload.len()` when snaplen cut it).
    pub announced_len: u32,
}

pub(super) fn parse(bytes: &[u8]) -> Result<IpPacket<'_>, DecodeError> {
    let (ip, _ext_error) = LaxIpSlice::from_slice(bytes).map_err(|e| match e {
        LaxHeaderSliceError::Len(_) => DecodeError::Truncated(Layer::Ip),
        LaxHeaderSliceError::Content(_) => DecodeError::Malformed(Layer::Ip),
    })?;
    let payload = ip.payload();
    if payload.fragmented {
        return Err(DecodeError::Fragment);
    }
    let announced_len = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let header = v4.header();
            u32::from(header.total_len()).saturating_sub(u32::from(header.ihl()) * 4)
        }
        LaxIpSlice::Ipv6(v6) => {
            let ext_len = v6.extensions().slice().len() as u32;
            u32::from(v6.header().payload_length()).saturating_sub(ext_len)
        }
    };
    Ok(IpPacket {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        protocol: payload.ip_number.0,
        payload: payload.payload,
        announced_len: announced_len.max(payload.payload.len() as u32),
    })
}
