//! Removes secret values from text before it is logged, stored or shown.

/// Knows a route's secret values and replaces them with `[redacted]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Secret values, longest first so a secret containing another is
    /// replaced whole.  Values shorter than 4 characters are not tracked
    /// (they would redact ordinary words).
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<I: IntoIterator<Item = String>>(secrets: I) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced.
    pub fn apply(&self, text: &str) -> String {
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
