//! Warnings about a configuration that loads but probably does not do what
//! was meant (a filter naming a severity Superna never sends, a PagerDuty
//! severity PagerDuty does not have, an `http://` destination every
//! delivery of which would be refused), and "did you mean" suggestions for
//! misspelt names.  `config check` prints them; `serve` logs them at start.

use super::{Config, RouteConfig};

/// Superna's severities, as route filters name them.
const SEVERITIES: [&str; 3] = ["critical", "major", "warning"];
/// State kinds route filters may name (raw state values work too).
const STATE_KINDS: [&str; 5] = [
    "lockout",
    "delayed_lockout",
    "access_restored",
    "recovered",
    "false_positive",
];
/// States Superna is known to send (raw values; matched without case, `_`
/// or spaces).
const KNOWN_STATES: [&str; 9] = [
    "locked_out",
    "delayed_lockout",
    "access_restored",
    "unlocked",
    "recovered",
    "archived",
    "false_positive",
    "flag_as_false_positive",
    "monitor",
];
/// PagerDuty Events v2 severities.
const PAGERDUTY_SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// The candidate closest to `word` (case and `-`/`_` ignored), if it is
/// close enough to be a likely typo: at most 2 edits, or a third of the
/// longer of the two for long ones.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let w = norm(word);
    candidates
        .into_iter()
        .map(|c| {
            let n = norm(c);
            (distance(&w, &n), n.len().max(w.len()), c)
        })
        .filter(|(d, len, _)| *d <= (len / 3).max(2))
        .map(|(d, _, c)| (d, c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// "; did you mean `x`?" or nothing.
fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// Adds "did you mean" to a TOML error about an unknown key (`unknown
/// field `listn`, expected one of `listen`, ...`).
pub(super) fn explain_unknown_field(message: &str) -> String {
    let Some(at) = message.find("unknown field `") else {
        return message.to_string();
    };
    let rest = &message[at + "unknown field `".len()..];
    let Some(end) = rest.find('`') else {
        return message.to_string();
    };
    let field = &rest[..end];
    let expected: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    match suggest(field, expected) {
        Some(s) => format!("{}: did you mean `{s}`?", message.trim_end()),
        None => message.to_string(),
    }
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Config {
    /// What probably does not do what was meant; empty when nothing is
    /// suspicious.  None of these stops the service.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.routes {
            route_warnings(r, &mut out);
        }
        if let Some(a) = &self.admin {
            if !a.listen.ip().is_loopback() && !a.trust_proxy_headers {
                out.push(format!(
                    "admin.listen {} is beyond loopback over plain HTTP: the admin token and session \
                     cookie cross the network in clear; put the console behind a TLS proxy (and set \
                     admin.trust_proxy_headers = true) or keep it on loopback",
                    a.listen
                ));
            }
            if a.token.as_ref().is_some_and(|t| t.literal().is_some()) {
                out.push(
                    "admin.token is written in the config file: prefer { file = \"...\" } (a systemd \
                     credential) or { env = \"...\" }"
                        .into(),
                );
            }
        }
        out
    }
}

fn route_warnings(r: &RouteConfig, out: &mut Vec<String>) {
    let name = &r.name;
    for s in &r.severities {
        let n = norm(s);
        if SEVERITIES.iter().any(|k| *k == n) {
            continue;
        }
        let parsed = zt_event::Severity::parse(s);
        if !matches!(parsed, zt_event::Severity::Other(_)) {
            out.push(format!(
                "route `{name}`: severities: `{s}` is read as `{}`; write `{}`",
                parsed.name(),
                parsed.name()
            ));
        } else {
            out.push(format!(
                "route `{name}`: severities: `{s}` is not a Superna severity (critical, major, warning): \
                 it only matches events whose severity is exactly `{s}`{}",
                did_you_mean(s, SEVERITIES)
            ));
        }
    }
    for s in &r.states {
        let n = norm(s);
        if STATE_KINDS
            .iter()
            .chain(&KNOWN_STATES)
            .any(|k| norm(k) == n)
        {
            continue;
        }
        out.push(format!(
            "route `{name}`: states: `{s}` is neither a state kind ({}) nor a state Superna is known \
             to send: it only matches a state spelled exactly `{s}`{}",
            STATE_KINDS.join(", "),
            did_you_mean(s, STATE_KINDS.iter().chain(&KNOWN_STATES).copied())
        ));
    }
    if r.transform == "builtin:pagerduty"
        && let Some(map) = r.config.get("severity_map").and_then(|v| v.literal())
    {
        for item in map.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((from, to)) = item.split_once('=') else {
                out.push(format!(
                    "route `{name}`: severity_map: `{item}` is not of the form severity=pagerduty_severity"
                ));
                continue;
            };
            let (from, to) = (from.trim(), to.trim());
            if !PAGERDUTY_SEVERITIES
                .iter()
                .any(|p| p.eq_ignore_ascii_case(to))
            {
                out.push(format!(
                    "route `{name}`: severity_map: `{to}` (for `{from}`) is not a PagerDuty severity \
                     (critical, error, warning, info): those events would be sent as `info`{}",
                    did_you_mean(to, PAGERDUTY_SEVERITIES)
                ));
            }
            let known_from = SEVERITIES
                .iter()
                .chain(&["other"])
                .any(|k| *k == norm(from));
            if !known_from {
                out.push(format!(
                    "route `{name}`: severity_map: `{from}` is not a Superna severity (critical, major, \
                     warning, or other){}",
                    did_you_mean(from, SEVERITIES.iter().copied().chain(["other"]))
                ));
            }
        }
    }
    if !r.allow_http {
        for (key, value) in &r.config {
            if let Some(v) = value.literal()
                && v.trim().to_ascii_lowercase().starts_with("http://")
            {
                out.push(format!(
                    "route `{name}`: {key} = {v:?} is plain http:// but allow_http is false: every \
                     request to it would be refused (each delivery a dead letter); use https://, or set \
                     allow_http = true on the route (lab and loopback only)"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_beyond_loopback_or_with_a_literal_token_is_warned_about() {
        let c = Config::parse(
            "[admin]\nlisten = \"0.0.0.0:5001\"\ntoken = \"console-admin-token-0123456789\"\n",
            "t",
        )
        .unwrap();
        let w = c.warnings();
        assert!(w.iter().any(|w| w.contains("beyond loopback")), "{w:?}");
        assert!(
            w.iter().any(|w| w.contains("admin.token is written")),
            "{w:?}"
        );
        let quiet = Config::parse("[admin]\ntoken = { env = \"X\" }\n", "t").unwrap();
        assert!(quiet.warnings().is_empty(), "{:?}", quiet.warnings());
    }

    fn route(extra: &str) -> Config {
        Config::parse(
            &format!("[[route]]\nname = \"pd\"\ntransform = \"builtin:pagerduty\"\n{extra}"),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn typos_get_suggestions() {
        assert_eq!(suggest("critcal", SEVERITIES), Some("critical"));
        assert_eq!(suggest("lockot", STATE_KINDS), Some("lockout"));
        assert_eq!(
            suggest("Access-Restored", STATE_KINDS),
            Some("access_restored")
        );
        assert_eq!(suggest("zzz", SEVERITIES), None);
    }

    #[test]
    fn filters_maps_and_http_are_warned_about() {
        assert!(
            route("severities = [\"critical\", \"major\"]")
                .warnings()
                .is_empty()
        );
        let w = route("severities = [\"critcal\", \"sever\"]").warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("`critcal` is read as `critical`"), "{w:?}");
        assert!(w[1].contains("`sever` is not a Superna severity"), "{w:?}");
        let w = route("states = [\"lockot\", \"LOCKED_OUT\", \"false_positive\"]").warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("did you mean `lockout`?"), "{w:?}");
        let w = route("[route.config]\nseverity_map = \"critical=critical,major=eror,other=info\"")
            .warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("`eror` (for `major`) is not a PagerDuty severity")
                && w[0].contains("`error`"),
            "{w:?}"
        );
        let w = route("[route.config]\nurl = \"http://pd.example/enqueue\"").warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("allow_http is false"), "{w:?}");
        assert!(
            route("allow_http = true\n[route.config]\nurl = \"http://x\"")
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn unknown_keys_say_did_you_mean() {
        let e = Config::parse("listn = \"127.0.0.1:1\"", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `listen`?"), "{e}");
        let e = Config::parse(
            "[[route]]\nname = \"a\"\ntransform = \"builtin:x\"\nseverity = [\"critical\"]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("did you mean `severities`?"), "{e}");
        let e = Config::parse("[delivery]\nmax_atempts = 3\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `max_attempts`?"), "{e}");
    }
}
