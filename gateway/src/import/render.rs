//! The commented gateway.toml and the per-key report.

use std::fmt::Write as _;
use std::path::PathBuf;

/// The tables written, in the order of the shipped gateway.toml.
const TABLES: [&str; 5] = ["server", "pulp", "central", "management", "log"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TomlValue {
    Str(String),
    List(Vec<String>),
}

#[derive(Clone, Debug)]
struct TomlEntry {
    table: &'static str,
    key: &'static str,
    value: TomlValue,
    comment: Vec<String>,
}

/// A gateway.toml being written: keys with the comments that explain them.
#[derive(Clone, Debug, Default)]
pub struct Doc {
    header: Vec<String>,
    entries: Vec<TomlEntry>,
}

impl Doc {
    pub fn header(&mut self, line: impl Into<String>) {
        self.header.push(line.into());
    }

    pub fn set(
        &mut self,
        table: &'static str,
        key: &'static str,
        value: TomlValue,
        comment: Vec<String>,
    ) {
        debug_assert!(TABLES.contains(&table), "table {table} is not rendered");
        self.entries.retain(|e| !(e.table == table && e.key == key));
        self.entries.push(TomlEntry {
            table,
            key,
            value,
            comment,
        });
    }

    pub fn get(&self, table: &str, key: &str) -> Option<&TomlValue> {
        self.entries
            .iter()
            .find(|e| e.table == table && e.key == key)
            .map(|e| &e.value)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            push_comment(&mut out, line);
        }
        for table in TABLES {
            let entries: Vec<&TomlEntry> =
                self.entries.iter().filter(|e| e.table == table).collect();
            if entries.is_empty() {
                continue;
            }
            let _ = write!(out, "\n[{table}]\n");
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                for line in &e.comment {
                    push_comment(&mut out, line);
                }
                let _ = writeln!(out, "{} = {}", e.key, render_value(&e.value));
            }
        }
        out
    }
}

/// Comment text wraps at this width (after the `# `).
const COMMENT_WIDTH: usize = 78;

/// A comment, wrapped; a value quoted inside one cannot end it early or start
/// a key, because control characters are escaped.
fn push_comment(out: &mut String, text: &str) {
    let mut clean = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(clean, "\\u{{{:x}}}", c as u32);
        } else {
            clean.push(c);
        }
    }
    let indent: String = clean.chars().take_while(|c| *c == ' ').collect();
    let mut line = indent.clone();
    for word in clean.split(' ').filter(|w| !w.is_empty()) {
        if line.len() > indent.len()
            && line.chars().count() + 1 + word.chars().count() > COMMENT_WIDTH
        {
            let _ = writeln!(out, "# {line}");
            line.clone_from(&indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if line.is_empty() {
        out.push_str("#\n");
    } else {
        let _ = writeln!(out, "# {line}");
    }
}

fn render_value(v: &TomlValue) -> String {
    match v {
        TomlValue::Str(s) => toml_string(s),
        TomlValue::List(items) => {
            let inner: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What became of one source key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written to these gateway keys.
    To(Vec<String>),
    /// Not carried over, and why.
    NoEquivalent(String),
}

#[derive(Clone, Debug)]
pub struct Line {
    /// The key as written in the file (`:foreman_url:`).
    pub key: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug)]
pub struct SourceReport {
    pub path: PathBuf,
    pub lines: Vec<Line>,
}

/// A key absent from the files whose default went somewhere.
#[derive(Clone, Debug)]
pub struct DefaultLine {
    pub key: String,
    pub gateway_key: String,
    pub value: String,
    pub why: String,
}

/// Everything the import has to tell the admin.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub sources: Vec<SourceReport>,
    pub defaults: Vec<DefaultLine>,
    pub warnings: Vec<String>,
    /// (gateway key, path, error) for files the new configuration names but
    /// that cannot be opened now.
    pub unreadable: Vec<(String, String, String)>,
}

impl Report {
    /// The outcome for a key of the file at `path`, as written (`:foreman_url:`).
    pub fn outcome(&self, path: &std::path::Path, key: &str) -> Option<&Outcome> {
        self.sources
            .iter()
            .find(|s| s.path == path)
            .and_then(|s| s.lines.iter().find(|l| l.key == key))
            .map(|l| &l.outcome)
    }

    pub fn render(&self, output: Option<&std::path::Path>) -> String {
        let mut out = String::new();
        for source in &self.sources {
            let _ = writeln!(out, "{}:", source.path.display());
            if source.lines.is_empty() {
                out.push_str("  (no settings)\n");
            }
            let width = source
                .lines
                .iter()
                .map(|l| l.key.chars().count())
                .max()
                .unwrap_or(0);
            for l in &source.lines {
                match &l.outcome {
                    Outcome::To(keys) => {
                        let _ = writeln!(out, "  {:<width$}  -> {}", l.key, keys.join(", "));
                    }
                    Outcome::NoEquivalent(why) => {
                        let _ = writeln!(out, "  {:<width$}  no equivalent: {}", l.key, why);
                    }
                }
            }
        }
        if !self.defaults.is_empty() {
            out.push_str("Not set in the files, defaulted as the Ruby plugin does:\n");
            let width = self
                .defaults
                .iter()
                .map(|d| d.key.chars().count())
                .max()
                .unwrap_or(0);
            for d in &self.defaults {
                let _ = writeln!(
                    out,
                    "  {:<width$}  -> {} = {} ({})",
                    d.key, d.gateway_key, d.value, d.why
                );
            }
        }
        if !self.warnings.is_empty() {
            out.push_str("Warnings:\n");
            for w in &self.warnings {
                let _ = writeln!(out, "  - {w}");
            }
        }
        if !self.unreadable.is_empty() {
            out.push_str("Files the configuration names that cannot be read now (check-config needs them):\n");
            for (key, path, err) in &self.unreadable {
                let _ = writeln!(out, "  {key}: {path}: {err}");
            }
        }
        let config = output
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "PATH".to_owned());
        let _ = writeln!(
            out,
            "Next: container-gateway check-config --config {config}; then README, \"Migrating from smart_proxy_container_gateway\"."
        );
        out
    }
}
