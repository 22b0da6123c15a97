//! Recently verified certificates, so a client's every request does not cost
//! a signature verification. Keyed by SHA-256 of the leaf's DER: a hit means
//! the very same bytes were verified before. Only successes are stored (an
//! attacker cannot fill the cache without certificates the CA signed), and
//! the validity window is re-checked on every hit.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::verify::Verified;

pub type Key = [u8; 32];

struct Entry {
    verified: Verified,
    stored: Instant,
}

pub struct Cache {
    entries: RwLock<HashMap<Key, Entry>>,
    capacity: usize,
    ttl: Duration,
}

impl Cache {
    pub fn new(capacity: usize, ttl: Duration) -> Cache {
        Cache {
            entries: RwLock::new(HashMap::with_capacity(capacity.min(1024))),
            capacity,
            ttl,
        }
    }

    /// The CN of a certificate verified before whose path is valid at
    /// `now_unix`. Outside the window the caller verifies again, which yields
    /// the precise reason.
    pub fn get(&self, key: &Key, now_unix: i64) -> Option<String> {
        if self.capacity == 0 {
            return None;
        }
        // A panic while a lock was held cannot leave the map inconsistent
        // (every mutation is a single insert/remove), so poison is ignored.
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let e = entries.get(key)?;
        let fresh = e.stored.elapsed() <= self.ttl;
        let in_window = e.verified.not_before <= now_unix && now_unix <= e.verified.not_after;
        (fresh && in_window).then(|| e.verified.cn.clone())
    }

    pub fn insert(&self, key: Key, verified: Verified) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, e| e.stored.elapsed() <= ttl);
            if entries.len() >= self.capacity {
                // Iteration order of a randomly seeded map: random eviction,
                // which is good enough and costs nothing to maintain.
                if let Some(victim) = entries.keys().next().copied() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                verified,
                stored: Instant::now(),
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(cn: &str, nb: i64, na: i64) -> Verified {
        Verified {
            cn: cn.to_owned(),
            not_before: nb,
            not_after: na,
        }
    }

    #[test]
    fn hit_checks_the_window() {
        let c = Cache::new(4, Duration::from_secs(60));
        c.insert([1; 32], verified("a", 100, 200));
        assert_eq!(c.get(&[1; 32], 150).as_deref(), Some("a"));
        assert_eq!(c.get(&[1; 32], 99), None);
        assert_eq!(c.get(&[1; 32], 201), None);
        assert_eq!(c.get(&[2; 32], 150), None);
    }

    #[test]
    fn bounded() {
        let c = Cache::new(3, Duration::from_secs(60));
        for i in 0..10u8 {
            c.insert([i; 32], verified("x", 0, 10));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&[9; 32], 5).is_some());
    }

    #[test]
    fn ttl_expires_entries() {
        let c = Cache::new(3, Duration::ZERO);
        c.insert([1; 32], verified("x", 0, i64::MAX));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(c.get(&[1; 32], 5), None);
    }

    #[test]
    fn zero_capacity_disables() {
        let c = Cache::new(0, Duration::from_secs(60));
        c.insert([1; 32], verified("x", 0, 10));
        assert_eq!(c.get(&[1; 32], 5), None);
    }
}
