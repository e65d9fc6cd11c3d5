//! Micro-benchmarks of the per-packet path: decode, a packet of a classified flow, preface
//! reassembly of a ClientHello split in three, and classification of a real Istio hello.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshwatch::classify::classify_preface;
use meshwatch::decode::{decode, LinkType, TcpFlags, TcpSegment};
use meshwatch::flow::{FlowTable, Outputs, TableLimits};
use meshwatch::reassembly::Preface;

const ISTIO_HELLO: &[u8] = include_bytes!("../assets/clienthello-istio-openssl.bin");
const SPLIT_HELLO: &[u8] = include_bytes!("../assets/clienthello-split-records.bin");

/// An Ethernet/IPv4/TCP frame with a full-size payload.
fn frame() -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let payload = vec![0x5a; 1448];
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 2, 0, 7, 10, 1, 0, 9]);
    f.extend_from_slice(&[
        0x1f, 0x40, 0x9c, 0x40, 0, 0, 0x10, 0, 0, 0, 0x20, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.extend_from_slice(&payload);
    f
}

fn seg(payload: &[u8], seq: u32, flags: u8, from_client: bool) -> TcpSegment<'_> {
    let (c, s): (IpAddr, IpAddr) = ([10, 1, 0, 9].into(), [10, 2, 0, 7].into());
    let (src, dst, sport, dport) = if from_client {
        (c, s, 40000, 8000)
    } else {
        (s, c, 8000, 40000)
    };
    TcpSegment {
        src,
        dst,
        sport,
        dport,
        seq,
        ack: 1,
        flags: TcpFlags(flags),
        payload,
        payload_len: payload.len() as u32,
        tunnel: None,
        loopback: false,
    }
}

fn benches(c: &mut Criterion) {
    let f = frame();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode ethernet/ipv4/tcp", |b| {
        b.iter(|| decode(LinkType::ETHERNET, black_box(&f)))
    });

    // a classified flow: each packet is a lookup, a duplicate check and two counter adds
    let mut table = FlowTable::new(TableLimits::default());
    let mut out = Outputs::default();
    table.on_segment(&seg(&[], 999, TcpFlags::SYN, true), 0, &mut out);
    table.on_segment(&seg(ISTIO_HELLO, 1000, 0x18, true), 1, &mut out);
    let body = vec![0u8; 1448];
    let mut seq = 5000u32;
    g.bench_function("packet of a classified flow", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1448);
            table.on_segment(black_box(&seg(&body, seq, 0x18, false)), 2, &mut out)
        })
    });

    let (a, rest) = SPLIT_HELLO.split_at(517);
    let (b2, c3) = rest.split_at(517);
    g.bench_function("reassemble a hello in 3 segments, out of order", |b| {
        b.iter(|| {
            let mut p = Preface::new(1);
            p.insert(1 + 1034, black_box(c3));
            p.insert(1, black_box(a));
            p.insert(1 + 517, black_box(b2));
            p.contiguous().len()
        })
    });
    let mut scratch = Vec::new();
    g.bench_function("classify an Istio ClientHello", |b| {
        b.iter(|| classify_preface(black_box(ISTIO_HELLO), 8000, false, &mut scratch))
    });
    g.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
