//! Recently verified certificates, so a client's every request does not cost
//! a signature verification.
//!
//! A hit requires the presented leaf to be byte-for-byte the one verified
//! before: entries keep the whole DER and compare it. The map is keyed by a
//! randomly keyed hash of the DER's length and tail (the signature, unique per
//! certificate), which is only a bucket choice, never a proof. This is as
//! strong as keying by SHA-256 of the DER and much cheaper: hashing a 3 KB
//! certificate costs more than the rest of a cache hit, including the trip
//! through the plugin ABI.
//!
//! Only successes are stored (filling the cache takes certificates the CA
//! signed), and the validity window is re-checked on every hit.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::verify::Verified;

/// Bytes at the end of the DER that feed the bucket hash.
const TAIL: usize = 64;

struct Entry {
    der: Box<[u8]>,
    verified: Verified,
    stored: Instant,
}

/// Keys are already uniformly distributed keyed hashes: use them as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub struct Cache {
    entries: RwLock<HashMap<u64, Entry, BuildHasherDefault<PassThrough>>>,
    keys: RandomState,
    capacity: usize,
    ttl: Duration,
}

impl Cache {
    pub fn new(capacity: usize, ttl: Duration) -> Cache {
        Cache {
            entries: RwLock::new(HashMap::with_capacity_and_hasher(
                capacity.min(1024),
                Default::default(),
            )),
            keys: RandomState::new(),
            capacity,
            ttl,
        }
    }

    fn key(&self, der: &[u8]) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write_usize(der.len());
        h.write(&der[der.len().saturating_sub(TAIL)..]);
        h.finish()
    }

    /// The CN of this very certificate if it was verified recently and its
    /// path is valid at `now_unix`. Outside the window the caller verifies
    /// again, which yields the precise reason.
    pub fn get(&self, der: &[u8], now_unix: i64) -> Option<String> {
        if self.capacity == 0 {
            return None;
        }
        let key = self.key(der);
        // A panic while a lock was held cannot leave the map inconsistent
        // (every mutation is a single insert/remove), so poison is ignored.
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let e = entries.get(&key)?;
        let same = *e.der == *der;
        let fresh = e.stored.elapsed() <= self.ttl;
        let in_window = e.verified.not_before <= now_unix && now_unix <= e.verified.not_after;
        (same && fresh && in_window).then(|| e.verified.cn.clone())
    }

    pub fn insert(&self, der: &[u8], verified: Verified) {
        if self.capacity == 0 {
            return;
        }
        let key = self.key(der);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, e| e.stored.elapsed() <= ttl);
            if entries.len() >= self.capacity {
                // Iteration order of keyed hashes: random eviction, which is
                // good enough and costs nothing to maintain.
                if let Some(victim) = entries.keys().next().copied() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                der: der.into(),
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

    fn der(n: u8) -> Vec<u8> {
        vec![n; 300]
    }

    #[test]
    fn hit_checks_the_window() {
        let c = Cache::new(4, Duration::from_secs(60));
        c.insert(&der(1), verified("a", 100, 200));
        assert_eq!(c.get(&der(1), 150).as_deref(), Some("a"));
        assert_eq!(c.get(&der(1), 99), None);
        assert_eq!(c.get(&der(1), 201), None);
        assert_eq!(c.get(&der(2), 150), None);
    }

    #[test]
    fn a_hit_needs_the_very_same_bytes() {
        let c = Cache::new(4, Duration::from_secs(60));
        let original = der(1);
        c.insert(&original, verified("a", 0, 10));
        // Same length and same tail (so the same bucket), different body.
        let mut forged = original.clone();
        forged[10] ^= 0xff;
        assert_eq!(c.get(&forged, 5), None);
        assert_eq!(c.get(&original, 5).as_deref(), Some("a"));
        assert_eq!(c.get(&[], 5), None);
    }

    #[test]
    fn bounded() {
        let c = Cache::new(3, Duration::from_secs(60));
        for i in 0..10u8 {
            c.insert(&der(i), verified("x", 0, 10));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&der(9), 5).is_some());
    }

    #[test]
    fn ttl_expires_entries() {
        let c = Cache::new(3, Duration::ZERO);
        c.insert(&der(1), verified("x", 0, i64::MAX));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(c.get(&der(1), 5), None);
    }

    #[test]
    fn zero_capacity_disables() {
        let c = Cache::new(0, Duration::from_secs(60));
        c.insert(&der(1), verified("x", 0, 10));
        assert_eq!(c.get(&der(1), 5), None);
    }
}
