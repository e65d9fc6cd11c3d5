//! `analyze --threads N`: flows sharded by the hash of their canonical key to N worker threads,
//! each with its own [`Pipeline`]. The reader decodes each frame once to find its shard and hands
//! frames over in batches (one channel send per ~256 KiB, not per packet); finished flows come
//! back per flow. Every frame goes to exactly one worker, so the counts add up.

use std::hash::BuildHasher;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::capture::Frame;
use crate::decode::{self, Decoded, LinkType};
use crate::flow::{FlowKey, FlowRecord, TableLimits, TableStats};
use crate::pipeline::{PacketStats, Pipeline};
use crate::Nanos;

/// Bytes of frames per batch handed to a worker.
const BATCH_BYTES: usize = 256 << 10;
/// Batches in flight per worker (bounds the reader's lead, and memory).
const BATCHES_IN_FLIGHT: usize = 4;

#[derive(Debug, Default)]
struct Batch {
    data: Vec<u8>,
    frames: Vec<(Nanos, LinkType, u32, bool, usize, usize)>,
}

/// What a worker reports when its input ends.
#[derive(Debug, Default)]
pub struct WorkerTotals {
    pub packets: PacketStats,
    pub table: TableStats,
    pub first_last: Option<(Nanos, Nanos)>,
}

/// The reader's side of N workers.
#[derive(Debug)]
pub struct Shards {
    senders: Vec<SyncSender<Batch>>,
    batches: Vec<Batch>,
    records: Receiver<FlowRecord>,
    workers: Vec<JoinHandle<WorkerTotals>>,
    hasher: foldhash::fast::FixedState,
}

impl Shards {
    pub fn new(threads: usize, limits: TableLimits) -> Self {
        let threads = threads.max(1);
        let per_worker = TableLimits {
            max_flows: (limits.max_flows / threads).max(1),
            ..limits
        };
        let (record_tx, records) = mpsc::channel();
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for i in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
            let record_tx = record_tx.clone();
            senders.push(tx);
            let spawned = std::thread::Builder::new()
                .name(format!("meshwatch-worker-{i}"))
                .spawn(move || work(rx, record_tx, per_worker));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(_) => {
                    senders.pop();
                }
            }
        }
        let batches = senders.iter().map(|_| Batch::default()).collect();
        Shards {
            senders,
            batches,
            records,
            workers,
            hasher: foldhash::fast::FixedState::with_seed(0x6d65_7368),
        }
    }

    /// Route one frame to its flow's worker.
    pub fn push(&mut self, frame: &Frame<'_>) {
        let n = self.senders.len();
        if n == 0 {
            return;
        }
        let shard = match decode::decode(frame.link, frame.data) {
            Ok(Decoded::Tcp(seg)) => {
                let (key, _) = FlowKey::new((seg.src, seg.sport), (seg.dst, seg.dport));
                (self.hasher.hash_one(key) % n as u64) as usize
            }
            // not TCP or undecodable: any worker counts it
            _ => 0,
        };
        let Some(batch) = self.batches.get_mut(shard) else {
            return;
        };
        let start = batch.data.len();
        batch.data.extend_from_slice(frame.data);
        batch.frames.push((
            frame.ts,
            frame.link,
            frame.wire_len,
            frame.loopback,
            start,
            frame.data.len(),
        ));
        if batch.data.len() >= BATCH_BYTES {
            self.flush(shard);
        }
    }

    fn flush(&mut self, shard: usize) {
        if let (Some(batch), Some(tx)) = (self.batches.get_mut(shard), self.senders.get(shard)) {
            let full = std::mem::take(batch);
            let _ = tx.send(full);
        }
    }

    /// Flow records finished so far.
    pub fn finished(&self) -> mpsc::TryIter<'_, FlowRecord> {
        self.records.try_iter()
    }

    /// End of input: flush, stop the workers, return their totals and the last records.
    pub fn finish(mut self) -> (WorkerTotals, Vec<FlowRecord>) {
        for shard in 0..self.senders.len() {
            self.flush(shard);
        }
        self.senders.clear(); // closes the channels: workers drain and end
        let mut totals = WorkerTotals::default();
        for w in self.workers.drain(..) {
            if let Ok(t) = w.join() {
                merge(&mut totals, t);
            }
        }
        let rest = self.records.try_iter().collect();
        (totals, rest)
    }
}

fn work(
    batches: Receiver<Batch>,
    records: mpsc::Sender<FlowRecord>,
    limits: TableLimits,
) -> WorkerTotals {
    let mut pipeline = Pipeline::new(limits);
    for batch in batches {
        for &(ts, link, wire_len, loopback, start, len) in &batch.frames {
            if let Some(data) = batch.data.get(start..start + len) {
                pipeline.on_frame(&Frame {
                    ts,
                    link,
                    data,
                    wire_len,
                    loopback,
                });
            }
        }
        pipeline.take_connections().for_each(drop);
        for r in pipeline.take_finished() {
            let _ = records.send(r);
        }
    }
    pipeline.finish();
    pipeline.take_connections().for_each(drop);
    for r in pipeline.take_finished() {
        let _ = records.send(r);
    }
    WorkerTotals {
        packets: pipeline.packet_stats().clone(),
        table: pipeline.table_stats(),
        first_last: pipeline.time_span(),
    }
}

fn merge(into: &mut WorkerTotals, t: WorkerTotals) {
    let (a, b) = (&mut into.packets, &t.packets);
    a.packets += b.packets;
    a.bytes += b.bytes;
    a.tcp_packets += b.tcp_packets;
    a.not_ip += b.not_ip;
    a.not_tcp += b.not_tcp;
    a.unsupported_encapsulation += b.unsupported_encapsulation;
    a.decode_errors += b.decode_errors;
    for (reason, n) in &b.decode_errors_by_reason {
        *a.decode_errors_by_reason.entry(reason).or_default() += n;
    }
    let (a, b) = (&mut into.table, &t.table);
    a.flows_started += b.flows_started;
    a.duplicates += b.duplicates;
    a.reassembly_gave_up += b.reassembly_gave_up;
    a.evicted_idle += b.evicted_idle;
    a.evicted_pressure += b.evicted_pressure;
    a.closed_fin += b.closed_fin;
    a.closed_rst += b.closed_rst;
    a.reused += b.reused;
    a.peak_flows += b.peak_flows;
    a.orphan_packets += b.orphan_packets;
    into.first_last = match (into.first_last, t.first_last) {
        (Some((f1, l1)), Some((f2, l2))) => Some((f1.min(f2), l1.max(l2))),
        (x, None) | (None, x) => x,
    };
}
