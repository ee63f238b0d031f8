//! A map with a hard cap on its entries: when full, inserting evicts the least recently
//! touched of a sample of entries (Redis's approximated LRU), so an attacker spraying source
//! addresses costs bounded memory and O(1) work per insert.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

const SAMPLE: usize = 16;

#[derive(Debug)]
pub struct CappedMap<K, V> {
    map: HashMap<K, (V, Instant)>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> CappedMap<K, V> {
    pub fn new(cap: usize) -> CappedMap<K, V> {
        CappedMap {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        while self.map.len() > self.cap {
            self.evict_one();
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(v, _)| v)
    }

    /// The entry for `k`, touched at `now`; created with `make` (evicting one when full).
    pub fn entry(&mut self, k: K, now: Instant, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            self.evict_one();
        }
        let slot = self.map.entry(k).or_insert_with(|| (make(), now));
        slot.1 = now;
        &mut slot.0
    }

    /// The entry for `k` without touching it.
    pub fn get_mut_untouched(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(v, _)| v)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k).map(|(v, _)| v)
    }

    /// Drop entries untouched for `ttl` or for which `keep` says no.
    pub fn sweep(&mut self, now: Instant, ttl: Duration, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.map
            .retain(|k, (v, touched)| now.saturating_duration_since(*touched) < ttl && keep(k, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, (v, _))| (k, v))
    }

    fn evict_one(&mut self) {
        let victim = self
            .map
            .iter()
            .take(SAMPLE)
            .min_by_key(|(_, (_, touched))| *touched)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_grows_past_its_cap() {
        let t0 = Instant::now();
        let mut m: CappedMap<u32, u32> = CappedMap::new(100);
        for i in 0..10_000 {
            *m.entry(i, t0 + Duration::from_millis(u64::from(i)), || 0) += 1;
        }
        assert_eq!(m.len(), 100);
        m.sweep(
            t0 + Duration::from_secs(100),
            Duration::from_secs(1),
            |_, _| true,
        );
        assert!(m.is_empty());
    }
}
