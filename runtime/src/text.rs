//! Text shown to people: excerpts of bounded length, event IDs fit for
//! logs, and secret values removed ([`Redactor`]).
//!
//! May import: nothing of the crate.

/// Knows a route's secret values and replaces them with `[redacted]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Secret values, longest first so a secret containing another is
    /// replaced whole.  Values shorter than 4 characters are not tracked
    /// (they would redact ordinary words).
    secrets: Vec<String>,
}

impl Redactor {
    pub(crate) fn new<I: IntoIterator<Item = String>>(secrets: I) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced.
    pub(crate) fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// At most `max` bytes of `s`, on a character boundary, with a note.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &s[..end], s.len() - end)
}

/// Whether `c` could forge or hide text on a terminal, in a log line or a
/// table: C0 and C1 controls (CR, LF, NUL, ESC...), DEL, the Unicode line
/// and paragraph separators, and bidirectional overrides.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `c` escaped: `\n`, `\r`, `\t`, `\0`, else `\u{..}`.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// `s` with every control character escaped (see [`is_unsafe_char`]), so
/// that text from an event or a transform stays on one line and cannot
/// forge a log line, break a table or drive a terminal.  Borrowed when
/// there is nothing to escape.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// At most `max` characters of `s` with control characters escaped (an
/// escape is never cut), `…` marking a cut.
pub fn clip_escaped(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let mut piece = String::new();
        if is_unsafe_char(c) {
            push_escaped(&mut piece, c);
        } else {
            piece.push(c);
        }
        let width = piece.chars().count();
        let last = chars.peek().is_none();
        if shown + width > max || (shown + width == max && !last) {
            out.push('…');
            return out;
        }
        shown += width;
        out.push_str(&piece);
    }
    out
}

/// An event ID fit for logs and answers: control characters escaped, at
/// most 128 characters.
pub(crate) fn display_id(id: Option<&str>) -> String {
    match id {
        None => "-".into(),
        Some(id) => clip_escaped(id, 128),
    }
}

/// The error and every `source` below it, joined with ": " (logs and
/// attempt records show the whole chain).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // Some errors repeat their source in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("RSW-1"), "RSW-1");
        assert!(matches!(
            escape_controls("RSW-1"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\nb\rc\0d\u{1b}[31me\u{85}f\u{2028}g\u{202e}h\\i"),
            "a\\nb\\rc\\0d\\u{1b}[31me\\u{85}f\\u{2028}g\\u{202e}h\\i"
        );
        assert_eq!(display_id(Some("x\ny")), "x\\ny");
        assert_eq!(display_id(None), "-");
        let long = "\n".repeat(200);
        let shown = display_id(Some(&long));
        assert!(shown.chars().count() <= 129, "{shown}");
        assert!(shown.ends_with("\\n…"), "{shown}");
        assert_eq!(clip_escaped("abc", 3), "abc");
        assert_eq!(clip_escaped("abcd", 3), "ab…");
        assert_eq!(clip_escaped("a\nbc", 3), "a…");
    }

    #[test]
    fn replaces_every_secret() {
        let r = Redactor::new([
            "hunter22".to_string(),
            "abc".to_string(),
            "R0UT1NGKEY".to_string(),
        ]);
        assert_eq!(
            r.apply("key=R0UT1NGKEY pw=hunter22 abc"),
            "key=[redacted] pw=[redacted] abc"
        );
    }
}
