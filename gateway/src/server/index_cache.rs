//! Pulp's index, parsed once per upstream version, and the filtered bodies
//! built from it, kept per (upstream version, snapshot generation, grant).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::coalesce::Coalescer;
use crate::index::{Filtered, UpstreamIndex, gzip};
use crate::state::{RepoSet, Snapshot};
use crate::upstream::UpstreamError;

/// One version of Pulp's answer for one query.
pub struct UpstreamVersion {
    pub index: Arc<UpstreamIndex>,
    pub version: u64,
    fetched: Instant,
    digest: [u8; 32],
}

impl UpstreamVersion {
    pub fn age(&self) -> Duration {
        self.fetched.elapsed()
    }
}

/// A filtered body, gzipped on first demand.
pub struct FilteredBody {
    pub filtered: Filtered,
    /// Visible apps whose runtime is not visible (computed with the body, so
    /// the check costs nothing per request).
    pub apps_missing_runtime: usize,
    gzipped: OnceLock<Bytes>,
}

impl FilteredBody {
    /// The gzipped body, compressed once, off the worker thread (a big index
    /// takes long enough to stall every other request on it).
    pub async fn gzipped(&self) -> Bytes {
        if let Some(z) = self.gzipped.get() {
            return z.clone();
        }
        let body = self.filtered.body.clone();
        let z = match actix_web::rt::task::spawn_blocking(move || gzip(&body)).await {
            Ok(z) => z,
            Err(_) => gzip(&self.filtered.body),
        };
        self.gzipped.get_or_init(|| z).clone()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FilterKey {
    version: u64,
    generation: u64,
    grant: Option<RepoSet>,
}

/// Why Pulp's index could not be had.
#[derive(Clone, Debug)]
pub enum FetchError {
    Upstream(UpstreamError),
    /// Pulp answered with an error status; relayed to the client.
    Status {
        status: u16,
        detail: String,
    },
    /// Pulp answered 200 with something that is not an index.
    Malformed(String),
}

/// Bytes of filtered bodies kept before old ones are dropped.
const FILTERED_BUDGET: usize = 256 * 1024 * 1024;

/// Bytes of parsed upstream indexes kept (one body shared by several queries
/// counts once), and how many queries keep one. The cache key is the client's
/// query: without a bound, every made-up query (`tag=latest&tag=<anything>`,
/// which Pulp answers with the whole index) kept a parsed copy forever.
/// Flatpak itself sends a handful of queries (one per kind and architecture).
const UPSTREAM_BUDGET: usize = 512 * 1024 * 1024;
const MAX_UPSTREAM_QUERIES: usize = 256;

#[derive(Clone, Copy, Debug)]
struct UpstreamLimits {
    bytes: usize,
    queries: usize,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        Self {
            bytes: UPSTREAM_BUDGET,
            queries: MAX_UPSTREAM_QUERIES,
        }
    }
}

#[derive(Default)]
pub struct IndexCache {
    upstream: DashMap<String, Arc<UpstreamVersion>>,
    fetches: Coalescer<String, Result<Arc<UpstreamVersion>, FetchError>>,
    filters: Coalescer<FilterKey, Arc<FilteredBody>>,
    filtered: DashMap<FilterKey, Arc<FilteredBody>>,
    filtered_bytes: AtomicUsize,
    next_version: AtomicU64,
    /// (host, upstream version) pairs already warned about missing runtimes.
    warned: DashMap<(Arc<str>, u64), ()>,
    pub kept_entries: AtomicU64,
    pub dropped_entries: AtomicU64,
    upstream_limits: UpstreamLimits,
}

impl IndexCache {
    /// The current upstream version for `key` (kind + canonical query): cached
    /// while younger than `ttl`, else fetched (coalesced). On fetch failure a
    /// previous version younger than `stale_for` is served.
    pub async fn upstream<F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        stale_for: Duration,
        fetch: F,
    ) -> Result<Arc<UpstreamVersion>, FetchError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(u16, Bytes), FetchError>>,
    {
        let previous = self.upstream.get(key).map(|v| v.clone());
        if let Some(v) = &previous
            && v.age() < ttl
        {
            return Ok(v.clone());
        }
        let result = self
            .fetches
            .run(key.to_owned(), || async {
                let (status, body) = fetch().await?;
                if status != 200 {
                    return Err(FetchError::Status {
                        status,
                        detail: detail_of(&body),
                    });
                }
                let digest: [u8; 32] = Sha256::digest(&body).into();
                let current = self.upstream.get(key).map(|v| v.clone());
                // Same bytes as before, for this query or another one: keep
                // that version (filtered bodies stay cached) and its parse.
                let same = match &current {
                    Some(c) if c.digest == digest => Some((c.version, c.index.clone())),
                    _ => self
                        .upstream
                        .iter()
                        .find(|v| v.digest == digest)
                        .map(|v| (v.version, v.index.clone())),
                };
                let (version, index) = match same {
                    Some(same) => same,
                    None => {
                        let parsed =
                            actix_web::rt::task::spawn_blocking(move || UpstreamIndex::parse(body))
                                .await
                                .map_err(|e| {
                                    FetchError::Malformed(format!("index parser failed: {e}"))
                                })?;
                        let index =
                            Arc::new(parsed.map_err(|e| FetchError::Malformed(e.to_string()))?);
                        (self.next_version.fetch_add(1, Ordering::Relaxed) + 1, index)
                    }
                };
                let fresh = Arc::new(UpstreamVersion {
                    index,
                    version,
                    fetched: Instant::now(),
                    digest,
                });
                self.upstream.insert(key.to_owned(), fresh.clone());
                self.trim_upstream(key, ttl.max(stale_for));
                Ok(fresh)
            })
            .await;
        match result {
            Ok(v) => Ok(v),
            Err(FetchError::Upstream(e)) => match previous {
                Some(v) if v.age() < stale_for => {
                    tracing::warn!(error = %e, age_secs = v.age().as_secs(), "Pulp unavailable; serving the previous index");
                    Ok(v)
                }
                _ => Err(FetchError::Upstream(e)),
            },
            Err(other) => Err(other),
        }
    }

    /// Drop upstream versions that can no longer be served (older than the TTL
    /// and the stale window), then the oldest others while more than
    /// [`MAX_UPSTREAM_QUERIES`] queries or [`UPSTREAM_BUDGET`] bytes are kept;
    /// `keep` (just fetched) stays.
    fn trim_upstream(&self, keep: &str, useful_for: Duration) {
        self.upstream
            .retain(|k, v| k.as_str() == keep || v.age() < useful_for);
        let limits = self.upstream_limits;
        let over = || self.upstream.len() > limits.queries || self.upstream_bytes() > limits.bytes;
        if !over() {
            return;
        }
        let mut oldest_first: Vec<(Instant, String)> = self
            .upstream
            .iter()
            .filter(|e| e.key().as_str() != keep)
            .map(|e| (e.fetched, e.key().clone()))
            .collect();
        oldest_first.sort();
        for (_, k) in oldest_first {
            if !over() {
                break;
            }
            self.upstream.remove(&k);
        }
    }

    /// Memory held by the cached upstream indexes, each distinct one once.
    fn upstream_bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.upstream
            .iter()
            .filter(|v| seen.insert(v.version))
            .map(|v| v.index.heap_bytes())
            .sum()
    }

    /// Queries with a cached upstream index, distinct indexes among them, and
    /// the memory they hold.
    pub fn upstream_stats(&self) -> (usize, usize, usize) {
        let distinct: std::collections::HashSet<u64> =
            self.upstream.iter().map(|v| v.version).collect();
        (self.upstream.len(), distinct.len(), self.upstream_bytes())
    }

    /// The filtered body for one client's view of an upstream version:
    /// computed once per (version, snapshot generation, grant), off the worker
    /// thread, coalesced when many clients with the same grant ask at once.
    pub async fn filtered(
        &self,
        upstream: &UpstreamVersion,
        snapshot: Arc<Snapshot>,
        grant: Option<RepoSet>,
        registry_url: String,
    ) -> Arc<FilteredBody> {
        let key = FilterKey {
            version: upstream.version,
            generation: snapshot.generation,
            grant,
        };
        if let Some(hit) = self.filtered.get(&key) {
            return hit.clone();
        }
        let index = upstream.index.clone();
        let (version, generation) = (key.version, key.generation);
        let grant = key.grant.clone();
        self.filters
            .run(key.clone(), || async move {
                let computed = actix_web::rt::task::spawn_blocking(move || {
                    let visible = |name: &str| snapshot.visible(name, grant.as_ref());
                    let missing =
                        crate::explain::runtime_report(&index, &visible).apps_missing_runtime();
                    (index.filter(&registry_url, &visible), missing)
                })
                .await;
                let (filtered, apps_missing_runtime) = match computed {
                    Ok(f) => f,
                    // The filter does not panic on any input; should the thread
                    // pool fail anyway, nobody sees anything rather than too much.
                    Err(_) => (
                        Filtered {
                            body: Bytes::from_static(b"{\"Registry\":\"/\",\"Results\":[]}"),
                            etag: "\"unavailable\"".into(),
                            kept: 0,
                            dropped: 0,
                        },
                        0,
                    ),
                };
                self.kept_entries
                    .fetch_add(filtered.kept as u64, Ordering::Relaxed);
                self.dropped_entries
                    .fetch_add(filtered.dropped as u64, Ordering::Relaxed);
                let size = filtered.body.len();
                let body = Arc::new(FilteredBody {
                    filtered,
                    apps_missing_runtime,
                    gzipped: OnceLock::new(),
                });
                if self.filtered_bytes.fetch_add(size, Ordering::Relaxed) + size > FILTERED_BUDGET {
                    self.shrink(version, generation);
                }
                self.filtered.insert(key, body.clone());
                body
            })
            .await
    }

    /// Log once per host and index version that some of its apps lack their
    /// runtime, and count the host. Returns whether this call was the first.
    pub fn note_missing_runtimes(&self, host: &Arc<str>, version: u64, apps: usize) -> bool {
        if apps == 0 {
            return false;
        }
        if self.warned.len() > 100_000 {
            self.warned.retain(|(_, v), _| *v == version);
        }
        if self.warned.insert((host.clone(), version), ()).is_some() {
            return false;
        }
        metrics::counter!("index_apps_missing_runtime").increment(1);
        // Counts only: the names are for `explain`, not for a log a host's
        // operator might read about another host.
        tracing::warn!(
            host = %host,
            apps,
            "Flatpak apps visible to this host need a runtime it cannot see; run `container-gateway explain --host {host}`"
        );
        true
    }

    fn shrink(&self, version: u64, generation: u64) {
        self.filtered
            .retain(|k, _| k.version == version && k.generation == generation);
        let mut total: usize = self.filtered.iter().map(|e| e.filtered.body.len()).sum();
        if total > FILTERED_BUDGET / 2 {
            self.filtered.clear();
            total = 0;
        }
        self.filtered_bytes.store(total, Ordering::Relaxed);
    }
}

/// Pulp's `{"detail": "..."}` message, if any, for relaying an index error.
fn detail_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Detail {
        detail: String,
    }
    serde_json::from_slice::<Detail>(body)
        .map(|d| d.detail.chars().take(200).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-entry index whose name is `name`, padded to about `pad` bytes.
    fn body(name: &str, pad: usize) -> Bytes {
        Bytes::from(format!(
            r#"{{"Registry":"https://pulp/","Results":[{{"Name":"{name}","Images":[],"Pad":"{}"}}]}}"#,
            "p".repeat(pad)
        ))
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[actix_web::test]
    async fn queries_with_the_same_answer_share_one_parse_and_are_bounded() {
        let cache = IndexCache::default();
        for i in 0..MAX_UPSTREAM_QUERIES + 40 {
            let v = cache
                .upstream(
                    &format!("static?tag=latest&tag=q{i}"),
                    LONG,
                    LONG,
                    || async { Ok((200, body("org/app", 10))) },
                )
                .await
                .unwrap();
            assert_eq!(v.version, 1, "one parse, one version");
        }
        let (queries, distinct, _) = cache.upstream_stats();
        assert_eq!((queries, distinct), (MAX_UPSTREAM_QUERIES, 1));
    }

    #[actix_web::test]
    async fn distinct_answers_are_kept_within_the_byte_budget_newest_first() {
        let cache = IndexCache {
            upstream_limits: UpstreamLimits {
                bytes: 64 * 1024,
                queries: 1000,
            },
            ..Default::default()
        };
        for i in 0..100 {
            cache
                .upstream(&format!("q{i}"), LONG, LONG, || async {
                    Ok((200, body(&format!("org/app{i}"), 8 * 1024)))
                })
                .await
                .unwrap();
        }
        let (queries, distinct, bytes) = cache.upstream_stats();
        assert!(bytes <= 64 * 1024, "{bytes}");
        assert!((2..100).contains(&queries), "{queries}");
        assert_eq!(queries, distinct);
        assert!(cache.upstream.contains_key("q99"), "the newest stays");
        assert!(!cache.upstream.contains_key("q0"), "the oldest went first");

        // One answer over the whole budget is still served and kept, alone.
        let v = cache
            .upstream("big", LONG, LONG, || async {
                Ok((200, body("org/big", 128 * 1024)))
            })
            .await
            .unwrap();
        assert_eq!(v.index.names().collect::<Vec<_>>(), vec!["org/big"]);
        assert_eq!(cache.upstream_stats().0, 1);
    }

    #[actix_web::test]
    async fn answers_past_any_use_are_dropped() {
        let cache = IndexCache::default();
        let short = Duration::from_millis(50);
        cache
            .upstream("old", short, short, || async {
                Ok((200, body("org/a", 1)))
            })
            .await
            .unwrap();
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        cache
            .upstream("new", short, short, || async {
                Ok((200, body("org/b", 1)))
            })
            .await
            .unwrap();
        assert!(!cache.upstream.contains_key("old"));
        assert!(cache.upstream.contains_key("new"));
    }
}
