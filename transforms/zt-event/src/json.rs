//! JSON text without a DOM: a validating scanner that reads values in
//! place, and a writer that appends escaped strings and objects.
//!
//! [`crate::Event::parse`] needs a handful of values out of an event and
//! the text itself; building a DOM (or running serde's visitor machinery)
//! for that costs several times more than reading the bytes once, and the
//! transforms run it per event in a sandbox where every instruction is
//! metered.  The scanner walks the text once, checks it is JSON (RFC 8259:
//! one value, nothing but whitespace around it), and hands out byte ranges
//! of the values its caller asks about.  Nothing is decoded until an
//! accessor wants it ([`string_value`], [`elements`], [`name_member`]).
//!
//! Nesting is tracked on a heap stack, never by recursion, so no input can
//! exhaust the (small) stack of a wasm guest; as in serde_json, at most
//! [`MAX_DEPTH`] arrays and objects may be open at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::Hash;

/// Why a text is not JSON: what was expected, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What the scanner expected at that point.
    pub message: &'static str,
    /// 1-based line of the offending byte.
    pub line: usize,
    /// 1-based column (in bytes) of the offending byte.
    pub column: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

impl std::error::Error for ParseError {}

/// A byte range of the text holding one whole JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

/// A cursor over JSON text.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// The next byte to read.
    pub at: usize,
    /// Open containers while skipping a value: true for objects.
    stack: Vec<bool>,
    /// Containers open around the value being read that the caller walks
    /// itself (the event's object, a wrapper object), for [`MAX_DEPTH`].
    pub outer: usize,
}

/// Arrays and objects open at once, at most: serde_json's recursion limit
/// (it refuses the 128th), so both refuse the same texts.
pub const MAX_DEPTH: usize = 127;

const QUOTES: u64 = 0x2222_2222_2222_2222;
const BACKSLASHES: u64 = 0x5c5c_5c5c_5c5c_5c5c;
const SPACES: u64 = 0x2020_2020_2020_2020;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bytes of `x` that are zero, as their high bits (exact up to the first).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Index of the first byte at or after `i` that ends a run of plain string
/// content: `"`, `\` or a control character; `bytes.len()` when none.
/// Eight bytes at a time: metered wasm pays per instruction, not per byte.
#[inline]
pub(crate) fn string_special(bytes: &[u8], mut i: usize) -> usize {
    let len = bytes.len();
    while i + 8 <= len {
        if let Some(at) = first_special(word(bytes, i)) {
            return i + at;
        }
        i += 8;
    }
    if i < len && len >= 8 {
        // The last eight bytes, overlapping some before `i`: shift those
        // out *before* the arithmetic, so a special byte just before `i`
        // cannot borrow into byte `i` (`"` then `#`, `\` then `]`), and
        // ignore the zero bytes shifted in at the top.
        let skip = (i - (len - 8)) * 8;
        let x = word(bytes, len - 8) >> skip;
        return match first_special_masked(x, !0u64 >> skip) {
            Some(at) => i + at,
            None => len,
        };
    }
    while i < len && !matches!(bytes[i], b'"' | b'\\' | 0..=0x1f) {
        i += 1;
    }
    i
}

/// Eight bytes from `at` (in bounds), little-endian.
#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Index of the first `"`, `\` or control byte in a word.
#[inline(always)]
fn first_special(x: u64) -> Option<usize> {
    first_special_masked(x, !0)
}

#[inline(always)]
fn first_special_masked(x: u64, mask: u64) -> Option<usize> {
    let hits = (zero_bytes(x ^ QUOTES)
        | zero_bytes(x ^ BACKSLASHES)
        | (x.wrapping_sub(SPACES) & !x & HIGHS))
        & mask;
    (hits != 0).then(|| (hits.trailing_zeros() / 8) as usize)
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            text,
            bytes: text.as_bytes(),
            at: 0,
            stack: Vec::new(),
            outer: 0,
        }
    }

    /// An error at the current position (rare: out of the hot path).
    #[cold]
    #[inline(never)]
    pub fn error(&self, message: &'static str) -> ParseError {
        let at = self.at.min(self.bytes.len());
        let before = &self.bytes[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = at
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1)
            + 1;
        ParseError {
            message,
            line,
            column,
        }
    }

    /// The value at `span` is `null`.
    pub fn is_null(&self, span: Span) -> bool {
        &self.bytes[span.start..span.end] == b"null"
    }

    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `b` when it is next.
    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Whitespace, then `b`.
    pub fn expect(&mut self, b: u8, message: &'static str) -> Result<(), ParseError> {
        self.skip_ws();
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.error(message))
        }
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Result<(), ParseError> {
        self.skip_ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// At a `"`: reads the string and returns its contents, borrowed when
    /// it has no escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let start = self.at;
        let escaped = self.skip_string()?;
        let inner = &self.text[start + 1..self.at - 1];
        Ok(if escaped {
            Cow::Owned(unescape(inner))
        } else {
            Cow::Borrowed(inner)
        })
    }

    /// At a `"`: skips the string; true when it holds escapes.
    fn skip_string(&mut self) -> Result<bool, ParseError> {
        if !self.eat(b'"') {
            return Err(self.error("expected a string"));
        }
        let mut escaped = false;
        loop {
            self.at = string_special(self.bytes, self.at);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1
                        }
                        Some(b'u') => {
                            // A UTF-16 unit; surrogates must come in pairs
                            // (serde_json refuses lone ones, and so do we).
                            let unit = self.hex_unit(self.at + 1)?;
                            self.at += 5;
                            if (0xdc00..0xe000).contains(&unit) {
                                return Err(self.error("lone trailing surrogate in a \\u escape"));
                            }
                            if (0xd800..0xdc00).contains(&unit) {
                                let low = match self.bytes.get(self.at..self.at + 2) {
                                    Some(b"\\u") => self.hex_unit(self.at + 2)?,
                                    _ => 0,
                                };
                                if !(0xdc00..0xe000).contains(&low) {
                                    return Err(
                                        self.error("lone leading surrogate in a \\u escape")
                                    );
                                }
                                self.at += 6;
                            }
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// The four hex digits at `at`, as a UTF-16 unit.
    fn hex_unit(&self, at: usize) -> Result<u32, ParseError> {
        self.bytes
            .get(at..at + 4)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<(), ParseError> {
        let start = self.at;
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(self.error("invalid number"));
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            exponent = true;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        // As serde_json: a number too large for an f64 is an error.  Only
        // an exponent or over 300 digits can get there; serde_json's own
        // parser then decides (its rounding near f64::MAX is not Rust's).
        if (exponent || self.at - start > 300)
            && serde_json::from_str::<serde_json::Number>(&self.text[start..self.at]).is_err()
        {
            self.at = start;
            return Err(self.error("number out of range"));
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ParseError> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// An object key and its colon.
    pub fn key(&mut self) -> Result<Cow<'a, str>, ParseError> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string key"));
        }
        let key = self.string()?;
        self.expect(b':', "expected `:`")?;
        Ok(key)
    }

    /// Skips whitespace and one whole value; returns where it lies.
    pub fn value(&mut self) -> Result<Span, ParseError> {
        self.skip_ws();
        let start = self.at;
        let base = self.stack.len();
        'value: loop {
            self.skip_ws();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.at += 1;
                    let object = open == b'{';
                    self.skip_ws();
                    if self.outer + self.stack.len() >= MAX_DEPTH {
                        return Err(self.error("recursion limit exceeded"));
                    }
                    if !self.eat(if object { b'}' } else { b']' }) {
                        self.stack.push(object);
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.skip_string()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.error("expected a value")),
            }
            // A value is complete: close containers or go to the next item.
            while self.stack.len() > base {
                let object = self.stack[self.stack.len() - 1];
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        self.at += 1;
                        self.stack.pop();
                    }
                    Some(b']') if !object => {
                        self.at += 1;
                        self.stack.pop();
                    }
                    _ => {
                        return Err(self.error(if object {
                            "expected `,` or `}`"
                        } else {
                            "expected `,` or `]`"
                        }));
                    }
                }
            }
            return Ok(Span {
                start,
                end: self.at,
            });
        }
    }

    /// After an object member's value: true when another member follows,
    /// false at the closing `}`.
    pub fn next_member(&mut self) -> Result<bool, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                Ok(true)
            }
            Some(b'}') => {
                self.at += 1;
                Ok(false)
            }
            _ => Err(self.error("expected `,` or `}`")),
        }
    }
}

/// Decodes the inside of a JSON string (escapes already validated).
/// A lone surrogate becomes U+FFFD.
fn unescape(inner: &str) -> String {
    let bytes = inner.as_bytes();
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = string_special(bytes, i).min(bytes.len());
        // `string_special` stops at `\` (the only special byte left here).
        out.push_str(&inner[i..run]);
        i = run;
        if i + 1 >= bytes.len() {
            break;
        }
        let c = bytes[i + 1];
        i += 2;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = |at: usize| {
                    inner
                        .get(at..at + 4)
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                };
                let Some(hi) = unit(i) else { break };
                i += 4;
                if (0xd800..0xdc00).contains(&hi)
                    && bytes.get(i..i + 2) == Some(b"\\u")
                    && let Some(lo) = unit(i + 2).filter(|lo| (0xdc00..0xe000).contains(lo))
                {
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                        .unwrap_or('\u{fffd}')
                } else {
                    char::from_u32(hi).unwrap_or('\u{fffd}')
                }
            }
            _ => '\u{fffd}',
        };
        out.push(ch);
    }
    out
}

/// Appends `s` as a JSON string, quotes included, escaped as serde_json
/// escapes it (`"`, `\\` and control characters; everything else as is).
pub fn push_string(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    out.push('"');
    let mut i = 0;
    loop {
        let run = string_special(bytes, i);
        out.push_str(&s[i..run]);
        let Some(&b) = bytes.get(run) else { break };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        i = run + 1;
    }
    out.push('"');
}

/// Writes one JSON object, member by member, into a `String`: the
/// request bodies of a transform without building a DOM first.
#[must_use = "an object is closed by `end`"]
pub struct ObjectWriter<'a> {
    out: &'a mut String,
    /// No member written yet (no comma before the next).
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Opens an object at the end of `out`.
    pub fn new(out: &'a mut String) -> ObjectWriter<'a> {
        out.push('{');
        ObjectWriter { out, empty: true }
    }

    /// Writes `"key":` and returns the text to write the value into.
    /// Keys are names chosen by the program, written as they are: they
    /// must not need escaping.
    pub fn key(&mut self, key: &'static str) -> &mut String {
        debug_assert_eq!(string_special(key.as_bytes(), 0), key.len(), "{key}");
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out
    }

    /// A string member.
    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        push_string(self.key(key), value);
        self
    }

    /// A string member, left out when `None`.
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    /// An array of strings, left out when empty.
    pub fn strs<S: AsRef<str>>(&mut self, key: &'static str, values: &[S]) -> &mut Self {
        if values.is_empty() {
            return self;
        }
        let out = self.key(key);
        out.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_string(out, v.as_ref());
        }
        out.push(']');
        self
    }

    /// A number member.
    pub fn uint(&mut self, key: &'static str, value: u64) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.key(key), "{value}");
        self
    }

    /// A member whose value is JSON text the caller vouches for.
    pub fn raw(&mut self, key: &'static str, json: &str) -> &mut Self {
        self.key(key).push_str(json);
        self
    }

    /// An object member; write its members, then `end` it.
    pub fn object(&mut self, key: &'static str) -> ObjectWriter<'_> {
        ObjectWriter::new(self.key(key))
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push('}');
    }
}

/// The text of a JSON string value (`raw` includes the quotes), decoded.
pub(crate) fn string_value(raw: &str) -> Cow<'_, str> {
    Scanner::new(raw).string().unwrap_or_default()
}

/// The items of a JSON array (`raw` already validated), as raw texts.
pub(crate) fn elements(raw: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut sc = Scanner::new(raw);
    if !sc.eat(b'[') {
        return out;
    }
    sc.skip_ws();
    if sc.eat(b']') {
        return out;
    }
    while let Ok(span) = sc.value() {
        out.push(&raw[span.start..span.end]);
        sc.skip_ws();
        if !sc.eat(b',') {
            break;
        }
    }
    out
}

/// Finds an earlier entry by key: a scan while there are few entries (the
/// normal case, no hashing), a hash map once there are many, so an object
/// with thousands of keys costs linear time.  The map hashes with
/// SipHash under random keys: crafted collisions do not help an attacker.
pub(crate) struct KeyIndex<K> {
    few: Vec<(K, usize)>,
    many: Option<HashMap<K, usize>>,
}

impl<K> Default for KeyIndex<K> {
    fn default() -> Self {
        KeyIndex {
            few: Vec::new(),
            many: None,
        }
    }
}

/// Entries kept in the scanned list before moving to the map.
const FEW: usize = 16;

impl<K: Hash + Eq> KeyIndex<K> {
    /// The index recorded for `key`, or `None` after recording `index`.
    pub fn get_or_insert(&mut self, key: K, index: usize) -> Option<usize> {
        if let Some(many) = &mut self.many {
            return match many.entry(key) {
                Entry::Occupied(e) => Some(*e.get()),
                Entry::Vacant(e) => {
                    e.insert(index);
                    None
                }
            };
        }
        if let Some((_, i)) = self.few.iter().find(|(k, _)| *k == key) {
            return Some(*i);
        }
        if self.few.len() < FEW {
            self.few.push((key, index));
        } else {
            let mut many: HashMap<K, usize> = self.few.drain(..).collect();
            many.insert(key, index);
            self.many = Some(many);
        }
        None
    }
}

/// The value of an object's name-like member (`raw` already validated):
/// the first member in the order of `names` (normalised keys) whose value
/// is not null, where a repeated key keeps its first place and its last
/// value, as in a map.
pub(crate) fn name_member<'r>(raw: &'r str, names: &[&str]) -> Option<&'r str> {
    // (preference, value) of the members named in `names`, in order.
    let mut named: Vec<(usize, &'r str)> = Vec::new();
    let mut index: KeyIndex<Cow<'r, str>> = KeyIndex::default();
    let mut sc = Scanner::new(raw);
    if !sc.eat(b'{') {
        return None;
    }
    sc.skip_ws();
    if sc.eat(b'}') {
        return None;
    }
    loop {
        let key = sc.key().ok()?;
        let span = sc.value().ok()?;
        let value = &raw[span.start..span.end];
        let preference =
            crate::with_normalized(&key, |n| names.iter().position(|want| want.as_bytes() == n));
        if let Some(preference) = preference {
            match index.get_or_insert(key, named.len()) {
                Some(i) => named[i].1 = value,
                None => named.push((preference, value)),
            }
        }
        if !matches!(sc.next_member(), Ok(true)) {
            break;
        }
    }
    (0..names.len()).find_map(|p| {
        named
            .iter()
            .find(|(q, v)| *q == p && *v != "null")
            .map(|(_, v)| *v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Span, ParseError> {
        let mut sc = Scanner::new(text);
        let span = sc.value()?;
        sc.end()?;
        Ok(span)
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        for text in [
            "0",
            "-0",
            "12.5e-3",
            "1E+9",
            "true",
            "false",
            "null",
            r#""""#,
            r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#,
            "[]",
            "{}",
            " [ 1 , [ ] , { } , \"x\" ] ",
            r#"{"a": {"b": [1, {"c": null}]}, "d": "\u0000"}"#,
            "\"caf\u{e9} \u{1f600}\"",
            "\"0123456789abcdef\\\"0123456789abcdef\"",
            r#""\ud83d\ude00 \uD834\uDD1E""#,
            "1e308",
            "1e-400",
            // ... and these down to it.
            "1.79769313486231582e308",
            "1.79769313486231597e308",
            "123456789012345678901234567890",
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
            let span = check(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(text[span.start..span.end].trim(), text.trim());
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{1:2}",
            "{'a':1}",
            "[",
            "{",
            "\"abc",
            "\"a\\x\"",
            "\"\\u12g4\"",
            "\"\\u12\"",
            "\"tab\there\"",
            "\"line\nbreak\"",
            "[1]]",
            "{}{}",
            "1 2",
            "[\"a\" \"b\"]",
            // Lone surrogates and numbers beyond f64.
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            r#"{"a": "\udfff"}"#,
            "1e400",
            "-1E+309",
            "[1.5e999]",
            // serde_json rounds these up past f64::MAX.
            "1.7976931348623158e308",
            "17976931348623158e292",
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "{text}"
            );
            assert!(check(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn nesting_is_limited_as_in_serde_json_without_recursing() {
        for depth in [1, 126, 127, 128, 129, 200_000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            for text in [arrays, objects] {
                let serde = serde_json::from_str::<serde_json::Value>(&text).is_ok();
                assert_eq!(check(&text).is_ok(), serde, "depth {depth}");
                assert_eq!(serde, depth <= MAX_DEPTH, "depth {depth}");
            }
        }
        let open = "[{\"a\":".repeat(100_000);
        assert!(check(&open).is_err());
    }

    #[test]
    fn errors_say_where() {
        let e = check("{\n  \"a\": 1,\n  \"b\" 2}").unwrap_err();
        assert_eq!((e.message, e.line, e.column), ("expected `:`", 3, 7));
    }

    #[test]
    fn strings_decode_like_serde_json() {
        for raw in [
            r#""plain""#,
            r#""CORP\\jsmith""#,
            r#""\\\\prod-cluster-01\\finance""#,
            r#""q\"uote\/\b\f\n\r\t""#,
            r#""\u00e9\u20ac\ud83d\ude00 and more text after the escapes""#,
            "\"unicode \u{e9}\u{1f600} raw\"",
        ] {
            let want: String = serde_json::from_str(raw).unwrap();
            assert_eq!(string_value(raw), want, "{raw}");
        }
        // The scanner refuses a lone surrogate (as serde_json does); should
        // one reach the decoder anyway, it becomes U+FFFD.
        assert!(Scanner::new(r#""a\ud800b""#).string().is_err());
        assert_eq!(unescape(r"a\ud800b"), "a\u{fffd}b");
    }

    #[test]
    fn special_bytes_are_found_in_every_position() {
        // Every length, start and position: the word loop, the overlapping
        // last word (which must ignore bytes before the start) and the
        // byte loop of short texts.
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0u8, 0x1f] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = special;
                    for start in 0..=len {
                        let want = if start <= at { at } else { len };
                        assert_eq!(
                            string_special(&bytes, start),
                            want,
                            "len {len} at {at} from {start}"
                        );
                    }
                    // Bytes >= 0x80 and 0x20 itself are content.
                    bytes[at] = if at % 2 == 0 { 0xc3 } else { 0x20 };
                    assert_eq!(string_special(&bytes, 0), len);
                }
            }
        }
    }

    #[test]
    fn a_special_byte_before_the_start_does_not_leak_into_the_next() {
        // SWAR borrows: `"` + 1 is `#`, `\` + 1 is `]`, 0x1f + 1 is a space.
        // Each special byte is placed just before `start`, with the byte
        // one above it right after, at every offset of the last word.
        for len in 8..24 {
            for start in 1..len {
                for (special, next) in [(b'"', b'#'), (b'\\', b']'), (0x1f, b' '), (0, 1)] {
                    let mut bytes = vec![b'x'; len];
                    bytes[start - 1] = special;
                    bytes[start] = next;
                    let want = if next < 0x20 { start } else { len };
                    assert_eq!(
                        string_special(&bytes, start),
                        want,
                        "len {len} start {start} {special:#x}"
                    );
                }
            }
        }
        // What the bug did to whole texts.
        for text in [
            r##"{"aaaaaa":"#x"}"##,
            r##"      "#""##,
            r##"["xxxxxxx","\\]"]"##,
        ] {
            assert!(check(text).is_ok(), "{text}");
        }
        assert_eq!(string_value("\"#abcde\""), "#abcde");
    }

    #[test]
    fn name_members_and_elements() {
        let names = ["name", "value"];
        let obj = r#"{"Value": 1, "name": null, "a": [2, 3], "NAME": "x", "value": 2, "Value": 3}"#;
        // `NAME` is the first non-null `name`; `Value` keeps its place
        // before `value` and takes its last value.
        assert_eq!(name_member(obj, &names), Some("\"x\""));
        assert_eq!(
            name_member(r#"{"Value": 1, "value": 2, "Value": 3}"#, &names),
            Some("3")
        );
        assert_eq!(
            name_member(r#"{"n\u0061me": "esc"}"#, &names),
            Some("\"esc\"")
        );
        assert_eq!(name_member("{}", &names), None);
        assert_eq!(name_member(r#"{"name": null}"#, &names), None);
        assert_eq!(
            elements(r#"[ 1, {"a": [2]}, "s" ]"#),
            ["1", r#"{"a": [2]}"#, "\"s\""]
        );
        assert!(elements("[]").is_empty());
    }

    #[test]
    fn key_index_finds_keys_before_and_after_it_grows() {
        let mut index = KeyIndex::default();
        for i in 0..100 {
            assert_eq!(index.get_or_insert(format!("k{i}"), i), None);
        }
        for i in 0..100 {
            assert_eq!(index.get_or_insert(format!("k{i}"), 1000), Some(i));
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut all = String::from(
            "plain, caf\u{e9} \u{1f600}, quote \" back \\\\ slash / nl \n cr \r tab \t",
        );
        for b in 0u8..0x20 {
            all.push(char::from(b));
        }
        for s in [all.as_str(), "", "\"", "0123456789abcdef0123456789abcdef\\"] {
            let mut out = String::new();
            push_string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }

    #[test]
    fn objects_are_valid_json() {
        let mut out = String::new();
        let mut o = ObjectWriter::new(&mut out);
        o.str("a", "x\"y")
            .opt_str("none", None)
            .strs::<&str>("empty", &[]);
        o.strs("list", &["1", "2"])
            .uint("n", 42)
            .raw("raw", "[true,null]");
        let mut inner = o.object("inner");
        inner.str("k", "v");
        inner.end();
        o.object("nothing").end();
        o.end();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": "x\"y", "list": ["1", "2"], "n": 42, "raw": [true, null],
                               "inner": {"k": "v"}, "nothing": {}})
        );
    }
}
