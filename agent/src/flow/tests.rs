//! Flow table behaviour: client detection, closing, duplicates, reuse, eviction, timeouts, and
//! classification through reassembly whatever the segmentation.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::classify::{App, Security};
use crate::decode::{TcpFlags, TcpSegment};

const SPLIT_HELLO: &[u8] = include_bytes!("../../assets/clienthello-split-records.bin");
const SEC: u64 = 1_000_000_000;
const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const FIN: u8 = TcpFlags::FIN | TcpFlags::ACK;
const RST: u8 = TcpFlags::RST;
const PSH: u8 = 0x08 | TcpFlags::ACK;

fn addr(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A connection between a client and a server for building segments.
struct Conn {
    c: (IpAddr, u16),
    s: (IpAddr, u16),
    cseq: u32,
    sseq: u32,
}

impl Conn {
    fn new(cport: u16) -> Self {
        Conn {
            c: (addr("10.0.0.1"), cport),
            s: (addr("10.0.0.2"), 8000),
            cseq: 1000,
            sseq: 5000,
        }
    }
    fn client_sends<'a>(&self, seq: u32, flags: u8, payload: &'a [u8]) -> TcpSegment<'a> {
        seg(self.c, self.s, seq, self.sseq + 1, flags, payload)
    }
    fn server_sends<'a>(&self, seq: u32, flags: u8, payload: &'a [u8]) -> TcpSegment<'a> {
        seg(self.s, self.c, seq, self.cseq + 1, flags, payload)
    }
    fn handshake(&self, t: &mut FlowTable, now: u64, done: &mut Outputs) {
        t.on_segment(&self.client_sends(self.cseq, SYN, &[]), now, done);
        t.on_segment(&self.server_sends(self.sseq, SYN | ACK, &[]), now, done);
        t.on_segment(&self.client_sends(self.cseq + 1, ACK, &[]), now, done);
    }
}

fn seg<'a>(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &'a [u8],
) -> TcpSegment<'a> {
    TcpSegment {
        src: src.0,
        dst: dst.0,
        sport: src.1,
        dport: dst.1,
        seq,
        ack,
        flags: TcpFlags(flags),
        payload,
        payload_len: payload.len() as u32,
        tunnel: None,
        loopback: false,
    }
}

fn table() -> FlowTable {
    FlowTable::new(TableLimits::default())
}

#[test]
fn a_whole_connection_gives_one_record() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40000));
    c.handshake(&mut t, 0, &mut done);
    t.on_segment(
        &c.client_sends(1001, PSH, b"GET / HTTP/1.1\r\n\r\n"),
        1,
        &mut done,
    );
    t.on_segment(
        &c.server_sends(5001, PSH, b"HTTP/1.1 200 OK\r\n\r\n"),
        2,
        &mut done,
    );
    t.on_segment(&c.client_sends(1019, FIN, &[]), 3, &mut done);
    t.on_segment(&c.server_sends(5020, FIN, &[]), 4, &mut done);
    assert_eq!(done.finished.len(), 1, "a closed flow is finished at once");
    t.on_segment(&c.client_sends(1020, ACK, &[]), 5, &mut done);
    assert_eq!(done.finished.len(), 1, "its last ACK opens no new flow");
    assert_eq!(t.stats().orphan_packets, 1);
    let r = &done.finished[0];
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (c.c.0, 40000, c.s.0, 8000)
    );
    assert_eq!(
        (r.security, r.app, r.end, r.mid_stream),
        (Security::Plaintext, App::Http1, EndReason::Fin, false)
    );
    assert_eq!(
        (r.packets, r.bytes_to_server, r.bytes_to_client),
        (7, 18, 19)
    );
    assert!(!r.server_hello);
    assert_eq!(t.len(), 0);
}

#[test]
fn duplicate_copies_are_counted_once() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40001));
    let syn = c.client_sends(c.cseq, SYN, &[]);
    t.on_segment(&syn, 0, &mut done);
    t.on_segment(&syn, 0, &mut done);
    let data = c.client_sends(1001, PSH, b"GET / HTTP/1.1\r\n\r\n");
    t.on_segment(&data, 1, &mut done);
    t.on_segment(&data, 1, &mut done);
    t.drain(&mut done);
    assert_eq!(done.finished.len(), 1);
    assert_eq!((done.finished[0].packets, done.finished[0].bytes), (2, 18));
    assert_eq!(t.stats().duplicates, 2);
}

#[test]
fn a_new_syn_on_a_tuple_is_a_new_connection() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40002));
    c.handshake(&mut t, 0, &mut done);
    t.on_segment(&c.client_sends(1001, RST, &[]), 1, &mut done);
    assert_eq!(done.finished.len(), 1);
    assert_eq!(done.finished[0].end, EndReason::Rst);
    // the port is reused while the old connection looks open (its close was not captured)
    let again = Conn {
        cseq: 90_000,
        ..Conn::new(40002)
    };
    again.handshake(&mut t, 2, &mut done);
    let third = Conn {
        cseq: 700_000,
        ..Conn::new(40002)
    };
    t.on_segment(&third.client_sends(700_000, SYN, &[]), 3, &mut done);
    assert_eq!(done.finished.len(), 2);
    assert_eq!(done.finished[1].end, EndReason::Reused);
    // a retransmitted SYN of the open connection is not a new one
    t.on_segment(&third.client_sends(700_000, SYN, &[]), 4, &mut done);
    assert_eq!(done.finished.len(), 2);
    assert_eq!(t.stats().reused, 1);
}

#[test]
fn server_first_protocols_are_plaintext() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40003));
    c.handshake(&mut t, 0, &mut done);
    t.on_segment(
        &c.server_sends(5001, PSH, b"220 mail.example ESMTP\r\n"),
        1,
        &mut done,
    );
    t.on_segment(&c.client_sends(1001, PSH, b"EHLO me\r\n"), 2, &mut done);
    t.drain(&mut done);
    assert_eq!(
        (done.finished[0].security, done.finished[0].server_first),
        (Security::Plaintext, true)
    );
}

#[test]
fn midstream_http_response_names_the_server() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40004));
    t.on_segment(
        &c.server_sends(7777, PSH, b"HTTP/1.1 200 OK\r\n\r\n"),
        0,
        &mut done,
    );
    t.drain(&mut done);
    let r = &done.finished[0];
    assert!(r.mid_stream);
    assert_eq!(
        (r.src, r.dport),
        (c.c.0, 8000),
        "the responder is the server"
    );
}

#[test]
fn syn_ack_without_syn_infers_the_client_and_keeps_the_start() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40005));
    t.on_segment(&c.server_sends(c.sseq, SYN | ACK, &[]), 0, &mut done);
    t.on_segment(
        &c.client_sends(1001, PSH, b"GET / HTTP/1.1\r\n"),
        1,
        &mut done,
    );
    t.drain(&mut done);
    assert_eq!(
        (
            done.finished[0].src,
            done.finished[0].mid_stream,
            done.finished[0].security
        ),
        (c.c.0, true, Security::Plaintext)
    );
}

#[test]
fn an_unfinished_preface_is_tls_of_unknown_kind() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40006));
    c.handshake(&mut t, 0, &mut done);
    t.on_segment(
        &c.client_sends(1001, PSH, &SPLIT_HELLO[..600]),
        1,
        &mut done,
    );
    t.drain(&mut done);
    assert_eq!(
        (done.finished[0].security, done.finished[0].app),
        (Security::Unknown, App::Tls)
    );
}

#[test]
fn a_lost_first_segment_is_start_missing() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40007));
    c.handshake(&mut t, 0, &mut done);
    t.on_segment(
        &c.client_sends(1001 + 100, PSH, b"POST /x HTTP/1.1\r\n"),
        1,
        &mut done,
    );
    t.drain(&mut done);
    assert!(done.finished[0].start_missing);
    assert_eq!(done.finished[0].security, Security::Plaintext);
}

#[test]
fn the_table_is_bounded_and_every_flow_leaves_once() {
    let limits = TableLimits {
        max_flows: 16,
        ..TableLimits::default()
    };
    let (mut t, mut done) = (FlowTable::new(limits), Outputs::default());
    for port in 0..1000u16 {
        let c = Conn::new(10_000 + port);
        t.on_segment(
            &c.client_sends(c.cseq, SYN, &[]),
            u64::from(port),
            &mut done,
        );
        assert!(t.len() <= 16);
    }
    t.drain(&mut done);
    assert_eq!(done.finished.len(), 1000);
    assert!(t.stats().evicted_pressure >= 1000 - 16);
    assert_eq!(t.stats().peak_flows, 16);
}

#[test]
fn idle_flows_time_out_on_packet_time() {
    let (mut t, mut done) = (table(), Outputs::default());
    let a = Conn::new(40010);
    let b = Conn::new(40011);
    t.on_segment(&a.client_sends(a.cseq, SYN, &[]), 0, &mut done);
    t.on_segment(&b.client_sends(b.cseq, SYN, &[]), 301 * SEC, &mut done);
    assert_eq!(done.finished.len(), 1);
    assert_eq!(
        (done.finished[0].sport, done.finished[0].end),
        (40010, EndReason::Idle)
    );
}

proptest! {
    /// Any segmentation, reordering and duplication of a ClientHello (three TLS records, 42
    /// ALPN names, from a real capture) classifies the same.
    #[test]
    fn any_segmentation_of_a_hello_classifies_the_same(
        cuts in proptest::collection::vec(1usize..SPLIT_HELLO.len(), 0..24),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        order in proptest::collection::vec(any::<u32>(), 30),
    ) {
        let mut points = cuts.clone();
        points.extend([0, SPLIT_HELLO.len()]);
        points.sort_unstable();
        points.dedup();
        let mut segs: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
        for d in &dups {
            let s = segs[d.index(segs.len())];
            segs.push(s);
        }
        // a full shuffle: sort by random keys
        let mut keyed: Vec<(u32, (usize, usize))> = segs.iter().enumerate().map(|(i, s)| (order[i % 30] ^ i as u32, *s)).collect();
        keyed.sort_unstable();
        let segs: Vec<(usize, usize)> = keyed.into_iter().map(|(_, s)| s).collect();
        let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40100));
        c.handshake(&mut t, 0, &mut done);
        for (i, &(s, e)) in segs.iter().enumerate() {
            let seq = c.cseq + 1 + s as u32;
            // vary the ack so copies are retransmissions, not byte-identical duplicates
            let mut sg = c.client_sends(seq, PSH, &SPLIT_HELLO[s..e]);
            sg.ack = sg.ack.wrapping_add(i as u32 % 2);
            t.on_segment(&sg, 1, &mut done);
        }
        t.drain(&mut done);
        prop_assert_eq!(done.finished.len(), 1);
        let r = &done.finished[0];
        prop_assert_eq!(r.security, Security::IstioMtls);
        prop_assert_eq!(r.alpn.len(), 42);
        prop_assert_eq!(r.alpn[0].as_str(), "istio-peer-exchange");
    }
}

#[test]
fn state_per_flow_is_at_most_256_bytes() {
    let per_flow = super::table::BYTES_PER_FLOW;
    println!(
        "flow state: {} bytes in the table (Flow {} + key {}, last seen, generation, index)",
        per_flow,
        std::mem::size_of::<Flow>(),
        std::mem::size_of::<FlowKey>()
    );
    assert!(per_flow <= 256, "{per_flow} bytes per flow");
}

#[test]
fn a_preface_that_never_ends_is_bounded_and_times_out() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40200));
    c.handshake(&mut t, 0, &mut done);
    // a handshake record declaring 16 MiB, then 100 KiB of it, segment by segment
    let mut first = vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff];
    first.resize(1400, 0x41);
    t.on_segment(&c.client_sends(1001, PSH, &first), 1, &mut done);
    let chunk = vec![0x41u8; 1400];
    let mut most = t.preface_bytes();
    for i in 1..73u32 {
        t.on_segment(
            &c.client_sends(1001 + i * 1400, PSH, &chunk),
            1 + u64::from(i),
            &mut done,
        );
        most = most.max(t.preface_bytes());
    }
    // the bytes held never pass the bound (and are let go once the bound decides)
    let bound = crate::reassembly::MAX_PREFACE_BYTES + crate::reassembly::MAX_RANGES * 16;
    assert!(
        most > 0 && most <= bound,
        "{most} bytes held at most for a 100 KiB preface"
    );
    t.sweep(400 * SEC, &mut done);
    assert_eq!(done.finished.len(), 1);
    assert_eq!(t.preface_bytes(), 0);
    let r = &done.finished[0];
    assert_eq!(
        (r.security, r.app, r.end),
        (Security::Unknown, App::Tls, EndReason::Idle)
    );
    assert_eq!(r.bytes_to_server, 73 * 1400);
}

#[test]
fn a_syn_flood_is_held_to_the_flow_bound() {
    let limits = TableLimits {
        max_flows: 10_000,
        ..TableLimits::default()
    };
    let (mut t, mut done) = (FlowTable::new(limits), Outputs::default());
    for i in 0..200_000u32 {
        let src = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let s = seg((src, 40000), (addr("10.0.0.2"), 8000), i, 0, SYN, &[]);
        t.on_segment(&s, u64::from(i), &mut done);
        assert!(t.len() <= 10_000);
        done.finished.clear();
        done.connections.clear();
    }
    assert!(t.stats().evicted_pressure >= 190_000);
    assert_eq!(t.stats().peak_flows, 10_000);
}

/// The map takes its final size once a quarter of the bound is reached (not at the bound, where
/// growing holds two tables at once); a table that never gets there stays small.
#[test]
fn the_flow_map_takes_its_final_size_early_and_only_when_it_fills() {
    let limits = TableLimits {
        max_flows: 8_000,
        ..TableLimits::default()
    };
    let (mut t, mut done) = (FlowTable::new(limits), Outputs::default());
    let syn = |i: u32| {
        let src = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
        seg((src, 40000), (addr("10.0.0.2"), 8000), i, 0, SYN, &[])
    };
    for i in 0..1_999u32 {
        t.on_segment(&syn(i), u64::from(i), &mut done);
    }
    assert!(t.capacity().0 < 8_000, "{:?}", t.capacity());
    assert!(t.capacity().1 < 8_000, "{:?}", t.capacity());
    for i in 1_999..2_100u32 {
        t.on_segment(&syn(i), u64::from(i), &mut done);
    }
    assert!(t.capacity().0 >= 16_000, "{:?}", t.capacity());
    assert_eq!(t.capacity().1, 8_000, "the slab holds the bound, exactly");
    let before = t.capacity();
    for i in 2_100..40_000u32 {
        t.on_segment(&syn(i), u64::from(i), &mut done);
        done.finished.clear();
    }
    // (tombstones take room until the next in-place rehash: never more than before)
    assert!(t.capacity().0 <= before.0, "no growth under eviction churn");
    assert_eq!(t.capacity().1, before.1, "no growth under eviction churn");
}

/// The bound holds whatever the timestamps: flows last seen at the largest time a capture can
/// claim are still evicted (the slab marks free positions with a time of its own).
#[test]
fn the_bound_holds_at_the_end_of_time() {
    let limits = TableLimits {
        max_flows: 8,
        ..TableLimits::default()
    };
    let (mut t, mut done) = (FlowTable::new(limits), Outputs::default());
    for i in 0..100u32 {
        let src = IpAddr::from([10, 1, 0, i as u8]);
        let syn = seg((src, 40000), (addr("10.0.0.2"), 8000), i, 0, SYN, &[]);
        t.on_segment(&syn, u64::MAX, &mut done);
        assert!(t.len() <= 8, "{} flows held", t.len());
    }
    t.drain(&mut done);
    assert_eq!(done.finished.len(), 100, "every flow leaves as one record");
}

/// A view joins the connection whose SYN it repeats, never the flow that took that
/// connection's place in the table after it closed.
#[test]
fn a_view_never_joins_the_flow_that_took_a_closed_connections_place() {
    let (mut t, mut done) = (FlowTable::new(TableLimits::default()), Outputs::default());
    let server = (addr("10.0.0.2"), 8000);
    let first = (addr("10.1.0.1"), 40000);
    t.on_segment(&seg(first, server, 100, 0, SYN, &[]), 0, &mut done);
    t.on_segment(&seg(server, first, 0, 101, RST | ACK, &[]), 10, &mut done);
    assert_eq!(t.len(), 0, "reset by the server: finished");
    // another connection takes the freed place
    let other = (addr("10.1.0.9"), 41000);
    t.on_segment(&seg(other, server, 999, 0, SYN, &[]), 20, &mut done);
    // the same ISN and client port, SNATed, within the window: the first connection is gone
    let snat = (addr("192.168.0.5"), 40000);
    t.on_segment(&seg(snat, server, 100, 0, SYN, &[]), 30, &mut done);
    assert_eq!(t.stats().views_joined, 0);
    t.drain(&mut done);
    assert!(
        done.finished.iter().all(|r| !r.view && r.views.is_empty()),
        "{:#?}",
        done.finished
    );
}

/// Mid-stream (no SYN seen), the client is chosen from what the capture knows, not from who
/// happened to speak first.
#[test]
fn midstream_direction_rules() {
    let pod = (addr("10.244.1.12"), 45678);
    let istiod = (addr("10.244.1.41"), 15012);
    // a port below the ephemeral range facing one inside it is the server's, even when the
    // server speaks first (istiod pushing config on the xDS stream)
    let (mut t, mut done) = (table(), Outputs::default());
    t.on_segment(
        &seg(istiod, pod, 1, 1, PSH, b"\x17\x03\x03\x00\x05hello"),
        0,
        &mut done,
    );
    t.drain(&mut done);
    let r = &done.finished[0];
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (pod.0, pod.1, istiod.0, istiod.1)
    );
    assert!(r.mid_stream);

    // an endpoint seen answering a SYN elsewhere in the capture is a server, whatever the ports
    let (mut t, mut done) = (table(), Outputs::default());
    let server = (addr("10.244.1.51"), 40000);
    let other_client = (addr("10.244.1.31"), 50000);
    t.on_segment(
        &seg(server, other_client, 9, 2, SYN | ACK, &[]),
        0,
        &mut done,
    );
    let client = (addr("10.244.1.32"), 30001);
    t.on_segment(&seg(server, client, 1, 1, PSH, b"\x00\x01hi"), 1, &mut done);
    t.drain(&mut done);
    let r = done
        .finished
        .iter()
        .find(|r| r.src == client.0 || r.dst == client.0)
        .expect("the mid-stream flow");
    assert_eq!((r.src, r.dst, r.dport), (client.0, server.0, 40000));

    // an HTTP request names its sender the client
    let (mut t, mut done) = (table(), Outputs::default());
    let (a, b) = ((addr("10.0.0.1"), 8080), (addr("10.0.0.2"), 50505));
    t.on_segment(
        &seg(a, b, 1, 1, PSH, b"GET / HTTP/1.1\r\n\r\n"),
        0,
        &mut done,
    );
    t.drain(&mut done);
    assert_eq!((done.finished[0].src, done.finished[0].dport), (a.0, 50505));

    // nothing to go by: the first sender is the client
    let (mut t, mut done) = (table(), Outputs::default());
    let (a, b) = ((addr("10.0.0.1"), 40001), (addr("10.0.0.2"), 40002));
    t.on_segment(&seg(a, b, 1, 1, PSH, b"\x00\x01"), 0, &mut done);
    t.drain(&mut done);
    assert_eq!(done.finished[0].src, a.0);
}

/// SYN, a stale ACK from the server, the client's RST, the same SYN again after its timeout:
/// one connection, not an attempt and a second connection.
#[test]
fn a_syn_retried_after_a_reset_stale_ack_is_the_same_connection() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40100));
    t.on_segment(&c.client_sends(c.cseq, SYN, &[]), 0, &mut done);
    t.on_segment(&c.server_sends(777, ACK, &[]), SEC / 100, &mut done);
    t.on_segment(&c.client_sends(12345, RST, &[]), SEC / 50, &mut done);
    assert!(
        done.finished.is_empty(),
        "the reset attempt waits for its retry"
    );
    t.on_segment(&c.client_sends(c.cseq, SYN, &[]), SEC, &mut done);
    t.on_segment(&c.server_sends(c.sseq, SYN | ACK, &[]), SEC + 1, &mut done);
    t.on_segment(
        &c.client_sends(c.cseq + 1, PSH, b"GET / HTTP/1.1\r\n\r\n"),
        SEC + 2,
        &mut done,
    );
    t.on_segment(&c.client_sends(c.cseq + 19, FIN, &[]), SEC + 3, &mut done);
    t.on_segment(&c.server_sends(c.sseq + 1, FIN, &[]), SEC + 4, &mut done);
    t.drain(&mut done);
    assert_eq!(done.finished.len(), 1, "{:?}", done.finished);
    assert_eq!(done.finished[0].security, Security::Plaintext);
    assert!(!done.finished[0].attempt);
    assert_eq!(done.connections.len(), 1);

    // no retry within the linger: one attempt, finished by the reset
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40101));
    t.on_segment(&c.client_sends(c.cseq, SYN, &[]), 0, &mut done);
    t.on_segment(&c.server_sends(777, ACK, &[]), 1, &mut done);
    t.on_segment(&c.client_sends(12345, RST, &[]), 2, &mut done);
    t.sweep(RETRY_LINGER + 3, &mut done);
    assert_eq!(done.finished.len(), 1);
    assert!(done.finished[0].attempt && done.finished[0].end == EndReason::Rst);
    assert!(t.is_empty());
}

/// A data segment that arrives after its connection closed (a retransmitted FIN with data)
/// opens no second connection.
#[test]
fn data_after_the_close_opens_no_new_connection() {
    let (mut t, mut done, c) = (table(), Outputs::default(), Conn::new(40200));
    c.handshake(&mut t, 0, &mut done);
    let req = b"GET / HTTP/1.1\r\n\r\n";
    t.on_segment(&c.client_sends(c.cseq + 1, PSH, req), 1, &mut done);
    t.on_segment(
        &c.client_sends(c.cseq + 1 + req.len() as u32, FIN | PSH, b"tail"),
        2,
        &mut done,
    );
    t.on_segment(&c.server_sends(c.sseq + 1, FIN, &[]), 3, &mut done);
    assert_eq!(done.finished.len(), 1);
    // the client's FIN with data again, then a stray server segment with data
    t.on_segment(
        &c.client_sends(c.cseq + 1 + req.len() as u32, FIN | PSH, b"tail"),
        4,
        &mut done,
    );
    t.on_segment(&c.server_sends(c.sseq + 1, PSH, b"late"), 5, &mut done);
    t.drain(&mut done);
    assert_eq!(done.finished.len(), 1, "{:?}", done.finished);
    assert_eq!(t.stats().orphan_packets, 2);
}

/// What never carried payload is an attempt (refused, unanswered, connect-and-close probe);
/// a server that speaks first is a connection.
#[test]
fn attempts_are_connections_without_payload() {
    let (mut t, mut done) = (table(), Outputs::default());
    let unanswered = Conn::new(40300);
    t.on_segment(&unanswered.client_sends(1000, SYN, &[]), 0, &mut done);
    let refused = Conn::new(40301);
    t.on_segment(&refused.client_sends(1000, SYN, &[]), 0, &mut done);
    t.on_segment(&refused.server_sends(0, RST | ACK, &[]), 1, &mut done);
    let probe = Conn::new(40302);
    probe.handshake(&mut t, 0, &mut done);
    t.on_segment(&probe.client_sends(probe.cseq + 1, FIN, &[]), 1, &mut done);
    t.on_segment(&probe.server_sends(probe.sseq + 1, FIN, &[]), 2, &mut done);
    let banner = Conn::new(40303);
    banner.handshake(&mut t, 0, &mut done);
    t.on_segment(
        &banner.server_sends(banner.sseq + 1, PSH, b"220 smtp ready\r\n"),
        1,
        &mut done,
    );
    t.drain(&mut done);
    let attempt = |port: u16| {
        done.finished
            .iter()
            .find(|r| r.sport == port)
            .map(|r| r.attempt)
            .expect("record")
    };
    assert!(attempt(40300) && attempt(40301) && attempt(40302));
    assert!(!attempt(40303));
    let events: Vec<bool> = done.connections.iter().map(|c| c.attempt).collect();
    assert_eq!(events.iter().filter(|a| **a).count(), 3, "{events:?}");
}

/// A sidecar's legs inside a pod: the app's connection REDIRECTed to 127.0.0.1:15001 (and its
/// replies, which carry the original destination, captured on lo), Envoy's inbound leg from
/// 127.0.0.6: local, whatever they carry.
#[test]
fn loopback_traffic_is_local() {
    let (mut t, mut done) = (table(), Outputs::default());
    let app = (addr("10.244.1.12"), 45000);
    let outbound = (addr("127.0.0.1"), 15001);
    let original = (addr("10.244.1.11"), 8000);
    t.on_segment(&seg(app, outbound, 10, 0, SYN, &[]), 0, &mut done);
    t.on_segment(
        &seg(app, outbound, 11, 1, PSH, b"GET / HTTP/1.1\r\n\r\n"),
        1,
        &mut done,
    );
    let mut reply = seg(original, app, 500, 30, SYN | ACK, &[]);
    reply.loopback = true;
    t.on_segment(&reply, 1, &mut done);
    let mut data = seg(original, app, 501, 30, PSH, b"HTTP/1.1 200 OK\r\n\r\n");
    data.loopback = true;
    t.on_segment(&data, 2, &mut done);
    let inbound = (addr("127.0.0.6"), 41000);
    t.on_segment(&seg(inbound, original, 1, 0, SYN, &[]), 3, &mut done);
    t.on_segment(
        &seg(inbound, original, 2, 1, PSH, b"GET / HTTP/1.1\r\n\r\n"),
        4,
        &mut done,
    );
    let v6 = (addr("::1"), 40000);
    t.on_segment(&seg(v6, (addr("::1"), 15020), 1, 0, SYN, &[]), 5, &mut done);
    let real = Conn::new(40400);
    real.handshake(&mut t, 6, &mut done);
    t.on_segment(
        &real.client_sends(real.cseq + 1, PSH, b"GET / HTTP/1.1\r\n\r\n"),
        7,
        &mut done,
    );
    t.drain(&mut done);
    let local: Vec<bool> = done.finished.iter().map(|r| r.local).collect();
    assert_eq!(
        local.iter().filter(|l| **l).count(),
        4,
        "{:?}",
        done.finished
    );
    let real_rec = done
        .finished
        .iter()
        .find(|r| r.sport == 40400)
        .expect("real");
    assert!(!real_rec.local);
    assert!(done.connections.iter().filter(|c| c.local).count() == 4);
}

/// Two views of one connection: before DNAT (to the ClusterIP) and after (to the pod), with the
/// same client ISN and port — and the same for a connection seen mid-stream, by the sequence
/// number of its first segment. One connection each, with the other view listed.
#[test]
fn views_of_one_connection_are_joined() {
    let (mut t, mut done) = (table(), Outputs::default());
    let client = (addr("10.244.1.31"), 45928);
    let (cluster_ip, pod) = ((addr("10.96.0.50"), 80), (addr("10.244.1.21"), 8000));
    t.on_segment(&seg(client, cluster_ip, 777, 0, SYN, &[]), 0, &mut done);
    t.on_segment(&seg(client, pod, 777, 0, SYN, &[]), 10, &mut done);
    t.on_segment(
        &seg(cluster_ip, client, 5000, 778, SYN | ACK, &[]),
        20,
        &mut done,
    );
    t.on_segment(&seg(pod, client, 5000, 778, SYN | ACK, &[]), 30, &mut done);
    t.on_segment(
        &seg(
            client,
            cluster_ip,
            778,
            5001,
            PSH,
            b"GET / HTTP/1.1\r\n\r\n",
        ),
        40,
        &mut done,
    );
    t.on_segment(
        &seg(client, pod, 778, 5001, PSH, b"GET / HTTP/1.1\r\n\r\n"),
        50,
        &mut done,
    );
    // mid-stream: a keep-alive connection whose SYN came before the capture
    let other = (addr("10.244.1.32"), 50000);
    t.on_segment(
        &seg(other, cluster_ip, 9_000, 1, PSH, b"GET /b HTTP/1.1\r\n\r\n"),
        60,
        &mut done,
    );
    t.on_segment(
        &seg(other, pod, 9_000, 1, PSH, b"GET /b HTTP/1.1\r\n\r\n"),
        70,
        &mut done,
    );
    // the same ISN and port much later is another connection, not a view
    let late = (addr("10.244.1.33"), 45928);
    t.on_segment(&seg(late, pod, 777, 0, SYN, &[]), 10 * SEC, &mut done);
    t.drain(&mut done);
    let counted: Vec<&FlowRecord> = done.finished.iter().filter(|r| !r.view).collect();
    let views: Vec<&FlowRecord> = done.finished.iter().filter(|r| r.view).collect();
    assert_eq!((counted.len(), views.len()), (3, 2), "{:#?}", done.finished);
    assert_eq!(t.stats().views_joined, 2);
    let first = counted
        .iter()
        .find(|r| r.src == client.0)
        .expect("first view");
    assert_eq!((first.dst, first.dport), cluster_ip);
    assert_eq!(first.views.len(), 1);
    assert_eq!((first.views[0].dst, first.views[0].dport), pod);
    // the agent's events: one connection per joined connection
    let events = done.connections.iter().filter(|c| !c.view).count();
    assert_eq!(events, 3);
    let with_backend = done
        .connections
        .iter()
        .find(|c| !c.view && c.src == client.0)
        .expect("event");
    assert_eq!(with_backend.alt_dst, Some(pod));
    // the connection first seen mid-stream was announced only after its other view joined
    let midstream = done
        .connections
        .iter()
        .find(|c| !c.view && c.src == other.0)
        .expect("mid-stream event");
    assert_eq!(midstream.alt_dst, Some(pod));
}

/// A mid-stream flow's event waits for its views (the sweep hands it out after the window).
#[test]
fn a_midstream_connection_is_announced_after_its_views_had_time() {
    let (mut t, mut done) = (table(), Outputs::default());
    let client = (addr("10.244.1.32"), 50000);
    let (cluster_ip, pod) = ((addr("10.96.0.50"), 80), (addr("10.244.1.21"), 8000));
    let get = b"GET /b HTTP/1.1\r\n\r\n";
    t.on_segment(&seg(client, cluster_ip, 9_000, 1, PSH, get), 0, &mut done);
    assert!(
        done.connections.is_empty(),
        "not before its views could join"
    );
    t.on_segment(&seg(client, pod, 9_000, 1, PSH, get), 10, &mut done);
    t.sweep(VIEW_WINDOW + 1, &mut done);
    let events: Vec<&Connection> = done.connections.iter().filter(|c| !c.view).collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].alt_dst, Some(pod));
    t.drain(&mut done);
    assert_eq!(
        done.connections.iter().filter(|c| !c.view).count(),
        1,
        "once"
    );
}

proptest! {
    /// Any sequence of segments among a few endpoints (SYNs, answers, data, FINs, RSTs, port
    /// reuse, views, idle gaps, the end of time) on a table of a few flows: the slab and its
    /// index stay consistent after every segment, the bound holds, and every flow started
    /// leaves as exactly one record.
    #[test]
    fn the_table_stays_consistent_whatever_comes(
        max_flows in 1usize..6,
        steps in proptest::collection::vec(
            (0u8..4, 0u8..4, 0u16..3, prop_oneof![Just(SYN), Just(SYN | ACK), Just(ACK), Just(PSH), Just(FIN), Just(RST), Just(RST | ACK)], 0u32..4, any::<bool>(), 0u64..400),
            1..120,
        ),
    ) {
        let limits = TableLimits { max_flows, idle_timeout: 300 * SEC };
        let (mut t, mut done) = (FlowTable::new(limits), Outputs::default());
        let mut now = 0u64;
        for (a, b, port, flags, seq, data, gap) in steps {
            now = match gap {
                399 => u64::MAX,
                g => now.saturating_add(g * SEC / 10),
            };
            let src = (IpAddr::from([10, 0, 0, a]), 40000 + port);
            let dst = (IpAddr::from([10, 0, 1, b]), 8000);
            let (src, dst) = if flags == SYN | ACK { (dst, src) } else { (src, dst) };
            let payload: &[u8] = if data { b"GET / HTTP/1.1\r\n\r\n" } else { &[] };
            t.on_segment(&seg(src, dst, seq * 1000, 1, flags, payload), now, &mut done);
            t.assert_consistent();
            prop_assert!(t.len() <= max_flows);
        }
        t.drain(&mut done);
        t.assert_consistent();
        prop_assert_eq!(t.len(), 0);
        prop_assert_eq!(done.finished.len() as u64, t.stats().flows_started);
    }

    /// Eviction's choice: the `n` smallest `(last seen, key)` pairs, as sorting them all says —
    /// with many flows seen at the same moment (ties broken by key).
    #[test]
    fn oldest_are_the_smallest_time_key_pairs(
        ages in proptest::collection::vec((0u64..6, any::<[u8; 4]>(), any::<u16>()), 0..80),
        free in proptest::collection::vec(any::<bool>(), 0..80),
        n in 0usize..90,
    ) {
        let mut pairs: Vec<(u64, FlowKey)> = ages
            .iter()
            .map(|(t, ip, port)| {
                (*t, FlowKey::new((IpAddr::from(*ip), *port), (IpAddr::from([10, 0, 0, 1]), 80)).0)
            })
            .collect();
        // one age per key, as in a table
        pairs.sort_unstable_by_key(|p| p.1);
        pairs.dedup_by_key(|p| p.1);
        let mut want: Vec<FlowKey> = {
            let mut sorted = pairs.clone();
            sorted.sort_unstable();
            sorted.into_iter().take(n).map(|p| p.1).collect()
        };
        // laid out in a slab with free positions among them
        let mut slab: Vec<Option<(u64, FlowKey)>> = Vec::new();
        for (i, p) in pairs.iter().enumerate() {
            if free.get(i).copied().unwrap_or(false) {
                slab.push(None);
            }
            slab.push(Some(*p));
        }
        let seen: Vec<u64> = slab.iter().map(|s| s.map_or(u64::MAX, |p| p.0)).collect();
        let key_at = |at: usize| slab.get(at).copied().flatten().map(|p| p.1);
        let mut got: Vec<FlowKey> = super::table::oldest(&seen, n, key_at)
            .into_iter()
            .filter_map(key_at)
            .collect();
        want.sort_unstable();
        got.sort_unstable();
        prop_assert_eq!(got, want);
    }
}
