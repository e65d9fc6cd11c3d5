#![allow(unsafe_code)] // a counting allocator: GlobalAlloc is an unsafe trait
//! The per-packet path allocates nothing once a flow is classified: decode plus the flow
//! table, for thousands of packets of a classified connection, counted by the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

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
