//! "Why does this host see what it sees?": the repositories an identity may
//! see, where that came from, the Flatpak refs it gets from the current index,
//! and every app whose runtime (or SDK) it cannot see, with the repository that
//! holds the missing ref.

pub mod command;
pub mod live;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use crate::index::UpstreamIndex;
use crate::state::{RepoSet, Snapshot};

/// One Flatpak ref a client gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VisibleRef {
    pub flatpak_ref: String,
    pub architecture: String,
    pub repository: String,
}

/// An app that needs a ref the client cannot see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MissingDependency {
    pub app: String,
    pub app_repository: String,
    /// `runtime` or `sdk`.
    pub kind: &'static str,
    /// The ref needed, e.g. `runtime/org.fedoraproject.Platform/x86_64/f42`.
    pub needs: String,
    /// Repositories in the index that hold it (none: Pulp does not have it at all).
    pub held_by: Vec<String>,
}

/// What one identity gets from one index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeReport {
    pub refs: Vec<VisibleRef>,
    pub missing: Vec<MissingDependency>,
}

impl RuntimeReport {
    /// Apps lacking their runtime (SDKs are only needed to build, so they do
    /// not count towards the warning).
    pub fn apps_missing_runtime(&self) -> usize {
        self.missing
            .iter()
            .filter(|m| m.kind == "runtime")
            .map(|m| &m.app)
            .collect::<HashSet<_>>()
            .len()
    }
}

/// The refs a client sees, and the dependencies of its apps that it does not.
pub fn runtime_report(index: &UpstreamIndex, visible: &dyn Fn(&str) -> bool) -> RuntimeReport {
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut report = RuntimeReport::default();
    let mut apps = Vec::new();
    for (repository, r) in index.refs() {
        holders
            .entry(r.flatpak_ref.as_str())
            .or_default()
            .insert(repository);
        if !visible(repository) {
            continue;
        }
        seen.insert(r.flatpak_ref.as_str());
        report.refs.push(VisibleRef {
            flatpak_ref: r.flatpak_ref.clone(),
            architecture: r.architecture.clone(),
            repository: repository.to_owned(),
        });
        if r.flatpak_ref.starts_with("app/") {
            apps.push((repository, r));
        }
    }
    let mut flagged = HashSet::new();
    for (repository, app) in apps {
        for (kind, dependency) in [("runtime", &app.runtime), ("sdk", &app.sdk)] {
            let Some(dependency) = dependency else {
                continue;
            };
            let needs = format!("runtime/{dependency}");
            if seen.contains(needs.as_str()) || !flagged.insert((app.flatpak_ref.as_str(), kind)) {
                continue;
            }
            report.missing.push(MissingDependency {
                app: app.flatpak_ref.clone(),
                app_repository: repository.to_owned(),
                kind,
                held_by: holders
                    .get(needs.as_str())
                    .map(|h| h.iter().map(|s| (*s).to_owned()).collect())
                    .unwrap_or_default(),
                needs,
            });
        }
    }
    report
}

/// One repository an identity may see, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entitled {
    pub name: String,
    /// `public` (anyone) or `granted` (by the identity's mapping).
    pub reason: &'static str,
}

/// Every repository on the pushed list that an identity with `granted` may see.
pub fn entitled(snapshot: &Snapshot, granted: Option<&RepoSet>) -> Vec<Entitled> {
    snapshot
        .repository_names()
        .iter()
        .filter(|n| snapshot.visible(n, granted))
        .map(|n| Entitled {
            name: n.to_string(),
            reason: if snapshot.is_public(n) {
                "public"
            } else {
                "granted"
            },
        })
        .collect()
}

/// The whole answer for one identity.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// `host:<uuid>`, `user:<login>` or `anonymous`.
    pub identity: String,
    /// Where the identity's mapping came from: `pushed`, `central`, `stale central`, `none`.
    pub source: String,
    pub age_secs: Option<u64>,
    pub repositories: Vec<Entitled>,
    pub index: Option<RuntimeReport>,
    pub index_error: Option<String>,
}

impl Explanation {
    /// The human-readable form `container-gateway explain` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let age = self
            .age_secs
            .map(|a| format!(", {a} s old"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "identity: {}\nmapping:  {}{age}",
            self.identity, self.source
        );
        let _ = writeln!(
            out,
            "\nrepositories it may see ({}):",
            self.repositories.len()
        );
        for r in &self.repositories {
            let _ = writeln!(out, "  {:<60} {}", r.name, r.reason);
        }
        match (&self.index, &self.index_error) {
            (Some(index), _) => {
                let _ = writeln!(out, "\nFlatpak refs it gets ({}):", index.refs.len());
                for r in &index.refs {
                    let _ = writeln!(
                        out,
                        "  {:<60} {:<8} from {}",
                        r.flatpak_ref, r.architecture, r.repository
                    );
                }
                if index.missing.is_empty() {
                    let _ = writeln!(out, "\nevery app's runtime and SDK is visible to it");
                } else {
                    let _ = writeln!(
                        out,
                        "\napps whose dependencies it cannot see ({}):",
                        index.missing.len()
                    );
                    for m in &index.missing {
                        let held = if m.held_by.is_empty() {
                            "no repository in Pulp's index holds it".to_owned()
                        } else {
                            format!("held by {}", m.held_by.join(", "))
                        };
                        let _ = writeln!(
                            out,
                            "  {} (in {}) needs {} {}: {held}",
                            m.app, m.app_repository, m.kind, m.needs
                        );
                    }
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "\nFlatpak index unavailable: {e}");
            }
            (None, None) => {}
        }
        out
    }
}

#[cfg(test)]
mod tests;
