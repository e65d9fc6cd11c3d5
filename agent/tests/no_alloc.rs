#![allow(unsafe_code)] // a counting allocator: GlobalAlloc is an unsafe trait
//! The per-packet path allocates nothing once a flow is classified: decode plus the flow
//! table, for thousands of packets of a classified connection, counted by the allocator; and
//! reading a capture, pcap or pcapng, allocates nothing per packet either.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use meshwatch::capture::Frame;
use meshwatch::pipeline::Pipeline;
use meshwatch::{decode::LinkType, flow::TableLimits};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding to the system allocator with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The tests of this binary run one at a time: the counter sees every thread.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const ISTIO_HELLO: &[u8] = include_bytes!("../assets/clienthello-istio-openssl.bin");

fn frame(from_client: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = if from_client {
        ([10, 1, 0, 9], [10, 2, 0, 7], 40000u16, 8000u16)
    } else {
        ([10, 2, 0, 7], [10, 1, 0, 9], 8000, 40000)
    };
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (40 + payload.len()) as u16;
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
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// An Ethernet frame captured at `ts`.
fn at(ts: u64, data: &[u8]) -> Frame<'_> {
    Frame {
        ts,
        link: LinkType::ETHERNET,
        data,
        wire_len: data.len() as u32,
        loopback: false,
    }
}

#[test]
fn classified_flows_cost_no_allocation_per_packet() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = Pipeline::new(TableLimits::default());
    let syn = frame(true, 999, 0x02, &[]);
    let hello = frame(true, 1000, 0x18, ISTIO_HELLO);
    p.on_frame(&at(1, &syn));
    p.on_frame(&at(2, &hello));
    // a stream of server data and client ACKs, built before counting
    let body = vec![0u8; 1448];
    let frames: Vec<Vec<u8>> = (0..5000u32)
        .map(|i| {
            if i % 2 == 0 {
                frame(false, 5000 + i * 1448, 0x18, &body)
            } else {
                frame(true, 1385, 0x10, &[])
            }
        })
        .collect();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for (i, f) in frames.iter().enumerate() {
        p.on_frame(&at(3 + i as u64, f));
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for 5000 packets of a classified flow"
    );
    assert_eq!(p.packet_stats().tcp_packets, 5002);
}

/// A pcapng capture of `packets` Enhanced Packet Blocks (with an option each, as dumpcap
/// writes them) or a legacy pcap of as many records.
fn capture(pcapng: bool, packets: usize) -> Vec<u8> {
    let data = frame(false, 5000, 0x18, &[0u8; 1200]);
    let mut out = Vec::new();
    if pcapng {
        let shb: [u32; 7] = [
            0x0a0d_0d0a,
            28,
            0x1a2b_3c4d,
            0x0000_0001,
            0xffff_ffff,
            0xffff_ffff,
            28,
        ];
        shb.iter()
            .for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
        let idb: [u32; 5] = [1, 20, 1, 0x0004_0000, 20];
        idb.iter()
            .for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
        let padded = data.len().div_ceil(4) * 4;
        let len = (28 + padded + 8 + 4) as u32;
        for i in 0..packets as u32 {
            for w in [6, len, 0, 0, i, data.len() as u32, data.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&data);
            out.resize(out.len() + padded - data.len(), 0);
            // an opt_comment of 1 byte, then opt_endofopt
            out.extend_from_slice(&[1, 0, 1, 0, b'x', 0, 0, 0]);
            out.extend_from_slice(&len.to_le_bytes());
        }
    } else {
        for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
            if w == 0x0004_0002 {
                out.extend_from_slice(&2u16.to_le_bytes());
                out.extend_from_slice(&4u16.to_le_bytes());
            } else {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        for i in 0..packets as u32 {
            for w in [i, 0, data.len() as u32, data.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&data);
        }
    }
    out
}

use meshwatch::capture::file::{Ahead, CaptureFile};

/// Allocations made while reading a whole capture (the reader is built before counting), on
/// any thread (the read-ahead's too).
fn allocations_reading(bytes: Vec<u8>, ahead: Ahead) -> (usize, u64) {
    let mut file = CaptureFile::from_reader_with("test".into(), std::io::Cursor::new(bytes), ahead)
        .expect("a capture");
    let mut frames = 0u64;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let summary = file.for_each_frame(|_| frames += 1, |_| {}).expect("read");
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(summary.frames, frames);
    (allocations, frames)
}

#[test]
fn reading_pcap_and_pcapng_costs_no_allocation_per_packet() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for (pcapng, ahead) in [false, true]
        .into_iter()
        .flat_map(|ng| [(ng, Ahead::No), (ng, Ahead::Yes)])
    {
        let (few, n_few) = allocations_reading(capture(pcapng, 1_000), ahead);
        let (many, n_many) = allocations_reading(capture(pcapng, 20_000), ahead);
        assert_eq!((n_few, n_many), (1_000, 20_000));
        // reading ahead, a channel allocates once when a thread first waits on it, before or
        // after counting starts; one allocation per packet would be thousands, per buffer ~45
        let slack = if ahead == Ahead::Yes { 8 } else { 0 };
        assert!(
            many <= few + slack,
            "pcapng={pcapng} {ahead:?}: {few} allocations for 1,000 packets, {many} for 20,000"
        );
    }
}
