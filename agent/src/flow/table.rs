//! The bounded flow table: lookup, creation, port reuse, idle and close timeouts, eviction
//! under pressure. Every flow leaves as exactly one [`FlowRecord`]; every eviction is counted.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::key::FlowKey;
use super::state::{Connection, EndReason, Flow, FlowRecord, PacketOutcome};
use crate::decode::TcpSegment;
use crate::Nanos;

const SECOND: Nanos = 1_000_000_000;
/// Connections tracked at once by default: ~11 MB of flow state, ~30 MB with the table.
pub const DEFAULT_MAX_FLOWS: usize = 50_000;
// Under eviction churn hashbrown doubles a table whose live entries exceed half its capacity
// (tombstones use up the room), so a table bounded to N flows can reach ~2N slots: the default
// bound is chosen with that in mind (a 1M-SYN flood peaks at ~50 MiB RSS). The table starts small
// so that a table of few flows stays small and cache-resident.

/// Bounds of the table.
#[derive(Debug, Clone, Copy)]
pub struct TableLimits {
    /// Flows held at once; at the bound the oldest are evicted.
    pub max_flows: usize,
    /// A flow with no packet for this long is finished. A closed flow (FIN both ways, or RST)
    /// is finished at once: its stragglers carry no payload and open no flow (`orphan_packets`).
    pub idle_timeout: Nanos,
}

impl Default for TableLimits {
    fn default() -> Self {
        TableLimits {
            max_flows: DEFAULT_MAX_FLOWS,
            idle_timeout: 300 * SECOND,
        }
    }
}

/// Counters of the table's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    pub flows_started: u64,
    pub duplicates: u64,
    pub reassembly_gave_up: u64,
    pub evicted_idle: u64,
    pub evicted_pressure: u64,
    pub closed_fin: u64,
    pub closed_rst: u64,
    pub reused: u64,
    pub peak_flows: u64,
    /// Packets without payload of no known connection (no SYN): they open no flow.
    pub orphan_packets: u64,
}

/// What the table hands out: each flow yields one [`Connection`] and one [`FlowRecord`].
#[derive(Debug, Default)]
pub struct Outputs {
    pub connections: Vec<Connection>,
    pub finished: Vec<FlowRecord>,
}

/// Flows by key, bounded.
#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow, RandomState>,
    limits: TableLimits,
    next_sweep: Nanos,
    stats: TableStats,
    scratch: Vec<u8>,
}

impl FlowTable {
    pub fn new(limits: TableLimits) -> Self {
        FlowTable {
            flows: HashMap::with_capacity_and_hasher(1024, RandomState::default()),
            limits,
            next_sweep: 0,
            stats: TableStats::default(),
            scratch: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Account one TCP segment; finished flows are appended to `done`.
    pub fn on_segment(
        &mut self,
        seg: &TcpSegment<'_>,
        now: Nanos,
        done: &mut Outputs,
    ) -> PacketOutcome {
        if now >= self.next_sweep {
            self.sweep(now, done);
            self.next_sweep = now.saturating_add(SECOND);
        }
        let (key, dir) = FlowKey::new((seg.src, seg.sport), (seg.dst, seg.dport));
        if let Some(flow) = self.flows.get_mut(&key) {
            if !flow.is_reused_by(dir, seg) {
                let outcome = flow.on_packet(dir, seg, now, &mut self.scratch);
                self.stats.duplicates += u64::from(outcome.duplicate);
                self.stats.reassembly_gave_up += u64::from(outcome.reassembly_gave_up);
                if outcome.classified {
                    done.connections.extend(flow.connection(&key, now));
                }
                if let Some(reason) = flow.close_reason() {
                    self.finish(&key, reason, done);
                }
                return outcome;
            }
            self.stats.reused += 1;
            self.finish(&key, EndReason::Reused, done);
        }
        if !seg.flags.syn() && seg.payload.is_empty() {
            // An ACK, FIN or RST of a connection we never saw (or already finished): it says
            // nothing about security and would only make an empty, unknown flow.
            self.stats.orphan_packets += 1;
            return PacketOutcome::default();
        }
        if self.flows.len() >= self.limits.max_flows {
            self.evict_oldest(done);
        }
        let mut flow = Flow::start(key, dir, seg, now);
        let outcome = flow.on_packet(dir, seg, now, &mut self.scratch);
        self.stats.reassembly_gave_up += u64::from(outcome.reassembly_gave_up);
        if outcome.classified {
            done.connections.extend(flow.connection(&key, now));
        }
        self.stats.flows_started += 1;
        if let Some(reason) = flow.close_reason() {
            // a lone RST (or SYN+RST): nothing more will come
            self.retire(&key, flow, reason, done);
            return outcome;
        }
        self.flows.insert(key, flow);
        self.stats.peak_flows = self.stats.peak_flows.max(self.flows.len() as u64);
        outcome
    }

    /// Finish idle flows.
    pub fn sweep(&mut self, now: Nanos, done: &mut Outputs) {
        let idle = self.limits.idle_timeout;
        let expired: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, flow)| now.saturating_sub(flow.last_seen()) >= idle)
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            self.finish(&key, EndReason::Idle, done);
        }
    }

    /// Finish every flow (end of the capture): all still open, closed ones already left.
    pub fn drain(&mut self, done: &mut Outputs) {
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for key in keys {
            self.finish(&key, EndReason::CaptureEnd, done);
        }
    }

    fn count_end(&mut self, reason: EndReason) {
        match reason {
            EndReason::Fin => self.stats.closed_fin += 1,
            EndReason::Rst => self.stats.closed_rst += 1,
            EndReason::Idle => self.stats.evicted_idle += 1,
            EndReason::Evicted => self.stats.evicted_pressure += 1,
            EndReason::Reused | EndReason::CaptureEnd => {}
        }
    }

    fn finish(&mut self, key: &FlowKey, reason: EndReason, done: &mut Outputs) {
        if let Some(flow) = self.flows.remove(key) {
            self.retire(key, flow, reason, done);
        }
    }

    /// A flow leaves: its final record, and its connection event if it was never classified.
    fn retire(&mut self, key: &FlowKey, flow: Flow, reason: EndReason, done: &mut Outputs) {
        self.count_end(reason);
        let counted = flow.is_classified();
        let record = flow.finish(key, reason, &mut self.scratch);
        if !counted {
            done.connections.push(Connection::from(&record));
        }
        done.finished.push(record);
    }

    /// At the bound: finish the least recently seen eighth of the table, so eviction costs O(n)
    /// once per n/8 new flows rather than per flow.
    fn evict_oldest(&mut self, done: &mut Outputs) {
        let mut ages: Vec<(Nanos, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, f)| (f.last_seen(), *k))
            .collect();
        let n = (ages.len() / 8).max(1);
        if n < ages.len() {
            ages.select_nth_unstable(n);
        }
        for (_, key) in ages.into_iter().take(n) {
            self.finish(&key, EndReason::Evicted, done);
        }
    }
}
