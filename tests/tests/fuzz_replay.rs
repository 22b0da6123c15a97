//! Replays every committed fuzz input (`fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/`) through the same bodies the libFuzzer
//! targets run, so the invariants they check hold on stable in CI, without
//! nightly or cargo-fuzz.

#[path = "../../fuzz/bodies/mod.rs"]
mod bodies;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let corpus = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ holds no inputs");
    let regressions = inputs(&fuzz_dir().join("regressions").join(target));
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs break an invariant:\n{}",
        failures.len(),
        corpus.len() + regressions.len(),
        failures.join("\n")
    );
}

#[test]
fn every_target_has_a_test_here() {
    let mut names: Vec<&str> = bodies::TARGETS.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    let mut files: Vec<String> = inputs(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    files.sort_unstable();
    assert_eq!(names, files, "fuzz/fuzz_targets and bodies::TARGETS differ");
}

#[test]
fn forwarded_cert() {
    replay("forwarded_cert", bodies::forwarded_cert::run);
}

#[test]
fn query_canonical() {
    replay("query_canonical", bodies::query_canonical::run);
}

#[test]
fn index_filter() {
    replay("index_filter", bodies::index_filter::run);
}

#[test]
fn rack_form() {
    replay("rack_form", bodies::rack_form::run);
}

#[test]
fn names() {
    replay("names", bodies::names::run);
}

#[test]
fn plugin_output() {
    replay("plugin_output", bodies::plugin_output::run);
}
