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

#[cfg(test)]
mod tests {
    use super::*;

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

/// An event ID fit for logs and answers: at most 128 characters.
pub(crate) fn display_id(id: Option<&str>) -> String {
    match id {
        None => "-".into(),
        Some(id) if id.chars().count() <= 128 => id.to_string(),
        Some(id) => format!("{}…", id.chars().take(127).collect::<String>()),
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
