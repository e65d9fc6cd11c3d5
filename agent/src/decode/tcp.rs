//! The TCP header: ports, sequence numbers, flags and the payload present in the capture.

use etherparse::TcpHeaderSlice;

use super::{ip::IpPacket, DecodeError, Layer, TcpFlags, TcpSegment, Tunnel};

pub(super) fn parse<'a>(
    packet: &IpPacket<'a>,
    tunnel: Option<Tunnel>,
    loopback: bool,
) -> Result<TcpSegment<'a>, DecodeError> {
    let header = TcpHeaderSlice::from_slice(packet.payload).map_err(|e| match e {
        etherparse::err::tcp::HeaderSliceError::Len(_) => DecodeError::Truncated(Layer::Tcp),
        etherparse::err::tcp::HeaderSliceError::Content(_) => DecodeError::Malformed(Layer::Tcp),
    })?;
    let header_len = header.slice().len();
    let payload = packet.payload.get(header_len..).unwrap_or_default();
    let flags = header.slice().get(13).copied().unwrap_or_default();
    Ok(TcpSegment {
        src: packet.src,
        dst: packet.dst,
        sport: header.source_port(),
        dport: header.destination_port(),
        seq: header.sequence_number(),
        ack: header.acknowledgment_number(),
        flags: TcpFlags(flags),
        payload,
        payload_len: packet.announced_len.saturating_sub(header_len as u32),
        tunnel,
        loopback,
    })
}
