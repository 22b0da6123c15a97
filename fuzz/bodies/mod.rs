//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs`
//! (libFuzzer, nightly) and `tests/tests/fuzz_replay.rs` (every committed
//! input replayed on stable). Each body panics when an invariant breaks.

pub mod forwarded_cert;
pub mod index_filter;
pub mod names;
pub mod plugin_output;
pub mod query_canonical;
pub mod rack_form;

/// A target's body: panics when an invariant breaks.
pub type Body = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: [(&str, Body); 6] = [
    ("forwarded_cert", forwarded_cert::run),
    ("query_canonical", query_canonical::run),
    ("index_filter", index_filter::run),
    ("rack_form", rack_form::run),
    ("names", names::run),
    ("plugin_output", plugin_output::run),
];
