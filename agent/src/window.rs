//! Edges over a sliding time window, for the agent: counts are kept in time buckets per edge so
//! `--window 24h` verdicts and last-seen work, and a source that stopped sending plaintext longer
//! than the window ago no longer blocks. No I/O and no clock (time is a parameter); it is the
//! shared, sharded state of the agent, not a pure function.
//!
//! The store is shared by the capture thread (one write per flow event) and the API (snapshots):
//! a `DashMap` shards it, so a write locks one shard for a few adds and a snapshot locks each
//! shard only while it copies that shard's sums — a reader never holds what the capture thread
//! needs while it sorts or serializes.

use std::collections::VecDeque;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::aggregate::{fold_when_full, Edge, EdgeKey, EdgeStats, Peer, MAX_EDGES, OTHER_PORTS};
use crate::Nanos;

/// Buckets per window: the window's resolution is 1/60th of it (24 min for 24 h).
const BUCKETS_PER_WINDOW: u64 = 60;
const MIN_BUCKET: Nanos = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Nanos,
    stats: EdgeStats,
}

/// An edge key with its hash, computed once: the store is keyed by it, so an edge's names are
/// hashed when the capture thread first describes it, not at every flow event (hashing the
/// names was half of what counting a finished flow cost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedKey {
    // first: equality looks at the hash before the names
    hash: u64,
    key: EdgeKey,
}

/// The hasher of [`HashedKey`]s: seeded at random once per process, since a key holds
/// addresses taken from packets (an unknown client is named by its address) and a seed known
/// in advance would let a sender pick addresses that collide.
static KEY_HASHER: OnceLock<foldhash::fast::RandomState> = OnceLock::new();

impl HashedKey {
    pub fn new(key: EdgeKey) -> Self {
        HashedKey {
            hash: KEY_HASHER.get_or_init(Default::default).hash_one(&key),
            key,
        }
    }

    pub fn key(&self) -> &EdgeKey {
        &self.key
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }
}

impl Hash for HashedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands a [`HashedKey`]'s hash through.
#[derive(Debug, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // only `write_u64` is used by `HashedKey`; anything else still hashes to something
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Edges with their recent history.
#[derive(Debug)]
pub struct WindowedEdges {
    window: Nanos,
    bucket: Nanos,
    edges: DashMap<HashedKey, VecDeque<Bucket>, BuildHasherDefault<KeyHasher>>,
    /// How many edges `edges` holds, counted as they come and go (each under its shard's lock):
    /// `DashMap::len` would lock every shard on every add.
    count: AtomicUsize,
    /// No bucket starts before this (`u64::MAX`: none kept): [`WindowedEdges::prune`] sweeps
    /// the store only when a bucket may have left the window, not every time it is asked.
    earliest: AtomicU64,
}

impl WindowedEdges {
    pub fn new(window: Nanos) -> Self {
        let window = window.max(MIN_BUCKET);
        WindowedEdges {
            window,
            bucket: (window / BUCKETS_PER_WINDOW).max(MIN_BUCKET),
            edges: DashMap::default(),
            count: AtomicUsize::new(0),
            earliest: AtomicU64::new(u64::MAX),
        }
    }

    pub fn window(&self) -> Nanos {
        self.window
    }

    /// Add `delta` to an edge at time `ts` (new connections or attempts, traffic). Bounded by
    /// [`fold_when_full`].
    pub fn add(&self, key: &HashedKey, ts: Nanos, delta: EdgeStats) {
        let edges = &self.edges;
        let count = self.count.load(Ordering::Relaxed);
        // the key is copied only to be folded (a full store), or when it is new
        let mut folded = None;
        if count >= MAX_EDGES && !edges.contains_key(key) {
            let mut k = key.key.clone();
            fold_when_full(
                &mut k,
                count,
                |k| edges.contains_key(&HashedKey::new(k.clone())),
                |k| k.source = Peer::other_sources(),
                |k| {
                    k.destination = Peer::other_destinations();
                    k.port = OTHER_PORTS;
                },
            );
            folded = Some(HashedKey::new(k));
        }
        let key = folded.as_ref().unwrap_or(key);
        let start = ts - ts % self.bucket;
        // a plain load first: events come in time order, so the minimum rarely moves
        if start < self.earliest.load(Ordering::Relaxed) {
            self.earliest.fetch_min(start, Ordering::Relaxed);
        }
        let mut buckets = match self.edges.get_mut(key) {
            Some(b) => b,
            None => match self.edges.entry(key.clone()) {
                Entry::Occupied(e) => e.into_ref(),
                Entry::Vacant(e) => {
                    self.count.fetch_add(1, Ordering::Relaxed);
                    e.insert(VecDeque::new())
                }
            },
        };
        let bucket = match buckets.iter_mut().rev().find(|b| b.start == start) {
            Some(b) => b,
            None => {
                // keep buckets ordered by start; late events land in their own bucket
                let at = buckets.partition_point(|b| b.start < start);
                buckets.insert(
                    at,
                    Bucket {
                        start,
                        stats: EdgeStats::default(),
                    },
                );
                &mut buckets[at]
            }
        };
        bucket.stats.merge(&EdgeStats {
            first_seen: ts,
            last_seen: ts,
            ..delta
        });
    }

    /// Drop buckets that ended before the window and edges left empty. The agent asks once a
    /// second; the store is swept only when its earliest bucket has ended before the window
    /// (once a bucket width, 1/60th of the window), since an edge is left empty only by a sweep.
    pub fn prune(&self, now: Nanos) {
        let horizon = now.saturating_sub(self.window);
        let bucket = self.bucket;
        if self.earliest.load(Ordering::Relaxed).saturating_add(bucket) > horizon {
            return;
        }
        // the sweep finds the new earliest (an add meanwhile lowers it on its own)
        self.earliest.store(u64::MAX, Ordering::Relaxed);
        self.edges.retain(|_, buckets| {
            while buckets.front().is_some_and(|b| b.start + bucket <= horizon) {
                buckets.pop_front();
            }
            match buckets.front() {
                Some(b) => {
                    self.earliest.fetch_min(b.start, Ordering::Relaxed);
                    true
                }
                None => {
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    false
                }
            }
        });
    }

    /// The edges of the window ending at `now`, sorted like [`crate::aggregate::Edges`].
    pub fn snapshot(&self, now: Nanos) -> Vec<Edge> {
        let horizon = now.saturating_sub(self.window);
        let mut out: Vec<(EdgeKey, EdgeStats)> = self
            .edges
            .iter()
            .filter_map(|entry| {
                let mut sum = EdgeStats::default();
                for b in entry.value().iter().filter(|b| b.stats.last_seen > horizon) {
                    sum.merge(&b.stats);
                }
                (sum.connections + sum.attempts > 0).then(|| (entry.key().key.clone(), sum))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(k, stats)| k.edge(stats)).collect()
    }

    /// How many edges are kept (with or without counts in the window).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Mesh, Security};

    const S: Nanos = 1_000_000_000;

    fn delta(connections: u64, packets: u64, bytes: u64) -> EdgeStats {
        EdgeStats {
            connections,
            packets,
            bytes,
            ..EdgeStats::default()
        }
    }

    fn hashed(sec: Security) -> HashedKey {
        HashedKey::new(key(sec))
    }

    fn key(sec: Security) -> EdgeKey {
        let p = |w: &str| Peer {
            namespace: Some("ns".into()),
            workload: Some(w.into()),
            ..Peer::default()
        };
        EdgeKey {
            destination: p("httpbin"),
            port: 8000,
            source: p("sleep"),
            security: sec,
            mesh: Mesh::None,
            origin: crate::aggregate::Origin::Direct,
        }
    }

    #[test]
    fn old_plaintext_leaves_the_window() {
        let w = WindowedEdges::new(60 * S);
        w.add(&hashed(Security::Plaintext), 100 * S, delta(3, 30, 300));
        w.add(&hashed(Security::IstioMtls), 150 * S, delta(6, 60, 600));
        let snap = w.snapshot(155 * S);
        assert_eq!(snap.len(), 2);
        let plain = snap
            .iter()
            .find(|e| e.security == Security::Plaintext)
            .expect("plaintext edge");
        assert_eq!(
            (plain.stats.connections, plain.stats.last_seen),
            (3, 100 * S)
        );
        let later = w.snapshot(170 * S);
        assert_eq!(
            later.len(),
            1,
            "plaintext from 70 s ago is outside a 60 s window"
        );
        assert_eq!(later[0].security, Security::IstioMtls);
        w.prune(170 * S);
        assert_eq!(w.len(), 1);
        w.prune(1000 * S);
        assert!(w.is_empty());
    }

    #[test]
    fn the_edge_count_follows_adds_and_prunes() {
        let w = WindowedEdges::new(60 * S);
        let mut k = key(Security::Plaintext);
        for port in 0..100u16 {
            k.port = port;
            let k = HashedKey::new(k.clone());
            w.add(&k, (100 + u64::from(port)) * S, delta(1, 1, 1));
            w.add(&k, (100 + u64::from(port)) * S, delta(1, 1, 1));
        }
        assert_eq!((w.len(), w.edges.len()), (100, 100));
        // buckets are a second wide: ports 0..=49 were last seen more than 60 s before 210 s
        w.prune(210 * S);
        assert_eq!((w.len(), w.edges.len()), (50, 50));
        w.prune(1000 * S);
        assert_eq!((w.len(), w.edges.len()), (0, 0));
        assert!(w.is_empty());
    }

    /// Pruning skips the sweep while no bucket can have left the window, and still drops what a
    /// sweep would: also a late event whose bucket was out of the window when it came.
    #[test]
    fn a_late_event_already_out_of_the_window_is_pruned_too() {
        let w = WindowedEdges::new(60 * S);
        let (a, b) = (hashed(Security::IstioMtls), hashed(Security::Plaintext));
        w.add(&a, 200 * S, delta(1, 1, 1));
        w.prune(210 * S);
        assert_eq!(w.len(), 1);
        // 10 s: 140 s before the horizon when it arrives
        w.add(&b, 10 * S, delta(1, 1, 1));
        w.add(&a, 205 * S, delta(1, 1, 1));
        assert_eq!(w.len(), 2);
        w.prune(211 * S);
        assert_eq!((w.len(), w.edges.len()), (1, 1), "the late edge goes");
        w.prune(262 * S);
        assert_eq!(w.len(), 1, "200 s and 205 s are within 60 s of 262 s");
        w.prune(266 * S);
        assert!(w.is_empty(), "205 s ended before 206 s");
        // and it fills again
        w.add(&hashed(Security::Tls), 300 * S, delta(1, 1, 1));
        w.prune(361 * S);
        assert!(w.is_empty());
    }

    #[test]
    fn late_and_repeated_events_sum_in_order() {
        let w = WindowedEdges::new(3600 * S);
        w.add(&hashed(Security::IstioMtls), 1000 * S, delta(1, 0, 0));
        w.add(&hashed(Security::IstioMtls), 500 * S, delta(1, 0, 0));
        w.add(&hashed(Security::IstioMtls), 1000 * S, delta(0, 10, 1000));
        let snap = w.snapshot(1001 * S);
        assert_eq!(snap[0].stats.connections, 2);
        assert_eq!(
            (snap[0].stats.first_seen, snap[0].stats.last_seen),
            (500 * S, 1000 * S)
        );
        assert_eq!(snap[0].stats.bytes, 1000);
    }
}
