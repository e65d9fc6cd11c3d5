//! A fixed-size, direct-mapped memory of recent keys, for the flow table's side indexes (servers
//! seen, client SYNs, closed connections): allocated once, an insert overwrites its slot, and a
//! lookup compares the whole key, so a collision can only make it forget, never invent. No
//! growth, no rehash, no allocation after creation: the cost per new connection stays flat.

use std::hash::{BuildHasher, Hash};

use foldhash::fast::FixedState;

/// Recent `K -> V`, at most one per slot.
#[derive(Debug)]
pub struct Recent<K, V> {
    slots: Box<[Option<(K, V)>]>,
    hasher: FixedState,
}

impl<K: Hash + Eq + Copy, V: Copy> Recent<K, V> {
    /// A memory of `slots` slots, rounded up to a power of two (at least one).
    pub fn new(slots: usize, seed: u64) -> Self {
        Recent {
            slots: vec![None; slots.max(1).next_power_of_two()].into_boxed_slice(),
            hasher: FixedState::with_seed(seed),
        }
    }

    /// A mask, not a division: the same slot as `hash % len` for a power of two.
    fn slot(&self, key: &K) -> usize {
        self.hasher.hash_one(key) as usize & (self.slots.len() - 1)
    }

    /// Remember `key` (whatever held its slot is forgotten).
    pub fn insert(&mut self, key: K, value: V) {
        let at = self.slot(&key);
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Some((key, value));
        }
    }

    /// What `key` was remembered with, if it still is.
    pub fn get(&self, key: &K) -> Option<V> {
        match self.slots.get(self.slot(key)) {
            Some(Some((k, v))) if k == key => Some(*v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_on_collision_never_invents() {
        let mut r: Recent<u32, u8> = Recent::new(8, 1);
        for k in 0..1000u32 {
            r.insert(k, (k % 251) as u8);
            assert_eq!(r.get(&k), Some((k % 251) as u8));
        }
        // at most 8 remembered, each with its own value
        let kept: Vec<u32> = (0..1000).filter(|k| r.get(k).is_some()).collect();
        assert!(!kept.is_empty() && kept.len() <= 8);
        assert!(kept.iter().all(|k| r.get(k) == Some((k % 251) as u8)));
        assert_eq!(r.get(&5000), None);
    }
}
