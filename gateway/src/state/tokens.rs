//! Bearer tokens issued through our `/v2/token`: only their SHA-256, the login
//! they belong to, their expiry and when central last vouched for them are kept.
//!
//! Central can revoke a token before it expires, so a stored token is
//! confirmed with central again after `cache.token_revalidate_secs`
//! (server/identify.rs); [`TokenStore::confirm`] records the answer in memory
//! only, so the file holds an older confirmation than memory does: after a
//! restart a token is asked about sooner, never later.
//!
//! Lookups are lock-free reads of a concurrent map; inserts (one per token
//! issued) also purge expired tokens, as the Ruby gateway did, and rewrite
//! `tokens.json` so tokens outlive a restart until they expire. Losing that
//! file costs little: a token this instance does not know is validated by
//! central (contract §3).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::persist::{self, FORMAT_VERSION, from_unix_millis, to_unix_millis};
use super::store::{SetAside, set_aside};

pub(crate) const TOKENS_FILE: &str = "tokens.json";

#[derive(Clone, Debug)]
struct Token {
    login: Arc<str>,
    expires_at: SystemTime,
    confirmed_at: SystemTime,
}

/// A stored token that has not expired.
#[derive(Clone, Debug)]
pub struct StoredToken {
    pub login: Arc<str>,
    /// When central last vouched for it (issued it, or answered for it).
    pub confirmed_at: SystemTime,
}

pub struct TokenStore {
    tokens: DashMap<Arc<str>, Token>,
    dir: Option<PathBuf>,
    /// Serialises file writes so an older map never overwrites a newer one.
    persist: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u64,
    tokens: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    digest: String,
    login: String,
    /// Unix milliseconds.
    expires_at: u64,
    /// Unix milliseconds; absent in files of earlier versions, read as never
    /// confirmed, so such a token is asked of central on first use.
    #[serde(default)]
    confirmed_at: u64,
}

impl TokenStore {
    /// A store that never touches the disk.
    pub fn in_memory() -> Self {
        Self {
            tokens: DashMap::new(),
            dir: None,
            persist: Mutex::new(()),
        }
    }

    /// Load `tokens.json` from `dir`, skipping expired tokens. Problems are
    /// returned for the caller's report; an unusable file is moved aside.
    pub(crate) fn open(dir: &Path) -> (Self, Vec<SetAside>) {
        let store = Self {
            tokens: DashMap::new(),
            dir: Some(dir.to_owned()),
            persist: Mutex::new(()),
        };
        let mut problems = Vec::new();
        persist::remove_stale_temps(dir, TOKENS_FILE);
        let path = dir.join(TOKENS_FILE);
        match persist::read_versioned::<File>(&path) {
            Ok(None) => {}
            Ok(Some(file)) => {
                let now = SystemTime::now();
                for e in file.tokens {
                    let expires_at = from_unix_millis(e.expires_at);
                    if expires_at > now && !e.digest.is_empty() && !e.login.is_empty() {
                        store.tokens.insert(
                            Arc::from(e.digest),
                            Token {
                                login: Arc::from(e.login),
                                expires_at,
                                confirmed_at: from_unix_millis(e.confirmed_at),
                            },
                        );
                    }
                }
            }
            Err(e) => problems.push(set_aside(
                &path,
                &e,
                "stored tokens are not used; clients will be checked with central",
            )),
        }
        (store, problems)
    }

    /// Record a token by its SHA-256 hex digest (as `hex::encode` writes it),
    /// replacing an earlier record of the same digest and dropping every
    /// expired one. Writes `tokens.json` before returning, so call it where
    /// blocking file I/O is acceptable; a write failure is logged and the
    /// token is still valid in memory.
    pub fn insert(&self, digest: &str, login: &str, expires_at: SystemTime) {
        let now = SystemTime::now();
        self.tokens.retain(|_, t| t.expires_at > now);
        if expires_at > now {
            self.tokens.insert(
                Arc::from(digest),
                Token {
                    login: Arc::from(login),
                    expires_at,
                    // Central just issued it.
                    confirmed_at: now,
                },
            );
        } else {
            self.tokens.remove(digest);
        }
        if let Err(e) = self.save() {
            warn!(error = %e, "cannot save tokens; they stay valid until a restart");
        }
    }

    /// The login a token belongs to, while it has not expired.
    pub fn lookup(&self, digest: &str) -> Option<Arc<str>> {
        self.get(digest).map(|t| t.login)
    }

    /// A token's login and last confirmation, while it has not expired.
    pub fn get(&self, digest: &str) -> Option<StoredToken> {
        let t = self.tokens.get(digest)?;
        (t.expires_at > SystemTime::now()).then(|| StoredToken {
            login: t.login.clone(),
            confirmed_at: t.confirmed_at,
        })
    }

    /// Central vouched for a token again at `at`. In memory only: rewriting
    /// the file for every confirmation would cost a write per token and
    /// interval, and the older time on disk errs towards asking again.
    pub fn confirm(&self, digest: &str, at: SystemTime) {
        if let Some(mut t) = self.tokens.get_mut(digest)
            && t.confirmed_at < at
        {
            t.confirmed_at = at;
        }
    }

    /// Central no longer accepts a token: forget it here and on disk.
    /// Returns whether it was held (only then is the file rewritten, so
    /// concurrent requests with one revoked token write it once).
    pub fn forget(&self, digest: &str) -> bool {
        if self.tokens.remove(digest).is_none() {
            return false;
        }
        if let Err(e) = self.save() {
            warn!(error = %e, "cannot save tokens; a revoked token stays on disk until the next write");
        }
        true
    }

    /// Logins holding an unexpired token, sorted, each once.
    pub fn users(&self) -> Vec<String> {
        let now = SystemTime::now();
        let mut v: Vec<String> = self
            .tokens
            .iter()
            .filter(|t| t.expires_at > now)
            .map(|t| t.login.to_string())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// How many unexpired tokens are held.
    pub fn len(&self) -> usize {
        let now = SystemTime::now();
        self.tokens.iter().filter(|t| t.expires_at > now).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let _guard = self.persist.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken under the lock: whoever writes last writes the newest map.
        let mut tokens: Vec<Entry> = self
            .tokens
            .iter()
            .map(|e| Entry {
                digest: e.key().to_string(),
                login: e.login.to_string(),
                expires_at: to_unix_millis(e.expires_at),
                confirmed_at: to_unix_millis(e.confirmed_at),
            })
            .collect();
        tokens.sort_unstable_by(|a, b| a.digest.cmp(&b.digest));
        let file = File {
            version: FORMAT_VERSION,
            tokens,
        };
        persist::write_atomic(dir, TOKENS_FILE, |w| {
            serde_json::to_writer(w, &file).map_err(std::io::Error::other)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn later(secs: u64) -> SystemTime {
        SystemTime::now() + Duration::from_secs(secs)
    }

    #[test]
    fn lookup_only_while_unexpired() {
        let s = TokenStore::in_memory();
        s.insert("aa", "alice", later(60));
        s.insert("bb", "bob", SystemTime::now() - Duration::from_secs(1));
        assert_eq!(s.lookup("aa").as_deref(), Some("alice"));
        assert_eq!(s.lookup("bb"), None);
        assert_eq!(s.lookup("cc"), None);
    }

    #[test]
    fn a_token_expires_in_place() {
        let s = TokenStore::in_memory();
        s.insert("aa", "alice", SystemTime::now() + Duration::from_millis(50));
        assert!(s.lookup("aa").is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.lookup("aa"), None);
        assert!(s.users().is_empty());
    }

    #[test]
    fn insert_replaces_same_digest_and_purges_expired() {
        let s = TokenStore::in_memory();
        s.tokens.insert(
            Arc::from("old"),
            Token {
                login: Arc::from("x"),
                expires_at: SystemTime::now() - Duration::from_secs(5),
                confirmed_at: SystemTime::UNIX_EPOCH,
            },
        );
        s.insert("aa", "alice", later(60));
        assert!(
            !s.tokens.contains_key("old"),
            "expired token purged on insert"
        );
        s.insert("aa", "alice2", later(120));
        assert_eq!(s.lookup("aa").as_deref(), Some("alice2"));
        assert_eq!(s.tokens.len(), 1);
    }

    #[test]
    fn users_are_sorted_unique_and_unexpired() {
        let s = TokenStore::in_memory();
        s.insert("1", "zed", later(60));
        s.insert("2", "amy", later(60));
        s.insert("3", "zed", later(60));
        s.tokens.insert(
            Arc::from("4"),
            Token {
                login: Arc::from("gone"),
                expires_at: SystemTime::now() - Duration::from_secs(1),
                confirmed_at: SystemTime::UNIX_EPOCH,
            },
        );
        assert_eq!(s.users(), vec!["amy".to_owned(), "zed".to_owned()]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn tokens_survive_a_restart_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, problems) = TokenStore::open(dir.path());
            assert!(problems.is_empty());
            s.insert("live", "alice", later(3600));
            s.insert(
                "short",
                "bob",
                SystemTime::now() + Duration::from_millis(100),
            );
        }
        std::thread::sleep(Duration::from_millis(150));
        let (s, problems) = TokenStore::open(dir.path());
        assert!(problems.is_empty());
        assert_eq!(s.lookup("live").as_deref(), Some("alice"));
        assert_eq!(s.lookup("short"), None);
        assert!(
            !s.tokens.contains_key("short"),
            "expired tokens are not loaded"
        );
        assert_eq!(s.users(), vec!["alice".to_owned()]);
    }

    #[test]
    fn corrupt_token_file_is_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENS_FILE), b"{not json").unwrap();
        let (s, problems) = TokenStore::open(dir.path());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains(TOKENS_FILE));
        assert!(problems[0].moved_to.is_some());
        assert!(s.is_empty());
        assert!(!dir.path().join(TOKENS_FILE).exists());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("tokens.json.corrupt-")
            });
        assert!(aside);
    }

    #[test]
    fn a_failed_write_keeps_the_token_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let (s, _) = TokenStore::open(&state);
        std::fs::remove_dir(&state).unwrap();
        std::fs::write(&state, b"not a directory").unwrap();
        s.insert("aa", "alice", later(60));
        assert_eq!(s.lookup("aa").as_deref(), Some("alice"));
    }

    #[test]
    fn concurrent_inserts_and_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = TokenStore::open(dir.path());
        let s = Arc::new(s);
        std::thread::scope(|scope| {
            for t in 0..8 {
                let s = s.clone();
                scope.spawn(move || {
                    for i in 0..50 {
                        let d = format!("{t}-{i}");
                        s.insert(&d, &format!("user{t}"), later(60));
                        assert_eq!(s.lookup(&d).as_deref(), Some(format!("user{t}").as_str()));
                    }
                });
            }
        });
        assert_eq!(s.len(), 400);
        let (reloaded, _) = TokenStore::open(dir.path());
        assert_eq!(reloaded.len(), 400, "the last write holds every token");
    }

    #[test]
    fn a_confirmation_stays_in_memory_and_a_forgotten_token_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = TokenStore::open(dir.path());
        s.insert("aa", "alice", later(3600));
        s.insert("bb", "bob", later(3600));
        let issued = s.get("aa").unwrap().confirmed_at;
        let later_on = issued + Duration::from_secs(30);
        s.confirm("aa", later_on);
        s.confirm("aa", issued);
        assert_eq!(
            s.get("aa").unwrap().confirmed_at,
            later_on,
            "never moves back"
        );
        s.confirm("zz", later_on);
        assert!(s.get("zz").is_none(), "confirming does not create");
        let (reloaded, _) = TokenStore::open(dir.path());
        let on_disk = reloaded.get("aa").unwrap().confirmed_at;
        assert!(on_disk < later_on && on_disk + Duration::from_secs(1) > issued);
        assert!(s.forget("bb"));
        assert!(!s.forget("bb"), "a second forget is a no-op");
        assert_eq!(s.lookup("bb"), None);
        let (reloaded, _) = TokenStore::open(dir.path());
        assert_eq!(reloaded.lookup("bb"), None, "gone from the file too");
        assert_eq!(reloaded.lookup("aa").as_deref(), Some("alice"));
    }

    #[test]
    fn a_file_without_confirmations_reads_as_never_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let expires = to_unix_millis(later(3600));
        std::fs::write(
            dir.path().join(TOKENS_FILE),
            format!(
                r#"{{"version":{FORMAT_VERSION},"tokens":[{{"digest":"aa","login":"alice","expires_at":{expires}}}]}}"#
            ),
        )
        .unwrap();
        let (s, problems) = TokenStore::open(dir.path());
        assert!(problems.is_empty());
        assert_eq!(s.get("aa").unwrap().confirmed_at, SystemTime::UNIX_EPOCH);
    }
}
