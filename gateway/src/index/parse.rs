//! One pass over Pulp's body that records byte ranges and validity.
//!
//! serde_json cannot report positions, but with `from_str` every borrowed
//! `&RawValue` and unescaped `&str` is a slice of the input, so its offset in
//! the body is pointer arithmetic. Each `Results` entry is taken as a
//! `&RawValue` and then parsed again from that slice (and each image from its
//! own slice): the nested passes run over a few kilobytes that are still in
//! cache, which costs far less than a second pass over the whole body would.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::metadata;
use super::{Entry, FlatpakRef, Image, IndexError, Member, MemberKey, NO_KEY, Span, UpstreamIndex};

pub(super) fn parse(body: Bytes) -> Result<UpstreamIndex, IndexError> {
    let text = std::str::from_utf8(&body)?;
    if !text.trim_start().starts_with('{') {
        // serde_json would say "invalid type", which hides what went wrong.
        return match serde_json::from_str::<IgnoredAny>(text) {
            Err(e) => Err(IndexError::Json(e)),
            Ok(_) => Err(IndexError::NotAnObject),
        };
    }
    let mut b = Builder {
        base: text.as_ptr() as usize,
        len: text.len(),
        entries: Vec::new(),
        images: Vec::new(),
        members: Vec::new(),
        names: String::new(),
        keys: HashMap::new(),
        refs: Vec::new(),
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let results = TopSeed { b: &mut b }.deserialize(&mut de);
    if let Some(failure) = b.failure.take() {
        return Err(failure);
    }
    let results = results?;
    de.end()?;
    match results {
        Results::Present => {}
        Results::Missing => return Err(IndexError::MissingResults),
        Results::NotArray => return Err(IndexError::ResultsNotArray),
        Results::Duplicate => return Err(IndexError::DuplicateResults),
    }
    Ok(UpstreamIndex {
        key_count: b.keys.len(),
        body,
        entries: b.entries,
        images: b.images,
        members: b.members,
        names: b.names,
        refs: b.refs,
    })
}

struct Builder {
    base: usize,
    len: usize,
    entries: Vec<Entry>,
    images: Vec<Image>,
    members: Vec<Member>,
    names: String,
    keys: HashMap<(Box<str>, Box<str>), u32>,
    refs: Vec<(usize, FlatpakRef)>,
    /// An error that must fail the whole parse even though it arose inside a
    /// nested parse whose own errors only mark an entry malformed.
    failure: Option<IndexError>,
}

impl Builder {
    fn span(&self, s: &str) -> Option<Span> {
        let start = (s.as_ptr() as usize).checked_sub(self.base)?;
        let end = start.checked_add(s.len())?;
        (end <= self.len).then_some(start..end)
    }

    fn span_or_fail(&mut self, s: &str) -> Option<Span> {
        let span = self.span(s);
        if span.is_none() {
            self.failure.get_or_insert(IndexError::OutsideBody);
        }
        span
    }

    fn add_entry(&mut self, raw: &str) {
        let Some(span) = self.span_or_fail(raw) else {
            return;
        };
        let marks = (self.images.len(), self.members.len(), self.names.len(), self.refs.len());
        let index = self.entries.len();
        let mut de = serde_json::Deserializer::from_str(raw);
        let parsed = EntrySeed { b: self, index }.deserialize(&mut de).ok();
        let entry = match parsed {
            Some(EntryInfo {
                name: Some(name),
                images: images @ (ImagesState::Array | ImagesState::Null | ImagesState::Absent),
                images_at,
                duplicate: false,
                lists_ok,
            }) => Entry {
                raw: span,
                name: Some(name),
                images: marks.0..self.images.len(),
                members: marks.1..self.members.len(),
                images_at: images_at.unwrap_or(self.members.len() - marks.1),
                verbatim: images == ImagesState::Array
                    && lists_ok
                    && self.images[marks.0..].iter().all(|i| i.ok),
            },
            _ => {
                self.images.truncate(marks.0);
                self.members.truncate(marks.1);
                self.names.truncate(marks.2);
                self.refs.truncate(marks.3);
                Entry {
                    raw: span,
                    name: None,
                    images: marks.0..marks.0,
                    members: marks.1..marks.1,
                    images_at: 0,
                    verbatim: false,
                }
            }
        };
        self.entries.push(entry);
    }

    fn add_image(&mut self, raw: &str, entry: usize) {
        let Some(span) = self.span_or_fail(raw) else {
            return;
        };
        let info = parse_image(raw);
        let mut key = NO_KEY;
        if let Some(info) = info.as_ref().filter(|i| i.ok) {
            if let (Some(flatpak_ref), Some(arch)) = (&info.flatpak_ref, &info.architecture) {
                let next = u32::try_from(self.keys.len()).unwrap_or(NO_KEY);
                key = *self
                    .keys
                    .entry((Box::from(flatpak_ref.as_ref()), Box::from(arch.as_ref())))
                    .or_insert(next);
                let (runtime, sdk) = info
                    .metadata
                    .as_deref()
                    .map(metadata::runtime_and_sdk)
                    .unwrap_or_default();
                self.refs.push((
                    entry,
                    FlatpakRef {
                        flatpak_ref: flatpak_ref.clone().into_owned(),
                        architecture: arch.clone().into_owned(),
                        runtime,
                        sdk,
                    },
                ));
            }
        }
        self.images.push(Image {
            raw: span,
            ok: info.is_some_and(|i| i.ok),
            key,
        });
    }

    fn member_key(&mut self, key: &Key<'_>) -> Option<MemberKey> {
        match key {
            Key::Borrowed(s) => {
                let inner = self.span_or_fail(s)?;
                // The quotes around an unescaped key are its raw bytes.
                Some(MemberKey::Raw(inner.start.checked_sub(1)?..inner.end + 1))
            }
            Key::Owned(s) => {
                let mut out = Vec::with_capacity(s.len() + 8);
                super::write_json_str(&mut out, s);
                Some(MemberKey::Encoded(String::from_utf8(out).ok()?.into_boxed_str()))
            }
        }
    }
}

// ---- keys ----------------------------------------------------------------

enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// The decoded value of a raw JSON string, borrowed when it has no escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(s).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// Drains a map or sequence the visitor does not want, so that a visitor can
/// answer "wrong type" for any JSON value instead of failing the parse.
macro_rules! other_types {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

// ---- top level -------------------------------------------------------------

enum Results {
    Missing,
    Present,
    NotArray,
    Duplicate,
}

struct TopSeed<'a> {
    b: &'a mut Builder,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Results;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Results, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Results;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Flatpak index object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Results, A::Error> {
        let mut state = Results::Missing;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.as_str() != "Results" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if matches!(state, Results::Missing) {
                state = map.next_value_seed(ResultsSeed { b: &mut *self.b })?;
            } else {
                map.next_value::<IgnoredAny>()?;
                state = Results::Duplicate;
            }
        }
        Ok(state)
    }
}

struct ResultsSeed<'a> {
    b: &'a mut Builder,
}

impl<'de> DeserializeSeed<'de> for ResultsSeed<'_> {
    type Value = Results;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Results, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResultsSeed<'_> {
    type Value = Results;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of repositories")
    }
    other_types!(Results::NotArray);
    fn visit_unit<E: de::Error>(self) -> Result<Results, E> {
        Ok(Results::Present)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Results, A::Error> {
        drain_map(map)?;
        Ok(Results::NotArray)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Results, A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            self.b.add_entry(raw.get());
        }
        Ok(Results::Present)
    }
}

// ---- entries ---------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum ImagesState {
    Absent,
    Null,
    Array,
    Invalid,
}

struct EntryInfo {
    name: Option<std::ops::Range<usize>>,
    images: ImagesState,
    /// Members recorded before `Images` was seen.
    images_at: Option<usize>,
    duplicate: bool,
    lists_ok: bool,
}

struct EntrySeed<'a> {
    b: &'a mut Builder,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = EntryInfo;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<EntryInfo, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = EntryInfo;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a repository object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntryInfo, A::Error> {
        let b = self.b;
        let members_start = b.members.len();
        let mut info = EntryInfo {
            name: None,
            images: ImagesState::Absent,
            images_at: None,
            duplicate: false,
            lists_ok: true,
        };
        let mut seen_name = false;
        let mut seen_lists = false;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.as_str() {
                "Images" => {
                    info.duplicate |= info.images != ImagesState::Absent;
                    info.images_at = Some(b.members.len() - members_start);
                    info.images = map.next_value_seed(ImagesSeed {
                        b: &mut *b,
                        entry: self.index,
                    })?;
                    continue;
                }
                "Name" => {
                    info.duplicate |= seen_name;
                    seen_name = true;
                    let raw = map.next_value::<&'de RawValue>()?;
                    if let Some(name) = json_str(raw) {
                        let start = b.names.len();
                        b.names.push_str(&name);
                        info.name = Some(start..b.names.len());
                    }
                    push_member(b, &key, raw);
                }
                "Lists" => {
                    info.duplicate |= seen_lists;
                    seen_lists = true;
                    let raw = map.next_value::<&'de RawValue>()?;
                    if lists_ok(raw) {
                        push_member(b, &key, raw);
                    } else {
                        info.lists_ok = false;
                    }
                }
                _ => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    push_member(b, &key, raw);
                }
            }
        }
        Ok(info)
    }
}

fn push_member(b: &mut Builder, key: &Key<'_>, raw: &RawValue) {
    let (Some(key), Some(value)) = (b.member_key(key), b.span_or_fail(raw.get())) else {
        return;
    };
    b.members.push(Member { key, value });
}

struct ImagesSeed<'a> {
    b: &'a mut Builder,
    entry: usize,
}

impl<'de> DeserializeSeed<'de> for ImagesSeed<'_> {
    type Value = ImagesState;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ImagesState, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ImagesSeed<'_> {
    type Value = ImagesState;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of images")
    }
    other_types!(ImagesState::Invalid);
    fn visit_unit<E: de::Error>(self) -> Result<ImagesState, E> {
        Ok(ImagesState::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ImagesState, A::Error> {
        drain_map(map)?;
        Ok(ImagesState::Invalid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ImagesState, A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            self.b.add_image(raw.get(), self.entry);
        }
        Ok(ImagesState::Array)
    }
}

/// `Lists` as flatpak reads it: `null`, or an array of objects with string
/// `Digest` and `MediaType`, `Images` an array of well-formed images, and
/// `Tags` null or an array.
fn lists_ok(raw: &RawValue) -> bool {
    if is_null(raw) {
        return true;
    }
    match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
        Ok(lists) => lists.into_iter().all(list_ok),
        Err(_) => false,
    }
}

fn list_ok(raw: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct List<'a> {
        #[serde(rename = "Digest", borrow)]
        digest: &'a RawValue,
        #[serde(rename = "MediaType", borrow)]
        media_type: &'a RawValue,
        #[serde(rename = "Images", borrow)]
        images: Vec<&'a RawValue>,
        #[serde(rename = "Tags", borrow, default)]
        tags: Option<&'a RawValue>,
    }
    // Duplicate members are rejected by the derive, which is what we want.
    let Ok(list) = serde_json::from_str::<List<'_>>(raw.get()) else {
        return false;
    };
    json_str(list.digest).is_some()
        && json_str(list.media_type).is_some()
        && list.tags.is_none_or(|t| is_null(t) || t.get().starts_with('['))
        && list
            .images
            .iter()
            .all(|i| parse_image(i.get()).is_some_and(|i| i.ok))
}

// ---- images ----------------------------------------------------------------

struct ImageInfo<'de> {
    ok: bool,
    architecture: Option<Cow<'de, str>>,
    flatpak_ref: Option<Cow<'de, str>>,
    metadata: Option<Cow<'de, str>>,
}

/// `None` when `raw` is not an object.
fn parse_image(raw: &str) -> Option<ImageInfo<'_>> {
    let mut de = serde_json::Deserializer::from_str(raw);
    (&mut de).deserialize_map(ImageVisitor).ok()
}

struct ImageVisitor;

impl<'de> Visitor<'de> for ImageVisitor {
    type Value = ImageInfo<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an image object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ImageInfo<'de>, A::Error> {
        let mut ok = true;
        // Digest, MediaType, OS, Architecture, Labels, Annotations, Tags.
        let mut seen = [false; 7];
        let mut digest_ok = false;
        let mut media_type = false;
        let mut os = false;
        let mut architecture = None;
        let mut labels = Labels::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let slot = match key.as_str() {
                "Digest" => 0,
                "MediaType" => 1,
                "OS" => 2,
                "Architecture" => 3,
                "Labels" => 4,
                "Annotations" => 5,
                "Tags" => 6,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            ok &= !std::mem::replace(&mut seen[slot], true);
            match slot {
                0 => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    digest_ok = json_str(raw).is_some_and(|d| d.starts_with("sha256:"));
                }
                1 => media_type = json_str(map.next_value::<&'de RawValue>()?).is_some(),
                2 => os = json_str(map.next_value::<&'de RawValue>()?).is_some(),
                3 => architecture = json_str(map.next_value::<&'de RawValue>()?),
                4 => labels = map.next_value_seed(LabelsSeed { capture: true })?,
                5 => ok &= map.next_value_seed(LabelsSeed { capture: false })?.ok,
                _ => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    ok &= is_null(raw) || raw.get().starts_with('[');
                }
            }
        }
        Ok(ImageInfo {
            ok: ok && digest_ok && media_type && os && architecture.is_some() && labels.ok,
            architecture,
            flatpak_ref: labels.flatpak_ref,
            metadata: labels.metadata,
        })
    }
}

struct Labels<'de> {
    ok: bool,
    flatpak_ref: Option<Cow<'de, str>>,
    metadata: Option<Cow<'de, str>>,
}

impl Default for Labels<'_> {
    fn default() -> Self {
        Labels {
            ok: true,
            flatpak_ref: None,
            metadata: None,
        }
    }
}

/// A string map as flatpak requires for `Labels` and `Annotations`: `null`,
/// or an object whose values are all strings.
struct LabelsSeed {
    capture: bool,
}

impl<'de> DeserializeSeed<'de> for LabelsSeed {
    type Value = Labels<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Labels<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed {
    type Value = Labels<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of strings")
    }
    other_types!(Labels {
        ok: false,
        ..Labels::default()
    });
    fn visit_unit<E: de::Error>(self) -> Result<Labels<'de>, E> {
        Ok(Labels::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Labels<'de>, A::Error> {
        drain_seq(seq)?;
        Ok(Labels {
            ok: false,
            ..Labels::default()
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels<'de>, A::Error> {
        let mut labels = Labels::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            // Taking every value raw checks that it is a string without
            // unescaping it.
            let raw = map.next_value::<&'de RawValue>()?;
            if !raw.get().starts_with('"') {
                labels.ok = false;
                continue;
            }
            if !self.capture {
                continue;
            }
            let slot = match key.as_str() {
                "org.flatpak.ref" => &mut labels.flatpak_ref,
                "org.flatpak.metadata" => &mut labels.metadata,
                _ => continue,
            };
            // Two refs make the dedupe key ambiguous.
            labels.ok &= slot.is_none();
            *slot = json_str(raw);
        }
        Ok(labels)
    }
}
