//! A tolerant model of a Superna Zero Trust webhook event.
//!
//! Superna does not publish the exact key names of its Zero Trust webhook
//! payload (see `shared/reference/superna-zero-trust.md`), so nothing here
//! assumes one spelling:
//!
//! * every field is optional;
//! * keys are matched after normalisation (case, `_`, `-` and spaces are
//!   ignored), so `clientIPs`, `client_ips` and `Client-IPs` are one key;
//! * lists accept a scalar or an array (and arrays of objects with a name);
//! * times accept RFC 3339 strings or epoch seconds / milliseconds;
//! * severities and states compare case-insensitively;
//! * the raw JSON is always kept ([`Event::raw`]) so that nothing received is
//!   lost when a key is spelled differently from what we expect.
//!
//! The crate is plain Rust with one dependency (serde_json) so that the host
//! (route filters) and the guest transforms (mapping) read events the same
//! way.

use serde_json::{Map, Value};

/// One parsed webhook event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The JSON exactly as received.
    raw: Value,
    /// Normalised key -> where it is, built once so field lookups do not
    /// normalise every key again (this is the transform's hot path).
    index: Vec<IndexEntry>,
}

#[derive(Debug, Clone)]
struct IndexEntry {
    /// Normalised key name.
    norm: String,
    /// The key as received.
    key: String,
    /// The wrapper object holding it (`None`: top level).
    wrapper: Option<String>,
}

/// Superna's documented severities, plus whatever else arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    /// Immediate lockout.
    Critical,
    /// Delayed lockout after a grace period.
    Major,
    /// Alert only.
    Warning,
    /// Anything else, as received (may be empty when absent).
    Other(String),
}

impl Severity {
    /// Reads a severity case-insensitively ("CRITICAL", "Critical", "crit").
    pub fn parse(s: &str) -> Severity {
        let n = normalize(s);
        if n.starts_with("crit") {
            Severity::Critical
        } else if n.starts_with("maj") {
            Severity::Major
        } else if n.starts_with("warn") {
            Severity::Warning
        } else {
            Severity::Other(s.trim().to_string())
        }
    }

    /// Lower-case name used in configuration and logs.
    pub fn name(&self) -> String {
        match self {
            Severity::Critical => "critical".into(),
            Severity::Major => "major".into(),
            Severity::Warning => "warning".into(),
            Severity::Other(s) if s.is_empty() => "unknown".into(),
            Severity::Other(s) => s.to_lowercase(),
        }
    }

    /// Display form as Superna shows it ("Critical").
    pub fn label(&self) -> String {
        match self {
            Severity::Critical => "Critical".into(),
            Severity::Major => "Major".into(),
            Severity::Warning => "Warning".into(),
            Severity::Other(s) if s.is_empty() => "Unknown".into(),
            Severity::Other(s) => s.clone(),
        }
    }
}

/// What a state means, whatever its spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// The user was locked out immediately.
    Lockout,
    /// The user will be locked out after a grace period.
    DelayedLockout,
    /// An analyst restored the user's access.
    AccessRestored,
    /// An analyst marked the event as recovered (archived).
    Recovered,
    /// An analyst flagged the event as a false positive.
    FalsePositive,
    /// Anything else (monitor-only alerts, unknown states).
    Other,
}

impl StateKind {
    /// Classifies a raw state string.
    pub fn classify(state: &str) -> StateKind {
        let n = normalize(state);
        if n.contains("falsepositive") {
            StateKind::FalsePositive
        } else if n.contains("recover") || n.contains("archiv") {
            StateKind::Recovered
        } else if n.contains("restor") || n.contains("unlock") {
            StateKind::AccessRestored
        } else if n.contains("delayed") {
            StateKind::DelayedLockout
        } else if n.contains("lock") {
            StateKind::Lockout
        } else {
            StateKind::Other
        }
    }

    /// Configuration name of the kind (`access_restored`...).
    pub fn name(self) -> &'static str {
        match self {
            StateKind::Lockout => "lockout",
            StateKind::DelayedLockout => "delayed_lockout",
            StateKind::AccessRestored => "access_restored",
            StateKind::Recovered => "recovered",
            StateKind::FalsePositive => "false_positive",
            StateKind::Other => "other",
        }
    }

    /// True when the incident is over (access restored, recovered, false
    /// positive).
    pub fn is_end(self) -> bool {
        matches!(
            self,
            StateKind::AccessRestored | StateKind::Recovered | StateKind::FalsePositive
        )
    }
}

/// True when `state` matches one entry of a configured list: an entry is a
/// kind name (`access_restored`) or a raw state, compared normalised.
pub fn state_matches(state: &str, entries: &[String]) -> bool {
    let kind = StateKind::classify(state);
    let n = normalize(state);
    entries.iter().any(|e| {
        let e = normalize(e);
        !e.is_empty() && (e == normalize(kind.name()) || e == n)
    })
}

/// True when `severity` matches one entry of a configured list, compared
/// by meaning ("crit" = "CRITICAL") or, for other values, normalised.
pub fn severity_matches(severity: &Severity, entries: &[String]) -> bool {
    entries.iter().any(|e| {
        let parsed = Severity::parse(e);
        match (&parsed, severity) {
            (Severity::Other(a), Severity::Other(b)) => normalize(a) == normalize(b),
            (a, b) => a == b,
        }
    })
}

/// Lower-cases and drops everything but letters and digits.
pub fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

// Candidate key names, normalised, in order of preference.
const ID_KEYS: &[&str] = &[
    "eventid",
    "id",
    "alertid",
    "incidentid",
    "zerotrusteventid",
    "ransomwareeventid",
    "eventuuid",
    "uuid",
    "eventidentifier",
];
const SEVERITY_KEYS: &[&str] = &[
    "severity",
    "eventseverity",
    "severitylevel",
    "level",
    "priority",
];
const STATE_KEYS: &[&str] = &[
    "state",
    "eventstate",
    "status",
    "eventstatus",
    "lockoutstate",
    "action",
];
const USER_KEYS: &[&str] = &[
    "user",
    "username",
    "useraccount",
    "account",
    "accountname",
    "actor",
    "userid",
    "nfsclient",
];
const IP_KEYS: &[&str] = &[
    "clientips",
    "clientip",
    "clientipaddresses",
    "clientaddresses",
    "ipaddresses",
    "ips",
    "ip",
    "sourceip",
    "clients",
];
const SHARE_KEYS: &[&str] = &[
    "shares",
    "share",
    "smbshares",
    "affectedshares",
    "sharenames",
    "sharename",
];
const FILE_KEYS: &[&str] = &[
    "files",
    "file",
    "filepaths",
    "filenames",
    "affectedfiles",
    "paths",
    "path",
    "objects",
];
const DETECTOR_KEYS: &[&str] = &[
    "threatdetectors",
    "detectors",
    "detector",
    "signals",
    "signal",
    "threats",
];
const STRENGTH_KEYS: &[&str] = &["signalstrength", "strength", "detectorcount"];
const CLUSTER_KEYS: &[&str] = &[
    "nes",
    "ne",
    "cluster",
    "clustername",
    "clusters",
    "nascluster",
    "nasname",
    "nas",
];
const SOURCE_KEYS: &[&str] = &["eventsource", "sourcetype", "source"];
const TIME_KEYS: &[&str] = &[
    "detected",
    "detectedat",
    "detectiontime",
    "detectedtime",
    "timestamp",
    "time",
    "eventtime",
    "created",
    "createdat",
    "createdtime",
    "date",
    "starttime",
];
const UPDATED_KEYS: &[&str] = &[
    "updated",
    "updatedat",
    "lastupdated",
    "modified",
    "modifiedat",
];
const URL_KEYS: &[&str] = &[
    "url",
    "consoleurl",
    "eventurl",
    "link",
    "href",
    "uri",
    "eyeglassurl",
    "detailsurl",
];
const MODE_KEYS: &[&str] = &["protectionmode", "mode"];
const SNAPSHOT_KEYS: &[&str] = &["snapshots", "snapshotstaken", "snapshot", "snapshotnames"];
/// Objects that may wrap the event (`{"event": {...}}`).
const WRAPPER_KEYS: &[&str] = &[
    "event",
    "data",
    "alert",
    "payload",
    "zerotrustevent",
    "details",
];

impl Event {
    /// Parses the webhook body.  Any JSON value is accepted; only objects
    /// have fields.
    pub fn parse(body: &str) -> Result<Event, serde_json::Error> {
        Ok(Event::from_value(serde_json::from_str(body)?))
    }

    /// Wraps an already parsed value.
    pub fn from_value(raw: Value) -> Event {
        let mut index = Vec::new();
        if let Some(top) = raw.as_object() {
            for (k, v) in top {
                let norm = normalize(k);
                if WRAPPER_KEYS.contains(&norm.as_str()) {
                    if let Some(inner) = v.as_object() {
                        for ik in inner.keys() {
                            index.push(IndexEntry {
                                norm: normalize(ik),
                                key: ik.clone(),
                                wrapper: Some(k.clone()),
                            });
                        }
                    }
                }
                index.push(IndexEntry {
                    norm,
                    key: k.clone(),
                    wrapper: None,
                });
            }
        }
        Event { raw, index }
    }

    /// The JSON exactly as received.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The JSON exactly as received, by value.
    pub fn into_raw(self) -> Value {
        self.raw
    }

    /// Finds the first of `keys` at the top level, then in a wrapper
    /// object; null values count as absent.
    fn find(&self, keys: &[&str]) -> Option<&Value> {
        let top = self.raw.as_object()?;
        for wrapped in [false, true] {
            for want in keys {
                for e in self
                    .index
                    .iter()
                    .filter(|e| e.wrapper.is_some() == wrapped && e.norm == *want)
                {
                    let v = match &e.wrapper {
                        None => top.get(&e.key),
                        Some(w) => top.get(w).and_then(|o| o.get(&e.key)),
                    };
                    if let Some(v) = v.filter(|v| !v.is_null()) {
                        return Some(v);
                    }
                }
            }
        }
        None
    }

    fn text(&self, keys: &[&str]) -> Option<String> {
        self.find(keys)
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
    }

    fn list(&self, keys: &[&str]) -> Vec<String> {
        self.find(keys).map(list_text).unwrap_or_default()
    }

    /// Superna's event ID, stable across updates of one alert.
    pub fn id(&self) -> Option<String> {
        self.text(ID_KEYS)
    }

    /// Severity (`Other("")` when absent).
    pub fn severity(&self) -> Severity {
        self.text(SEVERITY_KEYS)
            .map(|s| Severity::parse(&s))
            .unwrap_or(Severity::Other(String::new()))
    }

    /// The state as received (e.g. "LOCKED_OUT").
    pub fn state(&self) -> Option<String> {
        self.text(STATE_KEYS)
    }

    /// What the state means.
    pub fn state_kind(&self) -> StateKind {
        self.state()
            .map(|s| StateKind::classify(&s))
            .unwrap_or(StateKind::Other)
    }

    /// The acting user (domain account, or an NFS client IP).
    pub fn user(&self) -> Option<String> {
        self.text(USER_KEYS)
    }

    pub fn client_ips(&self) -> Vec<String> {
        self.list(IP_KEYS)
    }

    pub fn shares(&self) -> Vec<String> {
        self.list(SHARE_KEYS)
    }

    pub fn files(&self) -> Vec<String> {
        self.list(FILE_KEYS)
    }

    pub fn detectors(&self) -> Vec<String> {
        self.list(DETECTOR_KEYS)
    }

    /// Number of detectors triggered, as text.
    pub fn signal_strength(&self) -> Option<String> {
        self.text(STRENGTH_KEYS)
    }

    /// NAS cluster name(s) ("prod-cluster-01").
    pub fn clusters(&self) -> Vec<String> {
        self.list(CLUSTER_KEYS)
    }

    /// Event source type ("ISILON_CLUSTER").
    pub fn event_source(&self) -> Option<String> {
        self.text(SOURCE_KEYS)
    }

    /// Detection time as RFC 3339, when present and readable.
    pub fn detected(&self) -> Option<String> {
        self.find(TIME_KEYS).and_then(time_rfc3339)
    }

    /// Last update time as RFC 3339, when present and readable.
    pub fn updated(&self) -> Option<String> {
        self.find(UPDATED_KEYS).and_then(time_rfc3339)
    }

    /// Link to the event in the Superna console, when it is an http(s) URL.
    pub fn console_url(&self) -> Option<String> {
        self.text(URL_KEYS)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    }

    pub fn protection_mode(&self) -> Option<String> {
        self.text(MODE_KEYS)
    }

    pub fn snapshots(&self) -> Vec<String> {
        self.list(SNAPSHOT_KEYS)
    }
}

fn find_in<'a>(obj: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    // Preference follows `keys`, not the object's order.
    keys.iter().find_map(|want| {
        obj.iter()
            .find(|(k, v)| !v.is_null() && normalize(k) == *want)
            .map(|(_, v)| v)
    })
}

/// A scalar as text; objects give their name-like member.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(o) => find_in(
            o,
            &[
                "name",
                "displayname",
                "value",
                "path",
                "id",
                "ip",
                "address",
                "username",
            ],
        )
        .and_then(scalar_text),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().filter_map(scalar_text).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        }
        Value::Null => None,
    }
}

/// A scalar or an array as a list of texts; a comma-separated string stays
/// one item (file names may contain commas).
fn list_text(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(scalar_text)
            .filter(|s| !s.is_empty())
            .collect(),
        other => scalar_text(other)
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect(),
    }
}

/// Reads RFC 3339 / ISO 8601 text or epoch seconds / milliseconds.
fn time_rfc3339(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_i64().and_then(epoch_to_rfc3339),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<i64>() {
                return epoch_to_rfc3339(n);
            }
            looks_iso8601(s).then(|| s.to_string())
        }
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM` at least (a space instead of `T` is accepted and
/// fixed).
fn looks_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 16
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
}

/// Epoch seconds, or milliseconds when the number is too large to be
/// seconds of a plausible date.
pub fn epoch_to_rfc3339(n: i64) -> Option<String> {
    let (secs, millis) = if n.unsigned_abs() >= 100_000_000_000 {
        (n.div_euclid(1000), n.rem_euclid(1000))
    } else {
        (n, 0)
    };
    if !(0..=253_402_300_799).contains(&secs) {
        return None;
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    Some(if millis == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
    })
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "id": "RSW-20250611-000123", "severity": "CRITICAL", "state": "LOCKED_OUT",
      "user": "CORP\\jsmith", "clientIPs": ["10.20.30.41"],
      "shares": ["\\\\prod-cluster-01\\finance"],
      "files": ["/ifs/data/finance/q2/budget.xlsx.locked"],
      "eventSource": "ISILON_CLUSTER", "nes": ["prod-cluster-01"], "signalStrength": 3,
      "threatDetectors": ["Mass file rename", "Honeypot access"],
      "detected": "2025-06-11T10:15:03Z"}"#;

    #[test]
    fn reads_the_illustrative_payload() {
        let e = Event::parse(SAMPLE).unwrap();
        assert_eq!(e.id().as_deref(), Some("RSW-20250611-000123"));
        assert_eq!(e.severity(), Severity::Critical);
        assert_eq!(e.state_kind(), StateKind::Lockout);
        assert_eq!(e.user().as_deref(), Some("CORP\\jsmith"));
        assert_eq!(e.client_ips(), vec!["10.20.30.41"]);
        assert_eq!(e.clusters(), vec!["prod-cluster-01"]);
        assert_eq!(e.event_source().as_deref(), Some("ISILON_CLUSTER"));
        assert_eq!(e.signal_strength().as_deref(), Some("3"));
        assert_eq!(e.detectors().len(), 2);
        assert_eq!(e.detected().as_deref(), Some("2025-06-11T10:15:03Z"));
    }

    #[test]
    fn other_spellings_and_shapes() {
        let e = Event::parse(
            r#"{"data": {"event_id": 77, "Severity": "major", "Status": "Access Restored",
                "client_ip": "10.0.0.9", "user_name": {"name": "bob"},
                "created_at": 1749636903000}}"#,
        )
        .unwrap();
        assert_eq!(e.id().as_deref(), Some("77"));
        assert_eq!(e.severity(), Severity::Major);
        assert_eq!(e.state_kind(), StateKind::AccessRestored);
        assert!(e.state_kind().is_end());
        assert_eq!(e.client_ips(), vec!["10.0.0.9"]);
        assert_eq!(e.user().as_deref(), Some("bob"));
        assert_eq!(e.detected().as_deref(), Some("2025-06-11T10:15:03Z"));
    }

    #[test]
    fn states_classify() {
        for (s, k) in [
            ("LOCKED_OUT", StateKind::Lockout),
            ("lockout", StateKind::Lockout),
            ("Delayed Lockout", StateKind::DelayedLockout),
            ("DELAYED_LOCKOUT", StateKind::DelayedLockout),
            ("Restore User Access", StateKind::AccessRestored),
            ("ACCESS_RESTORED", StateKind::AccessRestored),
            ("Mark As Recovered", StateKind::Recovered),
            ("Flag As False Positive", StateKind::FalsePositive),
            ("MONITOR", StateKind::Other),
        ] {
            assert_eq!(StateKind::classify(s), k, "{s}");
        }
        assert!(state_matches(
            "Flag As False Positive",
            &["false_positive".into()]
        ));
        assert!(state_matches("WEIRD_STATE", &["weird-state".into()]));
        assert!(!state_matches("LOCKED_OUT", &["recovered".into()]));
    }

    #[test]
    fn severities_match_by_meaning() {
        let list = vec!["Critical".to_string(), "MAJOR".to_string()];
        assert!(severity_matches(&Severity::parse("CRITICAL"), &list));
        assert!(severity_matches(&Severity::parse("major"), &list));
        assert!(!severity_matches(&Severity::parse("Warning"), &list));
        assert!(!severity_matches(&Severity::Other(String::new()), &list));
    }

    #[test]
    fn epoch_conversion() {
        assert_eq!(epoch_to_rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            epoch_to_rfc3339(951_782_400).as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
        assert_eq!(
            epoch_to_rfc3339(1_749_636_903_250).as_deref(),
            Some("2025-06-11T10:15:03.250Z")
        );
        assert_eq!(epoch_to_rfc3339(-5), None);
    }

    #[test]
    fn non_objects_have_no_fields() {
        let e = Event::parse("[1,2]").unwrap();
        assert_eq!(e.id(), None);
        assert_eq!(e.severity().name(), "unknown");
    }
}
