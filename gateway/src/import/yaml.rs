//! foreman-proxy's settings files: one YAML document, a mapping whose keys are
//! Ruby symbols (`:foreman_url: https://...`). Psych keeps the symbols; we keep
//! the name without its leading colon and remember how it was written, so the
//! report quotes the admin's own spelling.

use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use super::ImportError;

/// A setting's value, reduced to the shapes smart-proxy settings take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string, number or boolean, as text.
    Scalar(String),
    /// A list of scalars (`:trusted_hosts:`).
    List(Vec<String>),
    /// `~`, `null` or nothing after the colon: Ruby's nil, which the plugin's
    /// `||=` defaults replace.
    Null,
    /// Anything else (a mapping, a list of mappings): named for the error.
    Other(&'static str),
}

/// One `key: value` line of a settings file.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The name without the symbol's colon: `foreman_url`.
    pub name: String,
    /// The key as written: `:foreman_url:`.
    pub written: String,
    pub value: Value,
    /// 1-based line of the key, 0 when it could not be found in the text.
    pub line: usize,
}

/// A settings file, read and parsed, in file order.
#[derive(Clone, Debug)]
pub struct SettingsFile {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

/// Where a value came from, for the comments and the report.
#[derive(Clone, Debug)]
pub struct Origin {
    pub written: String,
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.written, self.path.display())?;
        if self.line > 0 {
            write!(f, " (line {})", self.line)?;
        }
        Ok(())
    }
}

impl SettingsFile {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<SettingsFile, ImportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ImportError::Unreadable {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        SettingsFile::parse(path, &text)
    }

    /// Parse `text`, naming `path` in every error.
    pub fn parse(path: &Path, text: &str) -> Result<SettingsFile, ImportError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| ImportError::Malformed {
            path: path.to_owned(),
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: scan_message(e.info()),
        })?;
        // smart-proxy reads the first document only (`YAML.load`), and treats
        // an empty file as no settings at all.
        let root = match docs.into_iter().next() {
            None | Some(Yaml::Null) => {
                return Ok(SettingsFile {
                    path: path.to_owned(),
                    entries: Vec::new(),
                });
            }
            Some(root) => root,
        };
        let Yaml::Hash(hash) = root else {
            return Err(ImportError::Malformed {
                path: path.to_owned(),
                line: first_content_line(text),
                column: 1,
                message: format!(
                    "expected a mapping of settings (`:name: value` lines), found {}",
                    describe(&root)
                ),
            });
        };
        let mut entries = Vec::with_capacity(hash.len());
        for (key, value) in hash {
            let written_key = match &key {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                Yaml::Real(r) => r.clone(),
                other => {
                    return Err(ImportError::Malformed {
                        path: path.to_owned(),
                        line: first_content_line(text),
                        column: 1,
                        message: format!(
                            "a setting's name must be a plain word, found {}",
                            describe(other)
                        ),
                    });
                }
            };
            let name = written_key
                .strip_prefix(':')
                .unwrap_or(&written_key)
                .to_owned();
            let line = key_line(text, &written_key);
            entries.push(Entry {
                written: if written_key.starts_with(':') {
                    format!("{written_key}:")
                } else {
                    written_key.clone()
                },
                name,
                value: reduce(&value),
                line,
            });
        }
        Ok(SettingsFile {
            path: path.to_owned(),
            entries,
        })
    }

    /// The entry for `name` (without the colon). A file may spell one setting
    /// both as a symbol and as a plain string; Ruby would see two settings and
    /// the plugin reads the symbol, so the symbol wins here too.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.name == name && e.written.starts_with(':'))
            .or_else(|| self.entries.iter().find(|e| e.name == name))
    }

    pub fn origin(&self, entry: &Entry) -> Origin {
        Origin {
            written: entry.written.clone(),
            path: self.path.clone(),
            line: entry.line,
        }
    }

    /// A single-valued setting: `None` when absent, nil or empty (the Ruby
    /// plugin's `||=` and `fetch` defaults apply then, and an empty path names
    /// no file anyway).
    pub fn scalar(&self, name: &str) -> Result<Option<(String, Origin)>, ImportError> {
        let Some(entry) = self.get(name) else {
            return Ok(None);
        };
        match &entry.value {
            Value::Scalar(s) if s.trim().is_empty() => Ok(None),
            Value::Scalar(s) => Ok(Some((s.trim().to_owned(), self.origin(entry)))),
            Value::Null => Ok(None),
            Value::List(_) => Err(self.invalid(entry, "must be a single value, not a list")),
            Value::Other(what) => {
                Err(self.invalid(entry, &format!("must be a single value, not {what}")))
            }
        }
    }

    /// A list setting. A lone scalar is taken as a one-element list: it is what
    /// an admin who wrote `:trusted_hosts: katello.example.com` meant.
    pub fn list(&self, name: &str) -> Result<Option<(Vec<String>, Origin)>, ImportError> {
        let Some(entry) = self.get(name) else {
            return Ok(None);
        };
        let items = match &entry.value {
            Value::List(items) => items.clone(),
            Value::Scalar(s) if s.trim().is_empty() => Vec::new(),
            Value::Scalar(s) => vec![s.clone()],
            Value::Null => Vec::new(),
            Value::Other(what) => {
                return Err(self.invalid(entry, &format!("must be a list of names, not {what}")));
            }
        };
        let items = items
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Some((items, self.origin(entry))))
    }

    pub fn invalid(&self, entry: &Entry, message: &str) -> ImportError {
        ImportError::Invalid {
            path: self.path.clone(),
            line: entry.line,
            key: entry.written.clone(),
            message: message.to_owned(),
        }
    }
}

/// The parser's message, with a duplicated key named as the admin wrote it
/// rather than as the parser's debug form (`String(":enabled")`).
fn scan_message(info: &str) -> String {
    if let Some(key) = info.strip_suffix(": duplicated key in mapping") {
        let key = key
            .strip_prefix("String(\"")
            .and_then(|k| k.strip_suffix("\")"))
            .unwrap_or(key);
        return format!("not valid YAML: {key}: is set twice");
    }
    format!("not valid YAML: {info}")
}

fn reduce(value: &Yaml) -> Value {
    match value {
        Yaml::Null => Value::Null,
        Yaml::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match scalar_text(item) {
                    Some(s) => out.push(s),
                    None if matches!(item, Yaml::Null) => {}
                    None => {
                        return Value::Other("a list holding something other than plain values");
                    }
                }
            }
            Value::List(out)
        }
        Yaml::Hash(_) => Value::Other("a mapping"),
        other => match scalar_text(other) {
            Some(s) => Value::Scalar(s),
            None => Value::Other("an alias or unsupported value"),
        },
    }
}

fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(value: &Yaml) -> &'static str {
    match value {
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::String(_) | Yaml::Real(_) | Yaml::Integer(_) | Yaml::Boolean(_) => "a single value",
        Yaml::Null => "nothing",
        Yaml::Alias(_) | Yaml::BadValue => "an unsupported value",
    }
}

/// The line of a top-level key. The parsed tree carries no positions, and a
/// settings file is flat, so a key is a line that starts with it.
fn key_line(text: &str, key: &str) -> usize {
    let quoted = [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ];
    text.lines()
        .position(|l| quoted.iter().any(|q| l.starts_with(q.as_str())))
        .map(|i| i + 1)
        .unwrap_or(0)
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && t != "---"
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}
