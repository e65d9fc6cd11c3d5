//! `analyze --threads N`: flows sharded by the hash of their client port to N worker threads,
//! each with its own [`Pipeline`]. The reader decodes each frame once to find its shard and hands
//! frames over in batches (one channel send per ~256 KiB, not per packet); finished flows come
//! back per flow. Every frame goes to exactly one worker, so the counts add up.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::capture::Frame;
use crate::decode::{self, Decoded, LinkType};
use crate::flow::{FlowRecord, TableLimits, TableStats};
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

/// A worker thread ended by a panic: its flows are lost, so the analysis is refused.
#[derive(Debug, thiserror::Error)]
#[error("analysis worker {0} panicked; its share of the flows is lost")]
pub struct WorkerPanicked(pub usize);

/// The reader's side of N workers.
#[derive(Debug)]
pub struct Shards {
    senders: Vec<SyncSender<Batch>>,
    batches: Vec<Batch>,
    records: Receiver<FlowRecord>,
    workers: Vec<JoinHandle<WorkerTotals>>,
    hasher: foldhash::fast::FixedState,
    /// Flows each worker holds after its last batch, and the largest sum seen at a flush: the
    /// table-wide peak (a sum of per-worker peaks would count peaks that never coincided).
    open: Arc<[AtomicUsize]>,
    peak_flows: usize,
}

impl Shards {
    pub fn new(threads: usize, limits: TableLimits) -> Self {
        let threads = threads.max(1);
        let per_worker = TableLimits {
            max_flows: (limits.max_flows / threads).max(1),
            ..limits
        };
        let (record_tx, records) = mpsc::channel();
        let open: Arc<[AtomicUsize]> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for i in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
            let record_tx = record_tx.clone();
            senders.push(tx);
            let open = open.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("meshwatch-worker-{i}"))
                .spawn(move || work(rx, record_tx, per_worker, &open, i));
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
            open,
            peak_flows: 0,
        }
    }

    /// Route one frame to its flow's worker.
    pub fn push(&mut self, frame: &Frame<'_>) {
        let n = self.senders.len();
        if n == 0 {
            return;
        }
        let shard = match decode::decode(frame.link, frame.data) {
            // by the client's port, which every view of a connection keeps (NAT rewrites the
            // addresses and the server port): the views meet in one worker and join there. The
            // client's port is the higher one but for clients below the ephemeral range.
            Ok(Decoded::Tcp(seg)) => {
                (self.hasher.hash_one(seg.sport.max(seg.dport)) % n as u64) as usize
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
        let open: usize = self.open.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        self.peak_flows = self.peak_flows.max(open);
    }

    /// Flow records finished so far.
    pub fn finished(&self) -> mpsc::TryIter<'_, FlowRecord> {
        self.records.try_iter()
    }

    /// End of input: flush, stop the workers, return their totals and the last records; an
    /// error when a worker panicked.
    pub fn finish(mut self) -> Result<(WorkerTotals, Vec<FlowRecord>), WorkerPanicked> {
        for shard in 0..self.senders.len() {
            self.flush(shard);
        }
        self.senders.clear(); // closes the channels: workers drain and end
        let mut totals = WorkerTotals::default();
        for t in join_all(self.workers.drain(..))? {
            merge(&mut totals, t);
        }
        totals.table.peak_flows = totals.table.peak_flows.max(self.peak_flows as u64);
        let rest = self.records.try_iter().collect();
        Ok((totals, rest))
    }
}

/// Join every worker; the first one that panicked is the error (all are joined regardless).
fn join_all<T>(workers: impl Iterator<Item = JoinHandle<T>>) -> Result<Vec<T>, WorkerPanicked> {
    let mut done = Vec::new();
    let mut panicked = None;
    for (i, w) in workers.enumerate() {
        match w.join() {
            Ok(t) => done.push(t),
            Err(_) => panicked = panicked.or(Some(WorkerPanicked(i))),
        }
    }
    panicked.map_or(Ok(done), Err)
}

fn work(
    batches: Receiver<Batch>,
    records: mpsc::Sender<FlowRecord>,
    limits: TableLimits,
    open: &[AtomicUsize],
    me: usize,
) -> WorkerTotals {
    let mut pipeline = Pipeline::new(limits);
    for batch in batches {
        if let Some(n) = open.get(me) {
            n.store(pipeline.open_flows(), Ordering::Relaxed);
        }
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
    // a lower bound; `Shards::finish` raises it to the largest sum seen
    a.peak_flows = a.peak_flows.max(b.peak_flows);
    a.orphan_packets += b.orphan_packets;
    into.first_last = match (into.first_last, t.first_last) {
        (Some((f1, l1)), Some((f2, l2))) => Some((f1.min(f2), l1.max(l2))),
        (x, None) | (None, x) => x,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_worker_is_an_error_not_a_silent_loss() {
        let ok = std::thread::spawn(|| 1);
        let bad = std::thread::spawn(|| -> i32 { panic!("worker lost") });
        let err = join_all([ok, bad].into_iter()).expect_err("a worker panicked");
        assert_eq!(err.0, 1);
        assert!(err.to_string().contains("worker 1 panicked"));
        let fine = join_all([std::thread::spawn(|| 2)].into_iter()).expect("no panic");
        assert_eq!(fine, vec![2]);
    }
}
