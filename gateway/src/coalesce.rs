//! Request coalescing: concurrent callers asking for the same key share one
//! upstream call.
//!
//! The upstream clients are per worker thread and their futures are `!Send`, so
//! the first caller (the leader) runs the call on its own thread and publishes
//! the outcome through a watch channel that callers on any thread can await. If
//! the leader goes away before finishing (its client hung up), a waiting caller
//! takes over.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

pub struct Coalescer<K, V> {
    inflight: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
    waits: AtomicU64,
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
            waits: AtomicU64::new(0),
        }
    }
}

enum Role<V> {
    Leader(watch::Sender<Option<V>>),
    Follower(watch::Receiver<Option<V>>),
}

struct Cleanup<'a, K: Eq + Hash, V> {
    map: &'a Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
    key: Option<K>,
}

impl<K: Eq + Hash, V> Drop for Cleanup<'_, K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.remove(&key);
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Coalescer<K, V> {
    /// Run `call` unless a call for `key` is already in flight, in which case wait
    /// for its outcome instead.
    pub async fn run<F, Fut>(&self, key: K, call: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let mut call = Some(call);
        loop {
            let role = {
                let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(&key) {
                    Some(rx) => Role::Follower(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        map.insert(key.clone(), rx);
                        Role::Leader(tx)
                    }
                }
            };
            match role {
                Role::Leader(tx) => {
                    let cleanup = Cleanup {
                        map: &self.inflight,
                        key: Some(key.clone()),
                    };
                    // A follower never gives up its closure before becoming leader.
                    let Some(call) = call.take() else {
                        unreachable_leader()
                    };
                    let value = call().await;
                    let _ = tx.send(Some(value.clone()));
                    drop(cleanup);
                    return value;
                }
                Role::Follower(mut rx) => {
                    self.waits.fetch_add(1, Ordering::Relaxed);
                    loop {
                        if let Some(v) = rx.borrow_and_update().clone() {
                            return v;
                        }
                        if rx.changed().await.is_err() {
                            // The leader was dropped without an outcome: compete again.
                            break;
                        }
                    }
                }
            }
        }
    }

    /// How many callers waited on another's call (for metrics).
    pub fn coalesced_waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

#[cold]
fn unreachable_leader() -> ! {
    // `call` is only taken when this caller becomes leader, which happens once.
    panic!("coalescer leader without a call")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_callers_share_one_call() {
        let c: Arc<Coalescer<&'static str, u32>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let local = tokio::task::LocalSet::new();
        for _ in 0..50 {
            let c = c.clone();
            let calls = calls.clone();
            tasks.push(local.spawn_local(async move {
                c.run("k", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    7
                })
                .await
            }));
        }
        local
            .run_until(async {
                for t in tasks {
                    assert_eq!(t.await.unwrap(), 7);
                }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(c.coalesced_waits(), 49);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_leader_hands_over() {
        let c: Arc<Coalescer<u8, u8>> = Arc::default();
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let c1 = c.clone();
                let leader = tokio::task::spawn_local(async move {
                    c1.run(1, || async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        1
                    })
                    .await
                });
                tokio::task::yield_now().await;
                let c2 = c.clone();
                let follower =
                    tokio::task::spawn_local(async move { c2.run(1, || async { 2 }).await });
                tokio::task::yield_now().await;
                leader.abort();
                assert_eq!(follower.await.unwrap(), 2);
            })
            .await;
    }
}
