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
//!
//! A reload of the trusted CAs empties the cache and starts a new generation;
//! a verification stores its result only under the generation of the CAs it
//! used, so one that raced with the reload cannot bring an entry vouched for
//! by the old CAs back.

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

/// The entries and the generation they belong to, under one lock so that a
/// reset and an insert are ordered.
struct Entries {
    map: HashMap<u64, Entry, BuildHasherDefault<PassThrough>>,
    generation: u64,
}

pub struct Cache {
    entries: RwLock<Entries>,
    keys: RandomState,
    capacity: usize,
    ttl: Duration,
}

impl Cache {
    pub fn new(capacity: usize, ttl: Duration) -> Cache {
        Cache {
            entries: RwLock::new(Entries {
                map: HashMap::with_capacity_and_hasher(capacity.min(1024), Default::default()),
                generation: 0,
            }),
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
        let e = entries.map.get(&key)?;
        let same = *e.der == *der;
        let fresh = e.stored.elapsed() <= self.ttl;
        let in_window = e.verified.not_before <= now_unix && now_unix <= e.verified.not_after;
        (same && fresh && in_window).then(|| e.verified.cn.clone())
    }

    /// The generation a verification starting now stores its result under.
    pub fn generation(&self) -> u64 {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    /// Forget every entry and start a new generation: (the new generation,
    /// how many entries were forgotten).
    pub fn reset(&self) -> (u64, usize) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let forgotten = entries.map.len();
        entries.map.clear();
        entries.generation = entries.generation.wrapping_add(1);
        (entries.generation, forgotten)
    }

    /// Remember a verification made against the CAs of `generation`; dropped
    /// if the cache has moved on since.
    pub fn insert(&self, der: &[u8], verified: Verified, generation: u64) {
        if self.capacity == 0 {
            return;
        }
        let key = self.key(der);
        let mut guard = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if guard.generation != generation {
            return;
        }
        let entries = &mut guard.map;
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
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(cn: &str, nb: i64, na: i64) -> Verified {
        Verified {
            cn: cn.to_owned(),
            kind: crate::verify::Kind::ContentAccess,
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
        c.insert(&der(1), verified("a", 100, 200), 0);
        assert_eq!(c.get(&der(1), 150).as_deref(), Some("a"));
        assert_eq!(c.get(&der(1), 99), None);
        assert_eq!(c.get(&der(1), 201), None);
        assert_eq!(c.get(&der(2), 150), None);
    }

    #[test]
    fn a_hit_needs_the_very_same_bytes() {
        let c = Cache::new(4, Duration::from_secs(60));
        let original = der(1);
        c.insert(&original, verified("a", 0, 10), 0);
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
            c.insert(&der(i), verified("x", 0, 10), 0);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&der(9), 5).is_some());
    }

    #[test]
    fn ttl_expires_entries() {
        let c = Cache::new(3, Duration::ZERO);
        c.insert(&der(1), verified("x", 0, i64::MAX), 0);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(c.get(&der(1), 5), None);
    }

    #[test]
    fn reset_forgets_everything_and_refuses_results_of_the_old_generation() {
        let c = Cache::new(4, Duration::from_secs(60));
        let old = c.generation();
        c.insert(&der(1), verified("a", 0, 10), old);
        c.insert(&der(2), verified("b", 0, 10), old);
        let (new, forgotten) = c.reset();
        assert_ne!(new, old);
        assert_eq!(forgotten, 2);
        assert_eq!(c.generation(), new);
        assert_eq!(c.get(&der(1), 5), None);
        // A verification that read the old CAs and finishes after the reset.
        c.insert(&der(1), verified("a", 0, 10), old);
        assert_eq!(c.get(&der(1), 5), None);
        assert_eq!(c.len(), 0);
        c.insert(&der(3), verified("c", 0, 10), new);
        assert_eq!(c.get(&der(3), 5).as_deref(), Some("c"));
    }

    #[test]
    fn zero_capacity_disables() {
        let c = Cache::new(0, Duration::from_secs(60));
        c.insert(&der(1), verified("x", 0, 10), 0);
        assert_eq!(c.get(&der(1), 5), None);
    }
}
