//! A map with a hard cap on its number of entries, for bookkeeping that clients can grow
//! (brute-force counters, the password cache, the stripped-header detector).
//!
//! Callers key it by fixed-size digests, never by client strings, so its memory is
//! `capacity` times a small constant whatever clients send. Inserting into a full map evicts
//! one entry by the CLOCK ("second chance") rule: entries leave in insertion order, except that
//! an entry read or written since it last came round is kept once more. Every operation is
//! O(1) amortised (each second chance is paid for by the access that earned it); nothing ever
//! walks the whole map.
//!
//! The price of the bound: more than `capacity` distinct keys in a short time push out idle
//! entries, which then start over. Entries are never expired here; callers treat a stale value
//! as absent.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

struct Slot<V> {
    value: V,
    /// Accessed since the clock hand last passed it.
    referenced: bool,
}

pub struct BoundedMap<K, V> {
    slots: HashMap<K, Slot<V>>,
    /// Every key of `slots` exactly once, oldest (next to be considered for eviction) first.
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, V> BoundedMap<K, V> {
    /// A map that never holds more than `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> BoundedMap<K, V> {
        BoundedMap {
            slots: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.get_mut(key).map(|v| &*v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let slot = self.slots.get_mut(key)?;
        slot.referenced = true;
        Some(&mut slot.value)
    }

    /// The entry for `key`, made with `make` (evicting one entry if the map is full). A new
    /// entry has not earned a second chance yet; an existing one has.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if self.slots.contains_key(&key) {
            let slot = self.slots.get_mut(&key).expect("present");
            slot.referenced = true;
            return &mut slot.value;
        }
        while self.slots.len() >= self.capacity {
            self.evict_one();
        }
        self.slots.insert(
            key,
            Slot {
                value: make(),
                referenced: false,
            },
        );
        self.order.push_back(key);
        &mut self.slots.get_mut(&key).expect("inserted above").value
    }

    /// Set `key` to `value`.
    pub fn insert(&mut self, key: K, value: V) {
        let mut value = Some(value);
        let slot = self.get_or_insert_with(key, || value.take().expect("taken once"));
        if let Some(value) = value {
            *slot = value;
        }
    }

    fn evict_one(&mut self) {
        // Terminates: each pass clears a `referenced` flag, so within len+1 steps one is clear.
        while let Some(key) = self.order.pop_front() {
            match self.slots.get_mut(&key) {
                Some(slot) if slot.referenced => {
                    slot.referenced = false;
                    self.order.push_back(key);
                }
                Some(_) => {
                    self.slots.remove(&key);
                    return;
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_million_distinct_keys_keep_the_map_at_its_cap_in_bounded_time() {
        let mut map = BoundedMap::new(10_000);
        let started = Instant::now();
        for i in 0..1_000_000u64 {
            map.insert(i, i);
            // Half the keys are read again, the way a counter is bumped twice.
            if i % 2 == 0 {
                assert_eq!(map.get(&i), Some(&i));
            }
            assert!(map.len() <= 10_000);
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.order.len(), 10_000, "the order holds each key once");
        // A generous bound: a walk over the map per insert (10^10 steps) would not meet it.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn an_entry_in_use_survives_a_flood_of_new_keys() {
        let mut map = BoundedMap::new(100);
        map.insert(u64::MAX, 1);
        for i in 0..10_000u64 {
            map.insert(i, 0);
            // The hot entry is touched once per 50 new keys: always within a clock round.
            if i % 50 == 0 {
                *map.get_mut(&u64::MAX).expect("kept") += 1;
            }
        }
        assert_eq!(map.get(&u64::MAX), Some(&201));
        assert_eq!(map.len(), 100);
    }
}
