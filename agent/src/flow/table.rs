//! The bounded flow table: lookup, creation, port reuse, idle and close timeouts, eviction
//! under pressure. Every flow leaves as exactly one [`FlowRecord`]; every eviction is counted.

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::key::{Endpoint, FlowKey};
use super::recent::Recent;
use super::state::{Connection, EndReason, Flow, FlowRecord, FlowView, PacketOutcome};
use crate::decode::TcpSegment;
use crate::Nanos;

const SECOND: Nanos = 1_000_000_000;
/// How long an attempt reset by its client is kept for the SYN it retransmits (Linux retries
/// after 1, 3 and 7 s): see [`Flow::awaits_retry`].
pub const RETRY_LINGER: Nanos = 10 * SECOND;
/// Endpoints remembered as servers (they answered a SYN), to tell mid-stream clients apart: it
/// only guides a guess.
const KNOWN_SERVERS: usize = 16_384;
/// Views of one connection (pre/post NAT, another capture) carry the client's ISN and port and
/// meet within this much capture time.
pub const VIEW_WINDOW: Nanos = 2 * SECOND;
/// Client SYNs (or first segments) remembered to join views by.
const VIEW_INDEX: usize = 16_384;
/// Slots of the recently-closed cache (a hash per slot): a data segment of a connection that
/// closed moments ago (a retransmitted FIN with data) opens no new flow.
const CLOSED_SLOTS: usize = 4096;
/// Connections tracked at once by default: a slab of ~11.6 MB (232 bytes a flow with its key),
/// ~0.6 MB of last-seen times and generations, and an index of ~0.5 MB.
pub const DEFAULT_MAX_FLOWS: usize = 50_000;
// Under eviction churn hashbrown doubles a table whose live entries exceed half its capacity
// (tombstones use up the room), so an index bounded to N flows can reach ~2N slots: 5 bytes
// each, the flows themselves stay in the slab, which holds the bound exactly (a 1M-SYN flood
// peaks at ~38 MiB RSS). Both start small so that a table of few flows stays cache-resident.

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
    /// Packets of no open connection that open none: without payload and without SYN (last
    /// ACKs, a capture starting mid-connection), or with data after their connection closed.
    pub orphan_packets: u64,
    /// Flows that were another view of a connection already tracked (joined, not counted).
    pub views_joined: u64,
}

/// What the table hands out: each flow yields one [`Connection`] and one [`FlowRecord`].
#[derive(Debug, Default)]
pub struct Outputs {
    pub connections: Vec<Connection>,
    pub finished: Vec<FlowRecord>,
}

/// Flows by key, bounded: the flows live in a slab (`slots`, a position each; a free position
/// is reused, the free ones chained through `seen`); `index` maps a key's hash to its position (a bare `u32` per entry, compared through
/// the slab), and `seen` mirrors each position's last packet time. A flood of new flows touches
/// a small index (5 bytes a slot: cache-resident where a map of whole flows was 26 MB at the
/// default bound), eviction scans the dense `seen` instead of every flow, and the flows it
/// retires lie side by side in the slab, in the order they came.
#[derive(Debug)]
pub struct FlowTable {
    index: HashTable<u32>,
    hasher: RandomState,
    slots: Vec<Option<Slot>>,
    /// Last packet time by position; at a free one, [`FREE`] and the next free position (the
    /// free list costs no memory of its own).
    seen: Vec<Nanos>,
    /// How many flows each position has held: with the position, names one flow for the side
    /// index of views.
    generations: Vec<u32>,
    /// The free position handed out next ([`NO_NEXT`]: none).
    free_head: u32,
    limits: TableLimits,
    next_sweep: Nanos,
    stats: TableStats,
    scratch: Vec<u8>,
    /// Endpoints that answered a SYN (touched by SYN-ACKs only, never on the classified path).
    servers: Recent<Endpoint, ()>,
    /// Recently closed keys.
    closed: Recent<FlowKey, ()>,
    /// Client SYNs (or mid-stream first segments) by (sequence number, client port): the first
    /// view's flow (its position and generation there) and time (touched by new flows only; 24
    /// bytes a slot, so that the index stays in cache under a churn of connections).
    views: Recent<(u32, u16), (FlowRef, Nanos)>,
}

/// One flow of the table: its position and that position's generation when it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowRef {
    at: u32,
    generation: u32,
}

impl FlowRef {
    /// A flow never placed (no position is this far out).
    const NONE: FlowRef = FlowRef {
        at: u32::MAX,
        generation: 0,
    };
}

/// A flow and its key, at its position in the slab.
#[derive(Debug)]
struct Slot {
    key: FlowKey,
    flow: Flow,
}

/// The mark of a free position in `seen`, the next free position in its low bits; a flow's
/// time stays below it.
const FREE: Nanos = 1 << 63;
/// The end of the chain of free positions.
const NO_NEXT: u32 = u32::MAX;
/// Positions a table may have: below [`NO_NEXT`], and below [`FlowRef::NONE`]'s.
const MAX_POSITIONS: usize = u32::MAX as usize - 1;

/// Bytes a tracked flow costs the table: its slot (key and state), its last-seen time (which,
/// at a free position, chains the free list) and generation, and its index entry (a `u32` and a control byte) at the two index slots per flow
/// the index settles at under eviction churn.
#[cfg(test)]
pub(super) const BYTES_PER_FLOW: usize = std::mem::size_of::<Option<Slot>>()
    + std::mem::size_of::<Nanos>()
    + std::mem::size_of::<u32>()
    + 2 * (std::mem::size_of::<u32>() + 1);

/// A flow's time in `seen`: its last packet's, short of [`FREE`] (a timestamp that large —
/// the year 2262, from a hostile capture — must not hide a flow from eviction).
fn seen_time(flow: &Flow) -> Nanos {
    flow.last_seen().min(FREE - 1)
}

/// The index's hash of a key: two words for IPv4 ([`FlowKey::hash_compact`]).
fn hash_key(hasher: &RandomState, key: &FlowKey) -> u64 {
    let mut h = hasher.build_hasher();
    key.hash_compact(&mut h);
    h.finish()
}

/// The index's hash of the flow at position `i` (the index rehashes its entries through it
/// when it grows; a free position, never indexed, hashes to 0).
fn hash_at(slots: &[Option<Slot>], hasher: &RandomState, i: u32) -> u64 {
    slots
        .get(i as usize)
        .and_then(Option::as_ref)
        .map_or(0, |s| hash_key(hasher, &s.key))
}

impl FlowTable {
    pub fn new(mut limits: TableLimits) -> Self {
        limits.max_flows = limits.max_flows.min(MAX_POSITIONS);
        FlowTable {
            index: HashTable::with_capacity(1024),
            hasher: RandomState::default(),
            slots: Vec::new(),
            seen: Vec::new(),
            generations: Vec::new(),
            free_head: NO_NEXT,
            limits,
            next_sweep: 0,
            stats: TableStats::default(),
            scratch: Vec::new(),
            servers: Recent::new(KNOWN_SERVERS, 0x7365_7276),
            closed: Recent::new(CLOSED_SLOTS, 0x636c_6f73),
            views: Recent::new(VIEW_INDEX, 0x7669_6577),
        }
    }

    /// The position of `key`'s flow.
    #[cfg(test)]
    fn find(&self, key: &FlowKey) -> Option<usize> {
        self.find_hashed(hash_key(&self.hasher, key), key)
    }

    /// The position of `key`'s flow, `hash` being its [`hash_key`] (a packet's key is hashed
    /// once, for the lookup and, when new, the insertion).
    fn find_hashed(&self, hash: u64, key: &FlowKey) -> Option<usize> {
        let slots = &self.slots;
        let at = self.index.find(
            hash,
            |&i| matches!(slots.get(i as usize), Some(Some(s)) if s.key == *key),
        )?;
        Some(*at as usize)
    }

    /// Put a new flow in the table (its key, of [`hash_key`] `hash`, is not there).
    fn insert(&mut self, key: FlowKey, hash: u64, flow: Flow) -> FlowRef {
        let seen = seen_time(&flow);
        let slot = Some(Slot { key, flow });
        let head = self.free_head as usize;
        let at = match (self.slots.get_mut(head), self.seen.get_mut(head)) {
            (Some(s), Some(t)) => {
                self.free_head = (*t & !FREE) as u32;
                *s = slot;
                *t = seen;
                head as u32
            }
            _ => {
                // below the bound, itself below `MAX_POSITIONS`
                let at = u32::try_from(self.slots.len()).unwrap_or(NO_NEXT - 1);
                self.slots.push(slot);
                self.seen.push(seen);
                self.generations.push(0);
                at
            }
        };
        let generation = match self.generations.get_mut(at as usize) {
            Some(g) => {
                *g = g.wrapping_add(1);
                *g
            }
            None => 0,
        };
        let FlowTable {
            index,
            hasher,
            slots,
            ..
        } = self;
        index.insert_unique(hash, at, |&i| hash_at(slots, hasher, i));
        FlowRef { at, generation }
    }

    /// The flow `r` names, while it is in the table.
    fn flow_of(&mut self, r: FlowRef) -> Option<&mut Slot> {
        let at = r.at as usize;
        if self.generations.get(at) != Some(&r.generation) {
            return None;
        }
        self.slots.get_mut(at)?.as_mut()
    }

    /// Free the position `at` (its flow already finished, or never to be).
    fn vacate(&mut self, at: usize, key: &FlowKey) {
        if let Some(s) = self.slots.get_mut(at) {
            *s = None;
        }
        if let Some(t) = self.seen.get_mut(at) {
            *t = FREE | Nanos::from(self.free_head);
            self.free_head = at as u32;
        }
        if let Ok(entry) = self
            .index
            .find_entry(hash_key(&self.hasher, key), |&i| i as usize == at)
        {
            entry.remove();
        }
    }

    /// Join a new client SYN to the connection it is another view of: the same ISN and client
    /// port within [`VIEW_WINDOW`] on another key whose flow is still open (DNAT keeps both;
    /// SNAT keeps the ISN and, as Linux does unless the port is taken, the port). The new flow
    /// becomes a view; the first one learns where this view went. Otherwise the id under which
    /// later views will find this flow, remembered once it has its place in the table.
    ///
    /// A connection seen mid-stream (its SYN before the capture) joins by sequence space: the
    /// first segment a view sees is the same segment in the other view, with the same sequence
    /// number and the same client port.
    fn join_views(
        &mut self,
        key: FlowKey,
        seg: &TcpSegment<'_>,
        now: Nanos,
        flow: &mut Flow,
    ) -> Option<(u32, u16)> {
        let id = if seg.flags.syn() && !seg.flags.ack() {
            (seg.seq, seg.sport)
        } else if !seg.flags.syn() && !seg.payload.is_empty() {
            (seg.seq, flow.client_port(&key))
        } else {
            return None;
        };
        if let Some((first, at)) = self.views.get(&id) {
            if now.saturating_sub(at) <= VIEW_WINDOW {
                if let Some(first) = self.flow_of(first).filter(|s| s.key != key) {
                    first.flow.add_view(FlowView {
                        src: seg.src,
                        sport: seg.sport,
                        dst: seg.dst,
                        dport: seg.dport,
                    });
                    flow.mark_view();
                    self.stats.views_joined += 1;
                    return None;
                }
            }
        }
        Some(id)
    }

    fn remember_server(&mut self, seg: &TcpSegment<'_>) {
        if seg.flags.syn() && seg.flags.ack() {
            self.servers.insert((seg.src, seg.sport), ());
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Flows the index can hold before it grows, and positions the slab holds before it grows.
    #[cfg(test)]
    pub fn capacity(&self) -> (usize, usize) {
        (self.index.capacity(), self.slots.capacity())
    }

    /// The slab, the index, `seen`, the generations and the free list agree: every filled
    /// position is found by its key, and only those; every free one is listed once.
    #[cfg(test)]
    pub fn assert_consistent(&self) {
        let filled: Vec<usize> = self.flows().map(|(at, _)| at).collect();
        assert_eq!(
            self.index.len(),
            filled.len(),
            "index entries vs filled slots"
        );
        for (at, s) in self.flows() {
            assert_eq!(
                self.find(&s.key),
                Some(at),
                "a filled slot is found by its key"
            );
            assert_eq!(
                self.seen.get(at),
                Some(&seen_time(&s.flow)),
                "seen mirrors the flow"
            );
        }
        // the chain of free positions, walked at most once round the slab
        let mut free = Vec::new();
        let mut next = self.free_head;
        while next != NO_NEXT && free.len() <= self.slots.len() {
            free.push(next);
            let t = self.seen.get(next as usize).copied().unwrap_or(0);
            assert!(t >= FREE, "a chained position is marked free");
            next = (t & !FREE) as u32;
        }
        free.sort_unstable();
        let vacant: Vec<u32> = (0..self.slots.len())
            .filter(|&at| self.slots.get(at).is_some_and(Option::is_none))
            .map(|at| at as u32)
            .collect();
        assert_eq!(
            free, vacant,
            "the free list is exactly the vacant positions, once each"
        );
        assert_eq!(self.seen.len(), self.slots.len());
        assert_eq!(self.generations.len(), self.slots.len());
        assert!(
            self.slots.len() <= self.limits.max_flows.max(1),
            "the slab holds the bound"
        );
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn flows(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(at, s)| Some((at, s.as_ref()?)))
    }

    /// Heap bytes held for client prefaces across the table.
    pub fn preface_bytes(&self) -> usize {
        self.flows().map(|(_, s)| s.flow.preface_bytes()).sum()
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
        let hash = hash_key(&self.hasher, &key);
        if let Some(at) = self.find_hashed(hash, &key) {
            let (Some(Some(Slot { flow, .. })), Some(seen)) =
                (self.slots.get_mut(at), self.seen.get_mut(at))
            else {
                return PacketOutcome::default(); // the index names only filled positions
            };
            if !flow.is_reused_by(dir, seg) {
                let outcome = flow.on_packet(dir, seg, now, &mut self.scratch);
                *seen = seen_time(flow);
                self.stats.duplicates += u64::from(outcome.duplicate);
                self.stats.reassembly_gave_up += u64::from(outcome.reassembly_gave_up);
                if outcome.classified {
                    done.connections.extend(flow.announce(&key, now));
                }
                let close = flow.close_reason().filter(|_| !flow.awaits_retry());
                if seg.flags.syn() {
                    self.remember_server(seg);
                }
                if let Some(reason) = close {
                    self.finish(at, reason, done);
                }
                return outcome;
            }
            self.stats.reused += 1;
            self.finish(at, EndReason::Reused, done);
        }
        if !seg.flags.syn() {
            // An ACK, FIN or RST of a connection we never saw (or already finished) says
            // nothing about security and would only make an empty, unknown flow; data right
            // after its connection closed (a retransmitted FIN with data) is no new connection.
            if seg.payload.is_empty() || self.closed.get(&key).is_some() {
                self.stats.orphan_packets += 1;
                return PacketOutcome::default();
            }
        }
        if self.len() >= self.limits.max_flows {
            self.evict_oldest(done);
        }
        self.remember_server(seg);
        let servers = &self.servers;
        let mut flow = Flow::start(key, dir, seg, now, |e| servers.get(&e).is_some());
        let view_id = self.join_views(key, seg, now, &mut flow);
        let outcome = flow.on_packet(dir, seg, now, &mut self.scratch);
        self.stats.reassembly_gave_up += u64::from(outcome.reassembly_gave_up);
        if outcome.classified {
            done.connections.extend(flow.announce(&key, now));
        }
        self.stats.flows_started += 1;
        if let Some(reason) = flow.close_reason().filter(|_| !flow.awaits_retry()) {
            // a lone RST (or SYN+RST): nothing more will come; a later view finds no flow of it
            if let Some(id) = view_id {
                self.views.insert(id, (FlowRef::NONE, now));
            }
            retire(&key, &mut flow, reason, &mut self.scratch, done);
            self.end(&key, reason);
            return outcome;
        }
        if self.len() == self.limits.max_flows / 4 {
            // Given its final size now, while small: under eviction churn at the bound the index
            // settles at ~2x the bound in slots, and growing there later holds the old and the
            // new one at once (a 1M-SYN flood's peak memory); the slab holds the bound. Below a
            // quarter of the bound (a churn of short connections) both stay small and
            // cache-resident.
            let room = self.limits.max_flows.saturating_mul(2);
            let FlowTable {
                index,
                hasher,
                slots,
                ..
            } = self;
            index.reserve(room.saturating_sub(index.len()), |&i| {
                hash_at(slots, hasher, i)
            });
            let more = self.limits.max_flows.saturating_sub(self.slots.len());
            self.slots.reserve_exact(more);
            self.seen.reserve_exact(more);
        }
        let placed = self.insert(key, hash, flow);
        if let Some(id) = view_id {
            self.views.insert(id, (placed, now));
        }
        self.stats.peak_flows = self.stats.peak_flows.max(self.len() as u64);
        outcome
    }

    /// Finish idle flows, and attempts whose retry did not come.
    pub fn sweep(&mut self, now: Nanos, done: &mut Outputs) {
        // connections first seen mid-stream are announced once their other views had time to
        // join (see `Flow::announce`)
        for Slot { key, flow } in self.slots.iter_mut().flatten() {
            if flow.announce_due(now, VIEW_WINDOW) {
                done.connections.extend(flow.announce_now(key, now));
            }
        }
        let idle = self.limits.idle_timeout;
        let expired: Vec<(usize, EndReason)> = self
            .flows()
            .filter_map(|(at, Slot { flow, .. })| {
                let quiet = now.saturating_sub(flow.last_seen());
                if flow.awaits_retry() && quiet >= RETRY_LINGER.min(idle) {
                    Some((at, EndReason::Rst))
                } else {
                    (quiet >= idle).then_some((at, EndReason::Idle))
                }
            })
            .collect();
        for (at, reason) in expired {
            self.finish(at, reason, done);
        }
    }

    /// Finish every flow (end of the capture): all still open (and attempts still waiting for
    /// their retry, as the reset ended them).
    pub fn drain(&mut self, done: &mut Outputs) {
        for at in 0..self.slots.len() {
            let reason = match self.slots.get(at) {
                Some(Some(s)) => s.flow.close_reason().unwrap_or(EndReason::CaptureEnd),
                _ => continue,
            };
            self.finish(at, reason, done);
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

    /// The flow at `at` leaves, finished where it lies (not moved out first: a flow is a few
    /// cache lines, and under churn every one of them leaves).
    fn finish(&mut self, at: usize, reason: EndReason, done: &mut Outputs) {
        let Some(Some(Slot { key, flow })) = self.slots.get_mut(at) else {
            return;
        };
        let key = *key;
        retire(&key, flow, reason, &mut self.scratch, done);
        self.end(&key, reason);
        self.vacate(at, &key);
    }

    /// Count how a flow ended; remember a closed one's key.
    fn end(&mut self, key: &FlowKey, reason: EndReason) {
        self.count_end(reason);
        if matches!(reason, EndReason::Fin | EndReason::Rst) {
            self.closed.insert(*key, ());
        }
    }

    /// At the bound: finish the least recently seen eighth of the table, so eviction costs O(n)
    /// once per n/8 new flows rather than per flow. The victims are retired in slab order, the
    /// highest position first, so that the new flows after an eviction fill the freed positions
    /// from the lowest up: under a flood each eviction walks one run of the slab.
    fn evict_oldest(&mut self, done: &mut Outputs) {
        let n = (self.len() / 8).max(1);
        let slots = &self.slots;
        let key_at = |at: usize| slots.get(at).and_then(Option::as_ref).map(|s| s.key);
        let mut victims = oldest(&self.seen, n, key_at);
        victims.sort_unstable_by(|a, b| b.cmp(a));
        for at in victims {
            self.finish(at, EndReason::Evicted, done);
        }
    }
}

/// A flow leaves: its final record, and its connection event if it was never classified.
fn retire(
    key: &FlowKey,
    flow: &mut Flow,
    reason: EndReason,
    scratch: &mut Vec<u8>,
    done: &mut Outputs,
) {
    let announced = flow.announced();
    let record = flow.finish(key, reason, scratch);
    if !announced {
        done.connections.push(Connection::from(&record));
    }
    done.finished.push(record);
}

/// The positions of the `n` least recently seen flows, ties broken by key: the `n` smallest
/// `(last seen, key)` pairs among the filled positions of `seen` (a time from [`FREE`] up marks
/// a free one).
/// The n-th smallest time is selected among bare times (8 bytes each, cheap to compare;
/// selecting among whole pairs cost a 1M-SYN flood a third of its time); every flow seen before
/// it goes, and the smallest keys (`key_at`) of those seen at it fill up to `n`. Keys are read
/// only at the cut. PURE.
pub(super) fn oldest(
    seen: &[Nanos],
    n: usize,
    key_at: impl Fn(usize) -> Option<FlowKey>,
) -> Vec<usize> {
    let mut times: Vec<Nanos> = seen.iter().copied().filter(|&t| t < FREE).collect();
    if n == 0 || times.is_empty() {
        return Vec::new();
    }
    let at = n.min(times.len()) - 1;
    let (_, &mut cut, _) = times.select_nth_unstable(at);
    let mut victims = Vec::with_capacity(n);
    let mut at_cut = Vec::new();
    for (pos, &t) in seen.iter().enumerate() {
        if t < cut {
            victims.push(pos);
        } else if t == cut {
            at_cut.extend(key_at(pos).map(|k| (k, pos)));
        }
    }
    at_cut.sort_unstable();
    let room = n.saturating_sub(victims.len());
    victims.extend(at_cut.into_iter().take(room).map(|(_, pos)| pos));
    victims
}
