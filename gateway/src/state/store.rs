//! Holds the current snapshot and swaps it whole.
//!
//! Readers load an `Arc<Snapshot>` without locking. Writers are serialised:
//! each builds a complete new snapshot from the current one, writes it to
//! `state.json` and only then makes it current, so what readers see is always
//! what a restart would load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::Snapshot;
use super::file::{self, STATE_FILE};
use super::persist::{self, ReadError};
use super::tokens::TokenStore;

/// What happened when the persisted state was read at start.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// One line per file that could not be used (and what was done with it).
    pub problems: Vec<String>,
    /// Files renamed out of the way because they could not be trusted.
    pub moved_aside: Vec<PathBuf>,
    /// Whether `state.json` was loaded.
    pub state_loaded: bool,
    pub repositories: usize,
    pub hosts: usize,
    pub host_mappings: usize,
    pub user_mappings: usize,
    /// Unexpired tokens loaded from `tokens.json`.
    pub tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError<E> {
    #[error("{0}")]
    Rejected(E),
    #[error("cannot persist state: {0}")]
    Persist(String),
}

pub struct StateStore {
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
    dir: Option<PathBuf>,
    loaded: AtomicBool,
    tokens: TokenStore,
}

impl StateStore {
    /// Open the state kept in `dir` (created when missing). Never fails: a
    /// file that cannot be used is reported, renamed aside when possible, and
    /// the gateway starts without it; a later write failure shows up as
    /// `StoreError::Persist` on the push that needs it.
    pub fn open(dir: &Path) -> (Self, LoadReport) {
        let mut report = LoadReport::default();
        if let Err(e) = std::fs::create_dir_all(dir) {
            report.problems.push(format!(
                "{}: cannot create the state directory: {e}",
                dir.display()
            ));
        }
        persist::remove_stale_temps(dir, STATE_FILE);
        let path = dir.join(STATE_FILE);
        let snapshot = match persist::read_versioned::<file::In>(&path) {
            Ok(Some(parsed)) => {
                let mut s = parsed.into_snapshot(SystemTime::now());
                s.generation = 1;
                report.state_loaded = true;
                s
            }
            Ok(None) => Snapshot::default(),
            Err(e) => {
                let problem = set_aside(
                    &path,
                    &e,
                    "starting with an empty state until Katello pushes again",
                );
                if let Some(p) = problem.moved_to {
                    report.moved_aside.push(p);
                }
                report.problems.push(problem.message);
                Snapshot::default()
            }
        };
        report.repositories = snapshot.repositories.len();
        report.hosts = snapshot.hosts.len();
        report.host_mappings = snapshot.host_mappings.len();
        report.user_mappings = snapshot.user_mappings.len();
        let (tokens, token_problems) = TokenStore::open(dir);
        for p in token_problems {
            if let Some(m) = p.moved_to {
                report.moved_aside.push(m);
            }
            report.problems.push(p.message);
        }
        report.tokens = tokens.len();
        let store = Self {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(()),
            dir: Some(dir.to_owned()),
            loaded: AtomicBool::new(report.state_loaded),
            tokens,
        };
        (store, report)
    }

    /// Read the persisted snapshot without changing anything on disk (for
    /// commands that inspect a running gateway's state).
    pub fn read_snapshot(dir: &Path) -> Result<Snapshot, String> {
        let path = dir.join(STATE_FILE);
        match persist::read_versioned::<file::In>(&path) {
            Ok(Some(parsed)) => Ok(parsed.into_snapshot(SystemTime::now())),
            Ok(None) => Ok(Snapshot::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// A store that never touches the disk (tests, demo).
    pub fn in_memory(initial: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            writer: Mutex::new(()),
            dir: None,
            loaded: AtomicBool::new(true),
            tokens: TokenStore::in_memory(),
        }
    }

    /// The current snapshot; never blocks, even while a push is written.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Whether the state came from somewhere: loaded from `state.json` at
    /// start, or stored since. False on a first start (or after a corrupt
    /// file was set aside) until Katello pushes, when no repository exists.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The tokens issued through this gateway.
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// Replace the snapshot with what `f` builds from the current one. Writers
    /// are serialised; the new snapshot is written to disk before it becomes
    /// current, so a persist failure leaves the old one in place. Does
    /// blocking file I/O: call it off the async workers.
    pub fn replace<E>(
        &self,
        f: impl FnOnce(&Snapshot) -> Result<Snapshot, E>,
    ) -> Result<Arc<Snapshot>, StoreError<E>> {
        let _guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        let mut next = f(&old).map_err(StoreError::Rejected)?;
        next.generation = old.generation.wrapping_add(1);
        if let Some(dir) = &self.dir {
            persist::write_atomic(dir, STATE_FILE, |w| file::write(&next, w)).map_err(|e| {
                StoreError::Persist(format!("{}: {e}", dir.join(STATE_FILE).display()))
            })?;
        }
        let next = Arc::new(next);
        self.current.store(next.clone());
        self.loaded.store(true, Ordering::Release);
        Ok(next)
    }
}

/// A file that could not be used, and where it went.
pub(crate) struct SetAside {
    pub message: String,
    pub moved_to: Option<PathBuf>,
}

/// Rename an unusable file out of the way so the next write does not destroy
/// the evidence, and describe what happened.
pub(crate) fn set_aside(path: &Path, err: &ReadError, consequence: &str) -> SetAside {
    match persist::move_aside(path) {
        Ok(to) => SetAside {
            message: format!(
                "{}: {err}; moved aside to {}; {consequence}",
                path.display(),
                to.display()
            ),
            moved_to: Some(to),
        },
        Err(e) => SetAside {
            message: format!(
                "{}: {err}; cannot move it aside ({e}); {consequence}",
                path.display()
            ),
            moved_to: None,
        },
    }
}

#[cfg(test)]
mod tests;
