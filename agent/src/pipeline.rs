//! The synchronous core: one captured frame in, flow records out. No I/O, no clock reads: time
//! is the packet's timestamp, so offline runs are deterministic.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::capture::Frame;
use crate::classify::SecurityCounts;
use crate::decode::{self, Decoded, Skip};
use crate::flow::{Connection, FlowRecord, FlowTable, Outputs, TableLimits, TableStats};
use crate::Nanos;

/// Packet-level counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PacketStats {
    /// Frames read.
    pub packets: u64,
    /// Bytes of those frames on the wire (original length).
    pub bytes: u64,
    pub tcp_packets: u64,
    pub not_ip: u64,
    pub not_tcp: u64,
    pub unsupported_encapsulation: u64,
    pub decode_errors: u64,
    /// Decode errors by reason (`truncated_ip`, `ip_fragment`, ...).
    pub decode_errors_by_reason: BTreeMap<&'static str, u64>,
}

/// Frames to flow records.
#[derive(Debug)]
pub struct Pipeline {
    table: FlowTable,
    stats: PacketStats,
    out: Outputs,
    first_ts: Option<Nanos>,
    last_ts: Nanos,
    /// Whether connection events are wanted (the agent); offline only records count.
    keep_connections: bool,
}

impl Pipeline {
    /// A pipeline for live use: connection events are kept for the caller to take.
    pub fn live(limits: TableLimits) -> Self {
        Pipeline {
            keep_connections: true,
            ..Self::new(limits)
        }
    }

    /// A pipeline for offline analysis: only finished flow records are produced.
    pub fn new(limits: TableLimits) -> Self {
        Pipeline {
            keep_connections: false,
            table: FlowTable::new(limits),
            stats: PacketStats::default(),
            out: Outputs::default(),
            first_ts: None,
            last_ts: 0,
        }
    }

    /// Account one captured frame.
    pub fn on_frame(&mut self, frame: &Frame<'_>) {
        self.stats.packets += 1;
        self.stats.bytes += u64::from(frame.wire_len);
        self.first_ts.get_or_insert(frame.ts);
        // Captures are mostly in order; a packet from the past does not move time backwards.
        self.last_ts = self.last_ts.max(frame.ts);
        match decode::decode(frame.link, frame.data) {
            Ok(Decoded::Tcp(mut seg)) => {
                seg.loopback |= frame.loopback;
                self.stats.tcp_packets += 1;
                self.table.on_segment(&seg, self.last_ts, &mut self.out);
                if !self.keep_connections {
                    self.out.connections.clear();
                }
            }
            Ok(Decoded::Skipped(Skip::NotIp)) => self.stats.not_ip += 1,
            Ok(Decoded::Skipped(Skip::NotTcp)) => self.stats.not_tcp += 1,
            Ok(Decoded::Skipped(Skip::UnsupportedEncapsulation)) => {
                self.stats.unsupported_encapsulation += 1
            }
            Err(e) => {
                self.stats.decode_errors += 1;
                *self
                    .stats
                    .decode_errors_by_reason
                    .entry(e.reason())
                    .or_default() += 1;
            }
        }
    }

    /// Flow records finished so far; the caller takes them.
    pub fn take_finished(&mut self) -> std::vec::Drain<'_, FlowRecord> {
        self.out.finished.drain(..)
    }

    /// Flow records finished so far, taken whole; `empty` (cleared) collects the next ones.
    pub fn swap_finished(&mut self, mut empty: Vec<FlowRecord>) -> Vec<FlowRecord> {
        empty.clear();
        std::mem::replace(&mut self.out.finished, empty)
    }

    /// The finished records, to be filled by a test.
    #[cfg(test)]
    pub fn finished_mut(&mut self) -> &mut Vec<FlowRecord> {
        &mut self.out.finished
    }

    /// How many finished flow records wait to be taken.
    pub fn finished_len(&self) -> usize {
        self.out.finished.len()
    }

    /// Connection events so far (one per flow); the caller takes them.
    pub fn take_connections(&mut self) -> std::vec::Drain<'_, Connection> {
        self.out.connections.drain(..)
    }

    /// Let time pass without packets (live capture): finishes idle and closed flows.
    pub fn tick(&mut self, now: Nanos) {
        self.last_ts = self.last_ts.max(now);
        self.table.sweep(self.last_ts, &mut self.out);
    }

    /// End of input: finish every open flow.
    pub fn finish(&mut self) {
        self.table.drain(&mut self.out);
        // nobody counts connection events offline; do not let them pile up
        self.out.connections.clear();
    }

    pub fn packet_stats(&self) -> &PacketStats {
        &self.stats
    }

    pub fn table_stats(&self) -> TableStats {
        self.table.stats()
    }

    pub fn open_flows(&self) -> usize {
        self.table.len()
    }

    /// First and last packet timestamps seen.
    pub fn time_span(&self) -> Option<(Nanos, Nanos)> {
        self.first_ts.map(|first| (first, self.last_ts))
    }
}

/// Finished flows by kind: local (loopback), attempts (no payload), and the connections that
/// are evidence, by security class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowCounts {
    /// Connections (each counted once, whatever its views).
    pub flows: u64,
    /// Flows that were another view of a connection already counted.
    pub views: u64,
    pub local: u64,
    pub attempts: u64,
    pub security: SecurityCounts,
}

impl FlowCounts {
    pub fn add(&mut self, rec: &FlowRecord) {
        if rec.view {
            self.views += 1;
            return;
        }
        self.flows += 1;
        if rec.local {
            self.local += 1;
        } else if rec.attempt {
            self.attempts += 1;
        } else {
            self.security.add(rec.security, 1);
        }
    }
}
