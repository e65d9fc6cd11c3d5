//! A map bounded in entries and in time: each entry expires `ttl` after it was inserted, and at
//! the bound the oldest insertion goes first (FIFO: an entry is never refreshed by a hit, so a
//! decision is never older than its TTL). Time is a parameter, so the tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Entries expire `ttl` after insertion; at most `capacity` are kept.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    capacity: usize,
    ttl: Duration,
    map: HashMap<K, Slot<V>>,
    /// Insertion order; an entry whose sequence number no longer matches the map's is stale
    /// (the key was inserted again, or removed) and is skipped.
    order: VecDeque<(K, u64)>,
    seq: u64,
}

#[derive(Debug)]
struct Slot<V> {
    expires: Instant,
    seq: u64,
    value: V,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries (at least one), each valid for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        TtlCache {
            capacity: capacity.max(1),
            ttl,
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
        }
    }

    /// The value of a live entry; an expired one is removed.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.map.get(key) {
            Some(slot) if slot.expires > now => Some(slot.value.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Insert (or replace) an entry, valid from `now` for the cache's TTL; the oldest entries
    /// go when the cache is full.
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.map.insert(
            key.clone(),
            Slot {
                expires: now + self.ttl,
                seq,
                value,
            },
        );
        self.order.push_back((key, seq));
        while self.map.len() > self.capacity {
            let Some((old, old_seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|s| s.seq == old_seq) {
                self.map.remove(&old);
            }
        }
        // keys inserted again leave stale order entries: keep the queue within twice the bound
        if self.order.len() > self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|slot| slot.seq == *s));
        }
    }

    /// Entries held (expired ones included until they are looked up or pushed out).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Length of the insertion queue (at most twice the capacity; for the bound's test).
    pub fn queue_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_ttl() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(4, Duration::from_secs(10));
        c.insert("a", 1, t0);
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(10)), None);
        assert!(c.is_empty(), "an expired entry is removed when looked up");
    }

    #[test]
    fn the_oldest_insertion_goes_at_the_bound() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(3, Duration::from_secs(60));
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            c.insert(k, i, t0);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&"a", t0), None);
        assert_eq!(c.get(&"d", t0), Some(3));
        // a hit does not refresh: "b" is still the oldest
        assert_eq!(c.get(&"b", t0), Some(1));
        c.insert("e", 4, t0);
        assert_eq!(c.get(&"b", t0), None);
        assert_eq!(c.get(&"c", t0), Some(2));
    }

    #[test]
    fn a_flood_of_distinct_keys_and_of_one_key_stays_within_the_bound() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(100, Duration::from_secs(60));
        for i in 0..100_000u32 {
            c.insert(i, (), t0);
            assert!(c.len() <= 100 && c.queue_len() <= 200);
        }
        for _ in 0..100_000u32 {
            c.insert(7, (), t0);
            assert!(c.len() <= 100 && c.queue_len() <= 200);
        }
        assert_eq!(c.get(&7, t0), Some(()));
    }

    #[test]
    fn a_key_inserted_again_is_not_evicted_by_its_old_position() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(2, Duration::from_secs(60));
        c.insert("a", 1, t0);
        c.insert("b", 2, t0);
        c.insert("a", 3, t0); // "a" is now newer than "b"
        c.insert("c", 4, t0); // pushes out "b", not "a"
        assert_eq!(c.get(&"a", t0), Some(3));
        assert_eq!(c.get(&"b", t0), None);
        assert_eq!(c.get(&"c", t0), Some(4));
    }
}
