//! Which repositories an identity may see (contract §3).
//!
//! Per identity we keep the list central last gave us, refreshed after
//! `cache.ttl`; concurrent misses make one central call; when central fails we
//! serve a stale answer younger than `cache.stale_if_error`, else the mapping
//! Katello pushed, else nothing (the request gets 503): never fail open.
//!
//! Bearer tokens follow the same rules with `cache.token_revalidate` as
//! their freshness bound: central may revoke a token before it expires, and
//! its `_catalog` answer for the token is both the check and the grant.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;

use crate::coalesce::Coalescer;
use crate::config::CacheConfig;
use crate::state::{RepoSet, Snapshot};

/// The key central answers for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Host(Arc<str>),
    /// A bearer token, by its SHA-256 hex digest.
    Token(Arc<str>),
}

/// Where a grant came from, for `explain` and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Central,
    /// Central failed; a previous answer still within `stale_if_error`.
    StaleCentral,
    Pushed,
}

/// The repositories beyond the public ones that a subject may see.
#[derive(Clone, Debug)]
pub struct Grant {
    pub repositories: RepoSet,
    pub source: Source,
    /// Age of the information.
    pub age: Duration,
}

impl Grant {
    /// A mapping Katello pushed (or `/v2/token` refreshed), aged from its timestamp.
    pub fn pushed(mapping: &crate::state::Mapping) -> Grant {
        Grant {
            repositories: mapping.repositories.clone(),
            source: Source::Pushed,
            age: SystemTime::now()
                .duration_since(mapping.updated_at)
                .unwrap_or_default(),
        }
    }
}

/// Why no grant could be produced.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EntitlementError {
    /// Central failed and there is nothing to fall back on: 503.
    #[error("central unavailable and no cached entitlements: {0}")]
    Unavailable(String),
    /// Central says these credentials are not valid (bearer tokens): 401.
    #[error("credentials rejected by central")]
    Rejected,
}

/// What a central lookup produced.
#[derive(Clone, Debug)]
pub enum Lookup {
    Granted(RepoSet),
    /// Central answered that the credentials are invalid (401/403).
    Rejected,
    Failed(String),
}

#[derive(Clone, Debug)]
struct Entry {
    repositories: RepoSet,
    fetched: Instant,
    fetched_wall: SystemTime,
}

#[derive(Clone, Copy, Debug)]
struct Failure {
    at: Instant,
    rejected: bool,
}

pub struct Entitlements {
    cfg: CacheConfig,
    entries: DashMap<Subject, Entry>,
    failures: DashMap<Subject, Failure>,
    coalescer: Coalescer<Subject, Lookup>,
}

impl Entitlements {
    pub fn new(cfg: CacheConfig) -> Self {
        Self {
            cfg,
            entries: DashMap::new(),
            failures: DashMap::new(),
            coalescer: Coalescer::default(),
        }
    }

    pub fn coalesced_waits(&self) -> u64 {
        self.coalescer.coalesced_waits()
    }

    pub fn cached_identities(&self) -> usize {
        self.entries.len()
    }

    /// Forget everything learned for a subject (a push replaced its mapping).
    pub fn forget(&self, subject: &Subject) {
        self.entries.remove(subject);
        self.failures.remove(subject);
    }

    /// The grant for a host: fresh cache, else a fresh push, else central.
    pub async fn for_host<F, Fut>(
        &self,
        snapshot: &Snapshot,
        uuid: &Arc<str>,
        fetch: F,
    ) -> Result<Grant, EntitlementError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Lookup>,
    {
        let pushed = snapshot.host_mapping(uuid).map(Grant::pushed);
        let subject = Subject::Host(uuid.clone());
        let cached = self.cached(&subject);
        // The newer of the cached answer and the push decides while it is fresh.
        let freshest = match (&cached, &pushed) {
            (Some(c), Some(p)) => Some(if p.age < c.age { p.clone() } else { c.clone() }),
            (c, p) => c.clone().or_else(|| p.clone()),
        };
        if let Some(g) = &freshest
            && g.age < self.cfg.ttl
        {
            crate::admin::metrics::entitlement_lookup(true);
            return Ok(g.clone());
        }
        crate::admin::metrics::entitlement_lookup(false);
        // Central's answer holds its own copy of every name; a proxy caches
        // hundreds of thousands of hosts sharing a few thousand repositories,
        // so each name is stored once, in the pushed list's allocation.
        let interned = move || async move {
            match fetch().await {
                Lookup::Granted(repos) => Lookup::Granted(snapshot.intern_set(&repos)),
                other => other,
            }
        };
        self.ask_central(subject, cached, pushed, self.cfg.ttl, interned)
            .await
    }

    /// The grant for a bearer token this gateway must validate with central.
    pub async fn for_token<F, Fut>(
        &self,
        digest: &Arc<str>,
        fetch: F,
    ) -> Result<Grant, EntitlementError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Lookup>,
    {
        let subject = Subject::Token(digest.clone());
        let cached = self.cached(&subject);
        let fresh_for = self.cfg.ttl.min(self.cfg.token_revalidate);
        if let Some(g) = &cached
            && g.age < fresh_for
        {
            crate::admin::metrics::entitlement_lookup(true);
            return Ok(g.clone());
        }
        crate::admin::metrics::entitlement_lookup(false);
        self.ask_central(subject, cached, None, fresh_for, fetch)
            .await
    }

    /// Ask central whether a token this gateway stored is still valid. Its
    /// grant comes from the user's mapping, so nothing is cached here; only
    /// the failure memory (`cache.negative_ttl`) and the coalescing are
    /// shared with [`Entitlements::for_token`]. What to do with a failure is
    /// the caller's: it knows when the token was last confirmed.
    pub async fn confirm_token<F, Fut>(&self, digest: &Arc<str>, fetch: F) -> Lookup
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Lookup>,
    {
        crate::admin::metrics::entitlement_lookup(false);
        let subject = Subject::Token(digest.clone());
        self.central_outcome(subject, fetch, None).await
    }

    /// Record a grant learned elsewhere (e.g. at `/v2/token`).
    pub fn remember(&self, subject: Subject, repositories: RepoSet) {
        self.evict_if_full();
        self.failures.remove(&subject);
        self.entries.insert(
            subject,
            Entry {
                repositories,
                fetched: Instant::now(),
                fetched_wall: SystemTime::now(),
            },
        );
    }

    fn cached(&self, subject: &Subject) -> Option<Grant> {
        self.entries.get(subject).map(|e| Grant {
            repositories: e.repositories.clone(),
            source: Source::Central,
            age: e.fetched.elapsed(),
        })
    }

    /// When central last answered for this subject, if we hold its answer.
    pub fn fetched_at(&self, subject: &Subject) -> Option<SystemTime> {
        self.entries.get(subject).map(|e| e.fetched_wall)
    }

    async fn ask_central<F, Fut>(
        &self,
        subject: Subject,
        cached: Option<Grant>,
        pushed: Option<Grant>,
        fresh_for: Duration,
        fetch: F,
    ) -> Result<Grant, EntitlementError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Lookup>,
    {
        let outcome = self.central_outcome(subject, fetch, Some(fresh_for)).await;
        match outcome {
            Lookup::Granted(repositories) => Ok(Grant {
                repositories,
                source: Source::Central,
                age: Duration::ZERO,
            }),
            Lookup::Rejected => Err(EntitlementError::Rejected),
            Lookup::Failed(reason) => {
                if let Some(c) = cached.filter(|c| c.age < self.cfg.stale_if_error) {
                    return Ok(Grant {
                        source: Source::StaleCentral,
                        ..c
                    });
                }
                // What Katello pushed stays its word until the next push, however old.
                pushed.ok_or(EntitlementError::Unavailable(reason))
            }
        }
    }

    /// Central's word on a subject: a failure within `negative_ttl` is
    /// repeated without asking; otherwise one coalesced call. With `keep`,
    /// the grant is cached, and a caller that found the cache stale but
    /// reaches the coalescer just after another call refreshed it (younger
    /// than `keep`) takes that answer instead of asking again.
    async fn central_outcome<F, Fut>(
        &self,
        subject: Subject,
        fetch: F,
        keep: Option<Duration>,
    ) -> Lookup
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Lookup>,
    {
        let recent_failure = self
            .failures
            .get(&subject)
            .map(|f| *f)
            .filter(|f| f.at.elapsed() < self.cfg.negative_ttl);
        match recent_failure {
            Some(Failure { rejected: true, .. }) => Lookup::Rejected,
            Some(_) => Lookup::Failed("central failed moments ago".into()),
            None => {
                self.coalescer
                    .run(subject.clone(), || async {
                        if let Some(fresh_for) = keep
                            && let Some(g) = self.cached(&subject)
                            && g.age < fresh_for
                        {
                            return Lookup::Granted(g.repositories);
                        }
                        let outcome = fetch().await;
                        match &outcome {
                            Lookup::Granted(repos) if keep.is_some() => {
                                self.remember(subject.clone(), repos.clone())
                            }
                            Lookup::Granted(_) => {
                                self.failures.remove(&subject);
                            }
                            Lookup::Rejected => {
                                self.entries.remove(&subject);
                                self.failures.insert(
                                    subject.clone(),
                                    Failure {
                                        at: Instant::now(),
                                        rejected: true,
                                    },
                                );
                            }
                            Lookup::Failed(_) => {
                                self.failures.insert(
                                    subject.clone(),
                                    Failure {
                                        at: Instant::now(),
                                        rejected: false,
                                    },
                                );
                            }
                        }
                        outcome
                    })
                    .await
            }
        }
    }

    fn evict_if_full(&self) {
        if self.entries.len() < self.cfg.max_identities {
            return;
        }
        let horizon = self.cfg.stale_if_error;
        self.entries.retain(|_, e| e.fetched.elapsed() < horizon);
        let excess = self
            .entries
            .len()
            .saturating_sub(self.cfg.max_identities * 9 / 10);
        if excess > 0 {
            let victims: Vec<Subject> = self
                .entries
                .iter()
                .take(excess)
                .map(|e| e.key().clone())
                .collect();
            for v in victims {
                self.entries.remove(&v);
            }
        }
    }
}

#[cfg(test)]
mod tests;
