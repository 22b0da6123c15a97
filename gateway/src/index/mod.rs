//! The Flatpak registry index (`/index/static`, `/index/dynamic`), filtered per
//! client.
//!
//! Pulp's index is parsed once per upstream body into an [`UpstreamIndex`] that
//! remembers, for every `Results` entry and every image, where its bytes lie in
//! that body. Filtering for a client then only concatenates those slices: kept
//! entries reach the client exactly as Pulp encoded them (compact, raw UTF-8),
//! and no JSON is parsed or re-encoded on the per-client path.
//!
//! # What a client receives
//!
//! `{"Registry":<registry_url ending in "/">,"Results":[...]}`, where `Results`
//! holds, in upstream order, the entries whose `Name` the client may see, with
//! these repairs so that flatpak >= 1.17.1 (which rejects the *whole* index
//! when one mandatory field is missing or has the wrong type) accepts it:
//!
//! * An entry that is not an object, has no string `Name`, repeats `Name`,
//!   `Images` or `Lists`, or has an `Images` that is neither an array nor
//!   `null`, is dropped: it cannot be authorised, or flatpak could read it
//!   differently from us.
//! * An image that is not an object, lacks a string `Digest` starting with
//!   `sha256:`, a string `MediaType`, `OS` or `Architecture`, has `Labels` or
//!   `Annotations` that are not objects of strings, `Tags` that is not an
//!   array, or repeats one of these members, is removed from its entry.
//! * `Images: null` or a missing `Images` becomes `"Images":[]` and the entry
//!   is kept with its other members: a flagstate-style server may carry the
//!   entry's images under `Lists`, which flatpak reads as well.
//! * `Lists` is passed through when every list in it is well-formed (string
//!   `Digest` and `MediaType`, `Images` an array of well-formed images, `Tags`
//!   an array), and omitted otherwise. Pulp never emits `Lists`; images inside
//!   lists are neither deduplicated nor reported by [`UpstreamIndex::refs`].
//! * Identical refs are served once: among the entries the client may see, an
//!   image whose (`org.flatpak.ref`, `Architecture`) already appeared earlier
//!   is removed, because flatpak would otherwise pick one of the duplicates at
//!   random. Images without `org.flatpak.ref` are never deduplicated.
//! * An entry left without images by these removals is dropped; an entry that
//!   had none upstream is kept (with `"Images":[]`).
//!
//! An entry that needs none of these repairs is copied byte for byte. One that
//! does is rebuilt from the raw bytes of its remaining members and images, so
//! even then no image's bytes change.

mod metadata;
mod parse;
#[doc(hidden)]
pub mod synth;
#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// Why an upstream index body could not be used at all.
#[derive(thiserror::Error, Debug)]
pub enum IndexError {
    #[error("index body is not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("index body is not valid JSON: expected {expected} at byte {offset}")]
    Json {
        offset: usize,
        expected: &'static str,
    },
    #[error("index body is not a JSON object")]
    NotAnObject,
    #[error("index body has no `Results` member")]
    MissingResults,
    #[error("index `Results` is not an array")]
    ResultsNotArray,
    #[error("index body has more than one `Results` member")]
    DuplicateResults,
}

/// Flatpak facts of one well-formed image that carries `org.flatpak.ref`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatpakRef {
    /// `Labels["org.flatpak.ref"]`, e.g. `app/org.test.Hello/x86_64/stable`.
    pub flatpak_ref: String,
    /// The image's OCI `Architecture`, e.g. `amd64`.
    pub architecture: String,
    /// `runtime=` of the `[Application]` or `[Runtime]` group of
    /// `Labels["org.flatpak.metadata"]`.
    pub runtime: Option<String>,
    /// `sdk=` of the same group.
    pub sdk: Option<String>,
}

/// The filtered index for one client.
#[derive(Clone, Debug)]
pub struct Filtered {
    pub body: Bytes,
    /// A strong entity tag (quoted) that depends only on `body`, so every
    /// gateway instance gives the same tag for the same bytes.
    pub etag: String,
    /// Entries written to `body`.
    pub kept: usize,
    /// Upstream entries not written: not visible, malformed, or left empty by
    /// deduplication.
    pub dropped: usize,
}

/// A byte range of the upstream body.
type Span = Range<usize>;

/// No dedupe key: the image has no `org.flatpak.ref`.
const NO_KEY: u32 = u32::MAX;

#[derive(Debug)]
struct Entry {
    raw: Span,
    /// Range in `UpstreamIndex::names`; `None` for an entry that is never served.
    name: Option<Range<usize>>,
    /// Range in `UpstreamIndex::images`.
    images: Range<usize>,
    /// Range in `UpstreamIndex::members`: every member except `Images` (and a
    /// malformed `Lists`), in upstream order.
    members: Range<usize>,
    /// How many of `members` precede `Images` when the entry is rebuilt.
    images_at: usize,
    /// `raw` can be served as is when no image is lost to deduplication.
    verbatim: bool,
}

#[derive(Debug)]
struct Image {
    raw: Span,
    ok: bool,
    key: u32,
}

#[derive(Debug)]
struct Member {
    /// The key as upstream wrote it, quotes included.
    key: Span,
    value: Span,
}

/// Where the facts behind one [`FlatpakRef`] lie in the body (JSON string
/// tokens); decoded on the first call to [`UpstreamIndex::refs`], so that a
/// parse does not pay for a feature that may not be used.
#[derive(Debug)]
struct RefSource {
    entry: usize,
    flatpak_ref: Span,
    architecture: Span,
    metadata: Option<Span>,
}

/// Pulp's index, parsed once per upstream body; cheap to share via `Arc`.
#[derive(Debug)]
pub struct UpstreamIndex {
    body: Bytes,
    entries: Vec<Entry>,
    images: Vec<Image>,
    members: Vec<Member>,
    names: String,
    /// Number of distinct (ref, architecture) keys.
    key_count: usize,
    ref_sources: Vec<RefSource>,
    /// (entry index, ref), built from `ref_sources` when first asked for.
    refs: OnceLock<Vec<(usize, FlatpakRef)>>,
}

/// What a filter pass decided for one entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plan {
    Skip,
    Verbatim,
    Rebuild,
}

impl UpstreamIndex {
    /// Parse Pulp's body once. Fails if the body is not one JSON object, or its
    /// `Results` is missing or not an array; `"Results": null` is empty.
    /// Entries that are unusable do not fail the parse: they are dropped when
    /// filtering.
    pub fn parse(body: Bytes) -> Result<UpstreamIndex, IndexError> {
        parse::parse(body)
    }

    /// About how much memory this index holds: the upstream body (its whole
    /// allocation) and the tables built over it.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.body.len()
            + self.entries.capacity() * size_of::<Entry>()
            + self.images.capacity() * size_of::<Image>()
            + self.members.capacity() * size_of::<Member>()
            + self.names.capacity()
            + self.ref_sources.capacity() * size_of::<RefSource>()
    }

    /// Number of upstream `Results` entries, usable or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names of the entries that can be served, in upstream order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter_map(|e| e.name.clone().map(|r| self.name_str(r)))
    }

    /// Every well-formed image carrying `org.flatpak.ref`, with the name of
    /// the entry holding it, in upstream order. Duplicates are included.
    pub fn refs(&self) -> impl Iterator<Item = (&str, &FlatpakRef)> {
        let refs = self.refs.get_or_init(|| {
            self.ref_sources
                .iter()
                .filter_map(|src| Some((src.entry, self.decode_ref(src)?)))
                .collect()
        });
        refs.iter().filter_map(|(entry, r)| {
            let name = self.entries.get(*entry)?.name.clone()?;
            Some((self.name_str(name), r))
        })
    }

    /// Write the index one client sees: entries whose name passes `visible`,
    /// repaired and deduplicated as described in the module documentation.
    /// `visible` is called once per servable entry.
    pub fn filter(&self, registry_url: &str, visible: &dyn Fn(&str) -> bool) -> Filtered {
        let mut seen = vec![false; self.key_count];
        let mut keep = vec![false; self.images.len()];
        let mut plans = Vec::with_capacity(self.entries.len());
        let mut size = registry_url.len() * 6 + 32;

        for entry in &self.entries {
            let plan = match &entry.name {
                Some(name) if visible(self.name_str(name.clone())) => {
                    self.plan_entry(entry, &mut seen, &mut keep)
                }
                _ => Plan::Skip,
            };
            if plan != Plan::Skip {
                // A rebuild never outgrows the upstream entry by more than the
                // `"Images":[]` it may add, plus the separator.
                size += entry.raw.len() + 16;
            }
            plans.push(plan);
        }

        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"{\"Registry\":");
        write_json_str(&mut out, registry_url);
        if !registry_url.ends_with('/') {
            // Flatpak resolves `v2/<name>/...` against Registry: without the
            // slash it would drop the last path segment.
            out.pop();
            out.extend_from_slice(b"/\"");
        }
        out.extend_from_slice(b",\"Results\":[");
        let mut kept = 0;
        for (entry, plan) in self.entries.iter().zip(&plans) {
            if *plan == Plan::Skip {
                continue;
            }
            if kept > 0 {
                out.push(b',');
            }
            kept += 1;
            match plan {
                Plan::Verbatim => out.extend_from_slice(self.slice(&entry.raw)),
                _ => self.rebuild(entry, &keep, &mut out),
            }
        }
        out.extend_from_slice(b"]}");

        let etag = etag(&out);
        Filtered {
            body: Bytes::from(out),
            etag,
            kept,
            dropped: self.entries.len() - kept,
        }
    }

    fn plan_entry(&self, entry: &Entry, seen: &mut [bool], keep: &mut [bool]) -> Plan {
        let mut all = entry.verbatim;
        let mut any = false;
        for i in entry.images.clone() {
            let Some(image) = self.images.get(i) else {
                continue;
            };
            let mut k = image.ok;
            if k && image.key != NO_KEY
                && let Some(s) = seen.get_mut(image.key as usize)
            {
                k = !*s;
                *s = true;
            }
            if let Some(slot) = keep.get_mut(i) {
                *slot = k;
            }
            all &= k;
            any |= k;
        }
        if all {
            Plan::Verbatim
        } else if any || entry.images.is_empty() {
            Plan::Rebuild
        } else {
            Plan::Skip
        }
    }

    fn rebuild(&self, entry: &Entry, keep: &[bool], out: &mut Vec<u8>) {
        let members = self.members.get(entry.members.clone()).unwrap_or(&[]);
        let (before, after) = members.split_at(entry.images_at.min(members.len()));
        out.push(b'{');
        for m in before {
            self.write_member(m, out);
            out.push(b',');
        }
        out.extend_from_slice(b"\"Images\":[");
        let mut first = true;
        for i in entry.images.clone() {
            if !keep.get(i).copied().unwrap_or(false) {
                continue;
            }
            if let Some(image) = self.images.get(i) {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(self.slice(&image.raw));
            }
        }
        out.push(b']');
        for m in after {
            out.push(b',');
            self.write_member(m, out);
        }
        out.push(b'}');
    }

    fn write_member(&self, m: &Member, out: &mut Vec<u8>) {
        out.extend_from_slice(self.slice(&m.key));
        out.push(b':');
        out.extend_from_slice(self.slice(&m.value));
    }

    /// Spans are checked against the body when they are recorded, so the
    /// fallback is never taken.
    fn slice(&self, span: &Span) -> &[u8] {
        self.body.get(span.clone()).unwrap_or_default()
    }

    fn name_str(&self, range: Range<usize>) -> &str {
        self.names.get(range).unwrap_or_default()
    }

    fn decode_ref(&self, src: &RefSource) -> Option<FlatpakRef> {
        let (runtime, sdk) = match &src.metadata {
            Some(span) => metadata::runtime_and_sdk(&self.json_string(span)?),
            None => (None, None),
        };
        Some(FlatpakRef {
            flatpak_ref: self.json_string(&src.flatpak_ref)?,
            architecture: self.json_string(&src.architecture)?,
            runtime,
            sdk,
        })
    }

    /// The text of a JSON string token that the parser checked.
    fn json_string(&self, span: &Span) -> Option<String> {
        serde_json::from_slice(self.slice(span)).ok()
    }
}

/// `"` + the first 128 bits of SHA-256 in hex + `"`.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    tag.push_str(&hex::encode(&digest[..16]));
    tag.push('"');
    tag
}

/// Gzip `body` for `Content-Encoding: gzip`.
///
/// Level 1: an index is mostly base64 icons, digests and commit hashes, on
/// which level 6 gains about 15% in size for a sixth of the speed (measured on
/// Pulp's index and on the synthetic one).
pub fn gzip(body: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    match enc.write_all(body).and_then(|()| enc.finish()) {
        Ok(v) => Bytes::from(v),
        // Writing into a Vec cannot fail; should the encoder ever report an
        // error anyway, a stored (uncompressed) gzip member is still correct.
        Err(_) => Bytes::from(gzip_stored(body)),
    }
}

/// A gzip member holding `body` in stored deflate blocks.
fn gzip_stored(body: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 0xffff;
    let mut out = Vec::with_capacity(body.len() + body.len() / MAX_BLOCK * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = body.chunks(MAX_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32 by definition.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out
}

/// Append `s` as a JSON string. Like Pulp, non-ASCII stays raw UTF-8; U+2028
/// and U+2029 are escaped so the output is also valid JavaScript.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            '\u{2028}' => b"\\u2028",
            '\u{2029}' => b"\\u2029",
            c if (c as u32) < 0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if esc.is_empty() {
            let b = c as u8;
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}
