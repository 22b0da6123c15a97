//! The state Katello pushes (repository list, host and user mappings), held as
//! one immutable snapshot that is swapped whole, and persisted to `state.dir`;
//! and the tokens issued through `/v2/token`.

mod file;
mod persist;
mod snapshot;
mod store;
mod tokens;

pub use snapshot::{Mapping, RepoSet, Snapshot};
pub use store::{LoadReport, StateStore, StoreError};
pub use tokens::{StoredToken, TokenStore};
