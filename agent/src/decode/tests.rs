use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use proptest::prelude::*;

use super::*;

const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
const SRC4: [u8; 4] = [10, 244, 1, 31];
const DST4: [u8; 4] = [10, 244, 1, 11];

fn tcp_ipv4() -> Vec<u8> {
    let b = PacketBuilder::ipv4(SRC4, DST4, 64)
        .tcp(40000, 8000, 1000, 65535)
        .ack(77)
        .psh();
    let mut out = Vec::new();
    b.write(&mut out, PAYLOAD).expect("build");
    out
}

fn tcp_ipv6() -> Vec<u8> {
    let src: [u8; 16] = "fd00::1f".parse::<Ipv6Addr>().expect("v6").octets();
    let dst: [u8; 16] = "fd00::b".parse::<Ipv6Addr>().expect("v6").octets();
    let b = PacketBuilder::ipv6(src, dst, 64)
        .tcp(40000, 8000, 1000, 65535)
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("build");
    out
}

fn ethernet(ether_type: u16, inner: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(inner);
    f
}

fn ipv4_with(protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = etherparse::Ipv4Header::new(
        payload.len() as u16,
        64,
        etherparse::IpNumber(protocol),
        [192, 0, 2, 1],
        [192, 0, 2, 2],
    )
    .expect("header");
    h.header_checksum = h.calc_header_checksum();
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0x30, 0x39];
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn expect_tcp(link: LinkType, frame: &[u8]) -> TcpSegment<'_> {
    match decode(link, frame) {
        Ok(Decoded::Tcp(seg)) => seg,
        other => panic!("expected TCP, got {other:?}"),
    }
}

fn assert_inner_v4(seg: &TcpSegment<'_>) {
    assert_eq!(seg.src, IpAddr::V4(Ipv4Addr::from(SRC4)));
    assert_eq!(seg.dst, IpAddr::V4(Ipv4Addr::from(DST4)));
    assert_eq!(
        (seg.sport, seg.dport, seg.seq, seg.ack),
        (40000, 8000, 1000, 77)
    );
    assert_eq!(seg.payload, PAYLOAD);
    assert_eq!(seg.payload_len, PAYLOAD.len() as u32);
}

#[test]
fn ethernet_and_vlan_tags() {
    let ip = tcp_ipv4();
    assert_inner_v4(&expect_tcp(LinkType::ETHERNET, &ethernet(0x0800, &ip)));
    let mut tagged = vec![0x00, 0x64, 0x08, 0x00];
    tagged.extend_from_slice(&ip);
    assert_inner_v4(&expect_tcp(LinkType::ETHERNET, &ethernet(0x8100, &tagged)));
    let mut qinq = vec![0x00, 0x0a, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00];
    qinq.extend_from_slice(&ip);
    assert_inner_v4(&expect_tcp(LinkType::ETHERNET, &ethernet(0x88a8, &qinq)));
}

#[test]
fn cooked_v1_v2_raw_and_loopback() {
    let ip = tcp_ipv4();
    // Linux cooked v1: packet type, ARPHRD_ETHER, address length, address (8), protocol
    let mut sll = vec![
        0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00,
    ];
    sll.extend_from_slice(&ip);
    assert_inner_v4(&expect_tcp(LinkType::LINUX_SLL, &sll));
    // Linux cooked v2: protocol, reserved, ifindex, ARPHRD, packet type, address length, address
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 3, 0x00, 0x01, 0x04, 6, 2, 0, 0, 0, 0, 1, 0, 0,
    ];
    sll2.extend_from_slice(&ip);
    assert_inner_v4(&expect_tcp(LinkType::LINUX_SLL2, &sll2));
    assert_inner_v4(&expect_tcp(LinkType::RAW, &ip));
    assert_inner_v4(&expect_tcp(LinkType::IPV4, &ip));
    let mut null = vec![2, 0, 0, 0];
    null.extend_from_slice(&ip);
    assert_inner_v4(&expect_tcp(LinkType::NULL, &null));
    let mut lo6 = vec![0, 0, 0, 30];
    lo6.extend_from_slice(&tcp_ipv6());
    let seg = expect_tcp(LinkType::LOOP, &lo6);
    assert!(seg.flags.syn() && !seg.flags.ack());
    assert_eq!(seg.dst, "fd00::b".parse::<IpAddr>().expect("v6"));
}

/// What a loopback device writes: Linux cooked headers with ARPHRD_LOOPBACK (772), an
/// Ethernet header with both addresses zero (`tcpdump -i lo` on Linux), BSD null/loop.
#[test]
fn frames_captured_on_loopback_are_flagged() {
    let ip = tcp_ipv4();
    let mut sll = vec![
        0x00, 0x00, 0x03, 0x04, 0x00, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00,
    ];
    sll.extend_from_slice(&ip);
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0x00, 6, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    sll2.extend_from_slice(&ip);
    let mut lo_eth = vec![0u8; 12];
    lo_eth.extend_from_slice(&[0x08, 0x00]);
    lo_eth.extend_from_slice(&ip);
    let mut null = vec![2, 0, 0, 0];
    null.extend_from_slice(&ip);
    for (link, frame) in [
        (LinkType::LINUX_SLL, &sll),
        (LinkType::LINUX_SLL2, &sll2),
        (LinkType::ETHERNET, &lo_eth),
        (LinkType::NULL, &null),
    ] {
        let seg = expect_tcp(link, frame);
        assert_inner_v4(&seg);
        assert!(seg.loopback, "{link:?}");
    }
    // an ordinary NIC: not loopback, and neither is a tunnel's inner Ethernet
    assert!(!expect_tcp(LinkType::ETHERNET, &ethernet(0x0800, &ip)).loopback);
    assert!(!expect_tcp(LinkType::RAW, &ip).loopback);
    let mut sll2_eth = sll2.clone();
    sll2_eth[8] = 0x00;
    sll2_eth[9] = 0x01;
    assert!(!expect_tcp(LinkType::LINUX_SLL2, &sll2_eth).loopback);
}

#[test]
fn tunnels_yield_the_inner_connection() {
    let inner_eth = ethernet(0x0800, &tcp_ipv4());
    for port in [4789u16, 8472] {
        let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vxlan.extend_from_slice(&inner_eth);
        let outer = ethernet(0x0800, &ipv4_with(17, &udp(port, &vxlan)));
        let seg = expect_tcp(LinkType::ETHERNET, &outer);
        assert_inner_v4(&seg);
        assert_eq!(seg.tunnel, Some(Tunnel::Vxlan));
    }
    // Geneve with one 8-byte option, carrying Ethernet
    let mut geneve = vec![
        0x02, 0x00, 0x65, 0x58, 0, 0, 1, 0, 0x01, 0x02, 0x03, 0x01, 0, 0, 0, 0,
    ];
    geneve.extend_from_slice(&inner_eth);
    let frame = ipv4_with(17, &udp(6081, &geneve));
    let seg = expect_tcp(LinkType::RAW, &frame);
    assert_inner_v4(&seg);
    assert_eq!(seg.tunnel, Some(Tunnel::Geneve));
    // GRE with a key, carrying IPv4
    let mut gre = vec![0x20, 0x00, 0x08, 0x00, 0, 0, 0, 42];
    gre.extend_from_slice(&tcp_ipv4());
    let frame = ipv4_with(47, &gre);
    let seg = expect_tcp(LinkType::RAW, &frame);
    assert_inner_v4(&seg);
    assert_eq!(seg.tunnel, Some(Tunnel::Gre));
    // IP-in-IP
    let frame = ipv4_with(4, &tcp_ipv4());
    let seg = expect_tcp(LinkType::RAW, &frame);
    assert_inner_v4(&seg);
    assert_eq!(seg.tunnel, Some(Tunnel::Ipip));
}

#[test]
fn snaplen_truncated_payload_keeps_the_announced_length() {
    let ip = tcp_ipv4();
    let cut = &ip[..ip.len() - 5];
    let seg = expect_tcp(LinkType::RAW, cut);
    assert_eq!(seg.payload, &PAYLOAD[..PAYLOAD.len() - 5]);
    assert_eq!(seg.payload_len, PAYLOAD.len() as u32);
}

#[test]
fn skips_and_errors_have_reasons() {
    assert_eq!(
        decode(LinkType::ETHERNET, &ethernet(0x0806, &[0; 28])),
        Ok(Decoded::Skipped(Skip::NotIp))
    );
    assert_eq!(
        decode(LinkType::RAW, &ipv4_with(17, &udp(53, b"dns"))),
        Ok(Decoded::Skipped(Skip::NotTcp))
    );
    assert_eq!(
        decode(LinkType::RAW, &ipv4_with(1, &[8, 0, 0, 0])),
        Ok(Decoded::Skipped(Skip::NotTcp))
    );
    let erspan = [0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1];
    assert_eq!(
        decode(LinkType::RAW, &ipv4_with(47, &erspan)),
        Ok(Decoded::Skipped(Skip::UnsupportedEncapsulation))
    );
    assert_eq!(
        decode(LinkType(147), &[0; 40]),
        Err(DecodeError::UnsupportedLinkType(147))
    );
    assert_eq!(
        decode(LinkType::ETHERNET, &[0; 10]),
        Err(DecodeError::Truncated(Layer::Link))
    );
    assert_eq!(
        decode(LinkType::RAW, &[0x45, 0, 0]),
        Err(DecodeError::Truncated(Layer::Ip))
    );
    assert_eq!(
        decode(LinkType::RAW, &[0x75; 40]),
        Err(DecodeError::Malformed(Layer::Ip))
    );
    let ip = tcp_ipv4();
    assert_eq!(
        decode(LinkType::RAW, &ip[..30]),
        Err(DecodeError::Truncated(Layer::Tcp))
    );
    // a fragment (more-fragments bit set)
    let mut frag = tcp_ipv4();
    frag[6] |= 0x20;
    assert_eq!(decode(LinkType::RAW, &frag), Err(DecodeError::Fragment));
    // VXLAN inside VXLAN inside ... is bounded
    let mut nested = tcp_ipv4();
    for _ in 0..=MAX_ENCAPSULATIONS {
        nested = ipv4_with(4, &nested);
    }
    assert_eq!(decode(LinkType::RAW, &nested), Err(DecodeError::TooDeep));
}

proptest! {
    #[test]
    fn never_panics_on_any_bytes(link in prop::sample::select(vec![0u32, 1, 12, 101, 108, 113, 228, 229, 276, 9999]),
                                 bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(LinkType(link), &bytes);
    }

    #[test]
    fn never_panics_on_mutated_real_frames(pos in any::<prop::sample::Index>(), val: u8, cut in any::<prop::sample::Index>()) {
        let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vxlan.extend_from_slice(&ethernet(0x0800, &tcp_ipv4()));
        let mut frame = ethernet(0x0800, &ipv4_with(17, &udp(4789, &vxlan)));
        let i = pos.index(frame.len());
        frame[i] = val;
        let n = cut.index(frame.len() + 1);
        let _ = decode(LinkType::ETHERNET, &frame[..n]);
    }
}

/// An Ethernet/IPv4/TCP frame with TCP options (a SYN's), Ethernet padding after the IP packet.
fn plain_frame_with_options_and_padding() -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(SRC4, DST4, 64)
        .tcp(40000, 8000, 1000, 65535)
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
        .expect("options")
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, b"hi").expect("build");
    out.extend_from_slice(&[0; 6]);
    out
}

#[test]
fn the_common_frame_takes_the_fast_path_with_the_same_segment() {
    let mut loopback = ethernet(0x0800, &tcp_ipv4());
    loopback[..12].fill(0);
    for frame in [
        ethernet(0x0800, &tcp_ipv4()),
        plain_frame_with_options_and_padding(),
        loopback,
    ] {
        let fast = fast::ethernet_ipv4_tcp(&frame).expect("the fast path takes it");
        assert_eq!(
            decode_layers(LinkType::ETHERNET, &frame),
            Ok(Decoded::Tcp(fast))
        );
    }
    // not for it: VLAN, IPv6, a fragment, UDP
    assert_eq!(
        fast::ethernet_ipv4_tcp(&ethernet(0x86dd, &tcp_ipv6())),
        None
    );
    let mut fragment = ethernet(0x0800, &tcp_ipv4());
    fragment[14 + 6] |= 0x20;
    assert_eq!(fast::ethernet_ipv4_tcp(&fragment), None);
    assert_eq!(
        fast::ethernet_ipv4_tcp(&ethernet(0x0800, &ipv4_with(17, &udp(53, b"x")))),
        None
    );
}

/// Every single byte of the headers set to every value: whatever the fast path accepts, the
/// general way decodes to the same segment.
#[test]
fn fast_path_agrees_with_the_layer_walk_on_every_one_byte_change() {
    let mut accepted = 0;
    for base in [
        ethernet(0x0800, &tcp_ipv4()),
        plain_frame_with_options_and_padding(),
    ] {
        for at in 0..base.len().min(14 + 20 + 28) {
            for value in 0..=255u8 {
                let mut frame = base.clone();
                frame[at] = value;
                if let Some(seg) = fast::ethernet_ipv4_tcp(&frame) {
                    accepted += 1;
                    assert_eq!(
                        decode_layers(LinkType::ETHERNET, &frame),
                        Ok(Decoded::Tcp(seg)),
                        "byte {at} = {value:#x}"
                    );
                }
            }
        }
    }
    assert!(accepted > 10_000, "{accepted}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]
    /// Whatever the fast path accepts, the general way decodes to the same segment: frames with
    /// up to three bytes changed anywhere (lengths, version, flags, offsets), cut or extended.
    #[test]
    fn fast_path_agrees_with_the_layer_walk(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        extra in 0usize..8,
        base in 0usize..2,
        short: bool,
    ) {
        let mut frame = if base == 0 {
            ethernet(0x0800, &tcp_ipv4())
        } else {
            plain_frame_with_options_and_padding()
        };
        for (at, value) in edits {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        frame.extend(std::iter::repeat_n(0xee, extra));
        let n = if short { cut.index(frame.len() + 1) } else { frame.len() };
        let frame = &frame[..n];
        if let Some(seg) = fast::ethernet_ipv4_tcp(frame) {
            prop_assert_eq!(decode_layers(LinkType::ETHERNET, frame), Ok(Decoded::Tcp(seg)));
        }
    }
}
