//! One validating pass over Pulp's body that records byte ranges.
//!
//! serde_json cannot report where a value lies in its input. Recovering that
//! through nested borrowed `&RawValue`s scans every label three times (entry,
//! image, label value), and labels are nearly all of an index. This scanner
//! reads the body once, knows every position as it goes, and checks the same
//! grammar as serde_json (differentially tested against it). Its nesting is
//! fixed (document, entry, image, labels); arbitrary values are skipped with a
//! heap stack, so hostile nesting cannot exhaust the thread's stack.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;

use super::{Entry, Image, IndexError, Member, NO_KEY, RefSource, Span, UpstreamIndex};

pub(super) fn parse(body: Bytes) -> Result<UpstreamIndex, IndexError> {
    let text = std::str::from_utf8(&body)?;
    let mut p = Parser {
        text,
        s: text.as_bytes(),
        pos: 0,
        entries: Vec::new(),
        images: Vec::new(),
        members: Vec::new(),
        names: String::new(),
        keys: HashMap::new(),
        ref_sources: Vec::new(),
    };
    let results = p.document().map_err(|e| IndexError::Json {
        offset: e.offset,
        expected: e.expected,
    })?;
    match results {
        Results::Present => {}
        Results::NotAnObject => return Err(IndexError::NotAnObject),
        Results::Missing => return Err(IndexError::MissingResults),
        Results::NotArray => return Err(IndexError::ResultsNotArray),
        Results::Duplicate => return Err(IndexError::DuplicateResults),
    }
    let key_count = p.keys.len();
    let Parser {
        entries,
        images,
        members,
        names,
        ref_sources,
        ..
    } = p;
    Ok(UpstreamIndex {
        body,
        entries,
        images,
        members,
        names,
        key_count,
        ref_sources,
        refs: std::sync::OnceLock::new(),
    })
}

pub(super) struct Syntax {
    offset: usize,
    expected: &'static str,
}

type R<T> = Result<T, Syntax>;

enum Results {
    Missing,
    Present,
    NotArray,
    Duplicate,
    NotAnObject,
}

/// A JSON string token: `start..end` is its content between the quotes.
#[derive(Clone, Copy)]
struct Tok {
    start: usize,
    end: usize,
    escaped: bool,
}

impl Tok {
    /// The token with its quotes, exactly as written.
    fn raw(self) -> Span {
        self.start - 1..self.end + 1
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ImagesState {
    Absent,
    Null,
    Array,
    Invalid,
}

struct ImageInfo<'a> {
    span: Span,
    ok: bool,
    architecture: Option<(Cow<'a, str>, Tok)>,
    labels: Labels<'a>,
}

struct Labels<'a> {
    ok: bool,
    flatpak_ref: Option<(Cow<'a, str>, Tok)>,
    metadata: Option<Tok>,
}

impl Labels<'_> {
    fn ok() -> Self {
        Labels {
            ok: true,
            flatpak_ref: None,
            metadata: None,
        }
    }

    fn bad() -> Self {
        Labels {
            ok: false,
            ..Labels::ok()
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    s: &'a [u8],
    pos: usize,
    entries: Vec<Entry>,
    images: Vec<Image>,
    members: Vec<Member>,
    names: String,
    keys: HashMap<(Cow<'a, str>, Cow<'a, str>), u32>,
    ref_sources: Vec<RefSource>,
}

impl<'a> Parser<'a> {
    // ---- the index's structure ----------------------------------------------

    fn document(&mut self) -> R<Results> {
        self.ws();
        let results = if self.peek() == Some(b'{') {
            let mut state = Results::Missing;
            self.object(|p, key| {
                if p.decode(key).as_deref() != Some("Results") {
                    p.skip_value()?;
                } else if matches!(state, Results::Missing) {
                    state = p.results()?;
                } else {
                    p.skip_value()?;
                    state = Results::Duplicate;
                }
                Ok(())
            })?;
            state
        } else {
            self.skip_value()?;
            Results::NotAnObject
        };
        self.ws();
        if self.pos != self.s.len() {
            return self.err("end of input after the JSON value");
        }
        Ok(results)
    }

    fn results(&mut self) -> R<Results> {
        match self.peek() {
            Some(b'[') => {
                self.array(|p| p.entry())?;
                Ok(Results::Present)
            }
            Some(b'n') => {
                self.literal(b"null")?;
                Ok(Results::Present)
            }
            _ => {
                self.skip_value()?;
                Ok(Results::NotArray)
            }
        }
    }

    fn entry(&mut self) -> R<()> {
        let start = self.pos;
        let index = self.entries.len();
        let marks = (
            self.images.len(),
            self.members.len(),
            self.names.len(),
            self.ref_sources.len(),
        );
        let mut name = None;
        let mut images = ImagesState::Absent;
        let mut images_at = None;
        let mut duplicate = false;
        let mut lists_ok = true;
        let mut seen_name = false;
        let mut seen_lists = false;

        if self.peek() == Some(b'{') {
            self.object(|p, key| {
                let value_start = p.pos;
                match p.decode(key).as_deref() {
                    Some("Images") => {
                        duplicate |= images != ImagesState::Absent;
                        images_at = Some(p.members.len() - marks.1);
                        images = match p.peek() {
                            Some(b'[') => {
                                p.array(|p| p.entry_image(index))?;
                                ImagesState::Array
                            }
                            Some(b'n') => {
                                p.literal(b"null")?;
                                ImagesState::Null
                            }
                            _ => {
                                p.skip_value()?;
                                ImagesState::Invalid
                            }
                        };
                        return Ok(());
                    }
                    Some("Name") => {
                        duplicate |= std::mem::replace(&mut seen_name, true);
                        if p.peek() == Some(b'"') {
                            let tok = p.string()?;
                            if let Some(decoded) = p.decode(tok) {
                                let from = p.names.len();
                                p.names.push_str(&decoded);
                                name = Some(from..p.names.len());
                            }
                        } else {
                            p.skip_value()?;
                        }
                    }
                    Some("Lists") => {
                        duplicate |= std::mem::replace(&mut seen_lists, true);
                        if !p.lists()? {
                            lists_ok = false;
                            return Ok(());
                        }
                    }
                    _ => {
                        p.skip_value()?;
                    }
                }
                p.members.push(Member {
                    key: key.raw(),
                    value: value_start..p.pos,
                });
                Ok(())
            })?;
        } else {
            self.skip_value()?;
        }

        let raw = start..self.pos;
        let usable = !duplicate && images != ImagesState::Invalid;
        let entry = match name.filter(|_| usable) {
            Some(name) => Entry {
                raw,
                name: Some(name),
                images: marks.0..self.images.len(),
                members: marks.1..self.members.len(),
                images_at: images_at.unwrap_or(self.members.len() - marks.1),
                verbatim: images == ImagesState::Array
                    && lists_ok
                    && self.images.iter().skip(marks.0).all(|i| i.ok),
            },
            None => {
                self.images.truncate(marks.0);
                self.members.truncate(marks.1);
                self.names.truncate(marks.2);
                self.ref_sources.truncate(marks.3);
                Entry {
                    raw,
                    name: None,
                    images: marks.0..marks.0,
                    members: marks.1..marks.1,
                    images_at: 0,
                    verbatim: false,
                }
            }
        };
        self.entries.push(entry);
        Ok(())
    }

    fn entry_image(&mut self, entry: usize) -> R<()> {
        let info = self.image()?;
        let mut key = NO_KEY;
        if info.ok
            && let (Some((flatpak_ref, ref_tok)), Some((arch, arch_tok))) =
                (info.labels.flatpak_ref, info.architecture)
        {
            let next = u32::try_from(self.keys.len()).unwrap_or(NO_KEY);
            key = *self.keys.entry((flatpak_ref, arch)).or_insert(next);
            self.ref_sources.push(RefSource {
                entry,
                flatpak_ref: ref_tok.raw(),
                architecture: arch_tok.raw(),
                metadata: info.labels.metadata.map(Tok::raw),
            });
        }
        self.images.push(Image {
            raw: info.span,
            ok: info.ok,
            key,
        });
        Ok(())
    }

    /// Whether an image is one flatpak accepts; see the module documentation.
    fn image(&mut self) -> R<ImageInfo<'a>> {
        let start = self.pos;
        if self.peek() != Some(b'{') {
            self.skip_value()?;
            return Ok(ImageInfo {
                span: start..self.pos,
                ok: false,
                architecture: None,
                labels: Labels::bad(),
            });
        }
        let mut ok = true;
        // Digest, MediaType, OS, Architecture, Labels, Annotations, Tags.
        let mut seen = [false; 7];
        let mut digest = false;
        let mut media_type = false;
        let mut os = false;
        let mut architecture = None;
        let mut labels = Labels::ok();
        self.object(|p, key| {
            let slot = match p.decode(key).as_deref() {
                Some("Digest") => 0,
                Some("MediaType") => 1,
                Some("OS") => 2,
                Some("Architecture") => 3,
                Some("Labels") => 4,
                Some("Annotations") => 5,
                Some("Tags") => 6,
                _ => {
                    p.skip_value()?;
                    return Ok(());
                }
            };
            ok &= !std::mem::replace(&mut seen[slot], true);
            match slot {
                0 => digest = p.string_value()?.is_some_and(|d| d.starts_with("sha256:")),
                1 => media_type = p.string_value()?.is_some(),
                2 => os = p.string_value()?.is_some(),
                3 => {
                    architecture = None;
                    if p.peek() == Some(b'"') {
                        let tok = p.string()?;
                        architecture = p.decode(tok).map(|a| (a, tok));
                    } else {
                        p.skip_value()?;
                    }
                }
                4 => labels = p.labels(true)?,
                5 => ok &= p.labels(false)?.ok,
                _ => {
                    ok &= matches!(p.peek(), Some(b'[' | b'n'));
                    p.skip_value()?;
                }
            }
            Ok(())
        })?;
        Ok(ImageInfo {
            span: start..self.pos,
            ok: ok && digest && media_type && os && architecture.is_some() && labels.ok,
            architecture,
            labels,
        })
    }

    /// A string map as flatpak requires for `Labels` and `Annotations`:
    /// `null`, or an object whose values are all strings.
    fn labels(&mut self, capture: bool) -> R<Labels<'a>> {
        match self.peek() {
            Some(b'n') => {
                self.literal(b"null")?;
                return Ok(Labels::ok());
            }
            Some(b'{') => {}
            _ => {
                self.skip_value()?;
                return Ok(Labels::bad());
            }
        }
        let mut labels = Labels::ok();
        self.object(|p, key| {
            if p.peek() != Some(b'"') {
                p.skip_value()?;
                labels.ok = false;
                return Ok(());
            }
            let tok = p.string()?;
            if !capture {
                return Ok(());
            }
            match p.decode(key).as_deref() {
                Some("org.flatpak.ref") => {
                    // Two refs would make the dedupe key ambiguous.
                    labels.ok &= labels.flatpak_ref.is_none();
                    labels.flatpak_ref = p.decode(tok).map(|r| (r, tok));
                    labels.ok &= labels.flatpak_ref.is_some();
                }
                Some("org.flatpak.metadata") => {
                    labels.ok &= labels.metadata.is_none();
                    labels.metadata = Some(tok);
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(labels)
    }

    /// `Lists` as flatpak reads it: `null`, or an array of objects with string
    /// `Digest` and `MediaType`, `Images` an array of well-formed images, and
    /// `Tags` null or an array.
    fn lists(&mut self) -> R<bool> {
        match self.peek() {
            Some(b'n') => {
                self.literal(b"null")?;
                return Ok(true);
            }
            Some(b'[') => {}
            _ => {
                self.skip_value()?;
                return Ok(false);
            }
        }
        let mut all_ok = true;
        self.array(|p| {
            all_ok &= p.list()?;
            Ok(())
        })?;
        Ok(all_ok)
    }

    fn list(&mut self) -> R<bool> {
        if self.peek() != Some(b'{') {
            self.skip_value()?;
            return Ok(false);
        }
        let mut ok = true;
        // Digest, MediaType, Images, Tags.
        let mut seen = [false; 4];
        let mut digest = false;
        let mut media_type = false;
        self.object(|p, key| {
            let slot = match p.decode(key).as_deref() {
                Some("Digest") => 0,
                Some("MediaType") => 1,
                Some("Images") => 2,
                Some("Tags") => 3,
                _ => {
                    p.skip_value()?;
                    return Ok(());
                }
            };
            ok &= !std::mem::replace(&mut seen[slot], true);
            match slot {
                0 => digest = p.string_value()?.is_some(),
                1 => media_type = p.string_value()?.is_some(),
                2 if p.peek() == Some(b'[') => p.array(|p| {
                    ok &= p.image()?.ok;
                    Ok(())
                })?,
                _ => {
                    ok &= slot == 3 && matches!(p.peek(), Some(b'[' | b'n'));
                    p.skip_value()?;
                }
            }
            Ok(())
        })?;
        Ok(ok && digest && media_type && seen[2])
    }

    // ---- JSON ---------------------------------------------------------------

    fn err<T>(&self, expected: &'static str) -> R<T> {
        Err(Syntax {
            offset: self.pos,
            expected,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8, expected: &'static str) -> R<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(expected)
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> R<()> {
        if self
            .s
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word))
        {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("`true`, `false` or `null`")
        }
    }

    /// The decoded text of a string token; `None` only for escapes that do not
    /// form a Unicode string (a lone surrogate).
    fn decode(&self, tok: Tok) -> Option<Cow<'a, str>> {
        if !tok.escaped {
            return self.text.get(tok.start..tok.end).map(Cow::Borrowed);
        }
        let raw = self.text.get(tok.raw())?;
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    }

    /// A value that should be a string: its text, or `None` for any other
    /// value (which is skipped).
    fn string_value(&mut self) -> R<Option<Cow<'a, str>>> {
        if self.peek() == Some(b'"') {
            let tok = self.string()?;
            Ok(self.decode(tok))
        } else {
            self.skip_value()?;
            Ok(None)
        }
    }

    /// Call `member` for each key of the object at the cursor, with the cursor
    /// on the value; `member` must consume exactly that value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, Tok) -> R<()>) -> R<()> {
        self.eat(b'{', "`{`")?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return self.err("a string key");
            }
            let key = self.string()?;
            self.ws();
            self.eat(b':', "`:`")?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.err("`,` or `}`"),
            }
        }
    }

    /// Call `element` for each element of the array at the cursor.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.eat(b'[', "`[`")?;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            element(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.err("`,` or `]`"),
            }
        }
    }

    /// Skip any JSON value, returning its span. Iterative: nesting costs one
    /// byte of heap per level, never stack.
    fn skip_value(&mut self) -> R<Span> {
        let start = self.pos;
        let mut open: Vec<u8> = Vec::new();
        loop {
            // The cursor is on a value.
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'{') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open.push(b'}');
                        self.key_colon()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(b']');
                        continue;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return self.err("a JSON value"),
            }
            // A value ended: close containers until one expects another value.
            loop {
                let Some(&close) = open.last() else {
                    return Ok(start..self.pos);
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.ws();
                        if close == b'}' {
                            self.key_colon()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ if close == b'}' => return self.err("`,` or `}`"),
                    _ => return self.err("`,` or `]`"),
                }
            }
        }
    }

    /// `"key" :` and the whitespace after it.
    fn key_colon(&mut self) -> R<()> {
        if self.peek() != Some(b'"') {
            return self.err("a string key");
        }
        self.string()?;
        self.ws();
        self.eat(b':', "`:`")?;
        self.ws();
        Ok(())
    }

    fn number(&mut self) -> R<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.err("a digit"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digit_run()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digit_run()?;
        }
        Ok(())
    }

    fn digit_run(&mut self) -> R<()> {
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return self.err("a digit");
        }
        self.digits();
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// The string token at the cursor (which is on its opening quote).
    fn string(&mut self) -> R<Tok> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek() {
                Some(b'"') => {
                    let end = self.pos;
                    self.pos += 1;
                    return Ok(Tok {
                        start,
                        end,
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return self.err("no control character in a string"),
                None => return self.err("the end of the string"),
            }
        }
    }

    /// Advance to the next `"`, `\` or control character (or the end).
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = ONES << 7;
        const QUOTE: u64 = ONES * b'"' as u64;
        const BACKSLASH: u64 = ONES * b'\\' as u64;
        // Eight bytes at a time: a byte is flagged when it is below 0x20 or
        // equal to `"` or `\`. Flags can be spurious only above a true one,
        // so the lowest flag is exact.
        while let Some(chunk) = self.s.get(self.pos..self.pos + 8) {
            let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let x = u64::from_le_bytes(bytes);
            let q = x ^ QUOTE;
            let b = x ^ BACKSLASH;
            let flags = ((x.wrapping_sub(ONES * 0x20) & !x)
                | (q.wrapping_sub(ONES) & !q)
                | (b.wrapping_sub(ONES) & !b))
                & HIGH;
            if flags != 0 {
                self.pos += (flags.trailing_zeros() / 8) as usize;
                return;
            }
            self.pos += 8;
        }
        while let Some(c) = self.peek() {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.pos += 1;
        }
    }

    /// The escape at the cursor (which is on the backslash).
    fn escape(&mut self) -> R<()> {
        self.pos += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
            Some(b'u') => {
                self.pos += 1;
                for _ in 0..4 {
                    if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                        return self.err("four hex digits");
                    }
                    self.pos += 1;
                }
            }
            _ => return self.err("a valid escape"),
        }
        Ok(())
    }
}
