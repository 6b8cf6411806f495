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

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// One parsed webhook event.
///
/// Parsing does not build a DOM of the whole event: one pass over the JSON
/// keeps only the values of the keys some accessor may read (the best
/// candidate per field, chosen exactly as a lookup in the full DOM would
/// choose it) and the text as received.  [`Event::raw`] builds the full
/// value on first use.
#[derive(Debug, Clone)]
pub struct Event {
    /// The JSON as received: its text (value built lazily) or a value.
    raw: Raw,
    /// Per field (indexed by `F_*`), the value that field reads.
    fields: Fields,
}

type Fields = [Option<Value>; FIELDS.len()];

#[derive(Debug, Clone)]
enum Raw {
    Text {
        text: String,
        value: OnceLock<Value>,
    },
    Value(Value),
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
    if s.is_ascii() {
        return s
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect();
    }
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
/// (`lookup_key` matches them; a test keeps the two in step.)
#[cfg_attr(not(test), allow(dead_code))]
const WRAPPER_KEYS: &[&str] = &[
    "event",
    "data",
    "alert",
    "payload",
    "zerotrustevent",
    "details",
];

// Field numbers: indices into `FIELDS` and `Event::fields`.
const F_ID: usize = 0;
const F_SEVERITY: usize = 1;
const F_STATE: usize = 2;
const F_USER: usize = 3;
const F_IP: usize = 4;
const F_SHARE: usize = 5;
const F_FILE: usize = 6;
const F_DETECTOR: usize = 7;
const F_STRENGTH: usize = 8;
const F_CLUSTER: usize = 9;
const F_SOURCE: usize = 10;
const F_TIME: usize = 11;
const F_UPDATED: usize = 12;
const F_URL: usize = 13;
const F_MODE: usize = 14;
const F_SNAPSHOT: usize = 15;
/// Candidate keys of every field, indexed by `F_*`.
const FIELDS: [&[&str]; 16] = [
    ID_KEYS,
    SEVERITY_KEYS,
    STATE_KEYS,
    USER_KEYS,
    IP_KEYS,
    SHARE_KEYS,
    FILE_KEYS,
    DETECTOR_KEYS,
    STRENGTH_KEYS,
    CLUSTER_KEYS,
    SOURCE_KEYS,
    TIME_KEYS,
    UPDATED_KEYS,
    URL_KEYS,
    MODE_KEYS,
    SNAPSHOT_KEYS,
];

/// What a key is, once normalised.
#[derive(Debug, PartialEq)]
enum KeyKind {
    /// A candidate of field `.0` with preference `.1` (lower is better).
    Field(u8, u8),
    /// A wrapper object's name.
    Wrapper,
    Other,
}

/// Classifies a key by its normalised form, without allocating for ASCII
/// keys (the normal case).
fn classify_key(key: &str) -> KeyKind {
    let mut buf = [0u8; 24];
    let mut n = 0;
    for &b in key.as_bytes() {
        if !b.is_ascii() {
            return lookup_key(normalize(key).as_bytes());
        }
        if b.is_ascii_alphanumeric() {
            if n == buf.len() {
                // Longer than every known key (normalising the rest could
                // only make it longer).
                return KeyKind::Other;
            }
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
    }
    lookup_key(&buf[..n])
}

/// The kind of a normalised key: `FIELDS` and `WRAPPER_KEYS` as one
/// `match`, which compiles to a decision tree on the length and the bytes
/// instead of a hundred string comparisons per key (a test checks that it
/// agrees with the lists).
fn lookup_key(norm: &[u8]) -> KeyKind {
    match norm {
        b"eventid" => KeyKind::Field(F_ID as u8, 0),
        b"id" => KeyKind::Field(F_ID as u8, 1),
        b"alertid" => KeyKind::Field(F_ID as u8, 2),
        b"incidentid" => KeyKind::Field(F_ID as u8, 3),
        b"zerotrusteventid" => KeyKind::Field(F_ID as u8, 4),
        b"ransomwareeventid" => KeyKind::Field(F_ID as u8, 5),
        b"eventuuid" => KeyKind::Field(F_ID as u8, 6),
        b"uuid" => KeyKind::Field(F_ID as u8, 7),
        b"eventidentifier" => KeyKind::Field(F_ID as u8, 8),
        b"severity" => KeyKind::Field(F_SEVERITY as u8, 0),
        b"eventseverity" => KeyKind::Field(F_SEVERITY as u8, 1),
        b"severitylevel" => KeyKind::Field(F_SEVERITY as u8, 2),
        b"level" => KeyKind::Field(F_SEVERITY as u8, 3),
        b"priority" => KeyKind::Field(F_SEVERITY as u8, 4),
        b"state" => KeyKind::Field(F_STATE as u8, 0),
        b"eventstate" => KeyKind::Field(F_STATE as u8, 1),
        b"status" => KeyKind::Field(F_STATE as u8, 2),
        b"eventstatus" => KeyKind::Field(F_STATE as u8, 3),
        b"lockoutstate" => KeyKind::Field(F_STATE as u8, 4),
        b"action" => KeyKind::Field(F_STATE as u8, 5),
        b"user" => KeyKind::Field(F_USER as u8, 0),
        b"username" => KeyKind::Field(F_USER as u8, 1),
        b"useraccount" => KeyKind::Field(F_USER as u8, 2),
        b"account" => KeyKind::Field(F_USER as u8, 3),
        b"accountname" => KeyKind::Field(F_USER as u8, 4),
        b"actor" => KeyKind::Field(F_USER as u8, 5),
        b"userid" => KeyKind::Field(F_USER as u8, 6),
        b"nfsclient" => KeyKind::Field(F_USER as u8, 7),
        b"clientips" => KeyKind::Field(F_IP as u8, 0),
        b"clientip" => KeyKind::Field(F_IP as u8, 1),
        b"clientipaddresses" => KeyKind::Field(F_IP as u8, 2),
        b"clientaddresses" => KeyKind::Field(F_IP as u8, 3),
        b"ipaddresses" => KeyKind::Field(F_IP as u8, 4),
        b"ips" => KeyKind::Field(F_IP as u8, 5),
        b"ip" => KeyKind::Field(F_IP as u8, 6),
        b"sourceip" => KeyKind::Field(F_IP as u8, 7),
        b"clients" => KeyKind::Field(F_IP as u8, 8),
        b"shares" => KeyKind::Field(F_SHARE as u8, 0),
        b"share" => KeyKind::Field(F_SHARE as u8, 1),
        b"smbshares" => KeyKind::Field(F_SHARE as u8, 2),
        b"affectedshares" => KeyKind::Field(F_SHARE as u8, 3),
        b"sharenames" => KeyKind::Field(F_SHARE as u8, 4),
        b"sharename" => KeyKind::Field(F_SHARE as u8, 5),
        b"files" => KeyKind::Field(F_FILE as u8, 0),
        b"file" => KeyKind::Field(F_FILE as u8, 1),
        b"filepaths" => KeyKind::Field(F_FILE as u8, 2),
        b"filenames" => KeyKind::Field(F_FILE as u8, 3),
        b"affectedfiles" => KeyKind::Field(F_FILE as u8, 4),
        b"paths" => KeyKind::Field(F_FILE as u8, 5),
        b"path" => KeyKind::Field(F_FILE as u8, 6),
        b"objects" => KeyKind::Field(F_FILE as u8, 7),
        b"threatdetectors" => KeyKind::Field(F_DETECTOR as u8, 0),
        b"detectors" => KeyKind::Field(F_DETECTOR as u8, 1),
        b"detector" => KeyKind::Field(F_DETECTOR as u8, 2),
        b"signals" => KeyKind::Field(F_DETECTOR as u8, 3),
        b"signal" => KeyKind::Field(F_DETECTOR as u8, 4),
        b"threats" => KeyKind::Field(F_DETECTOR as u8, 5),
        b"signalstrength" => KeyKind::Field(F_STRENGTH as u8, 0),
        b"strength" => KeyKind::Field(F_STRENGTH as u8, 1),
        b"detectorcount" => KeyKind::Field(F_STRENGTH as u8, 2),
        b"nes" => KeyKind::Field(F_CLUSTER as u8, 0),
        b"ne" => KeyKind::Field(F_CLUSTER as u8, 1),
        b"cluster" => KeyKind::Field(F_CLUSTER as u8, 2),
        b"clustername" => KeyKind::Field(F_CLUSTER as u8, 3),
        b"clusters" => KeyKind::Field(F_CLUSTER as u8, 4),
        b"nascluster" => KeyKind::Field(F_CLUSTER as u8, 5),
        b"nasname" => KeyKind::Field(F_CLUSTER as u8, 6),
        b"nas" => KeyKind::Field(F_CLUSTER as u8, 7),
        b"eventsource" => KeyKind::Field(F_SOURCE as u8, 0),
        b"sourcetype" => KeyKind::Field(F_SOURCE as u8, 1),
        b"source" => KeyKind::Field(F_SOURCE as u8, 2),
        b"detected" => KeyKind::Field(F_TIME as u8, 0),
        b"detectedat" => KeyKind::Field(F_TIME as u8, 1),
        b"detectiontime" => KeyKind::Field(F_TIME as u8, 2),
        b"detectedtime" => KeyKind::Field(F_TIME as u8, 3),
        b"timestamp" => KeyKind::Field(F_TIME as u8, 4),
        b"time" => KeyKind::Field(F_TIME as u8, 5),
        b"eventtime" => KeyKind::Field(F_TIME as u8, 6),
        b"created" => KeyKind::Field(F_TIME as u8, 7),
        b"createdat" => KeyKind::Field(F_TIME as u8, 8),
        b"createdtime" => KeyKind::Field(F_TIME as u8, 9),
        b"date" => KeyKind::Field(F_TIME as u8, 10),
        b"starttime" => KeyKind::Field(F_TIME as u8, 11),
        b"updated" => KeyKind::Field(F_UPDATED as u8, 0),
        b"updatedat" => KeyKind::Field(F_UPDATED as u8, 1),
        b"lastupdated" => KeyKind::Field(F_UPDATED as u8, 2),
        b"modified" => KeyKind::Field(F_UPDATED as u8, 3),
        b"modifiedat" => KeyKind::Field(F_UPDATED as u8, 4),
        b"url" => KeyKind::Field(F_URL as u8, 0),
        b"consoleurl" => KeyKind::Field(F_URL as u8, 1),
        b"eventurl" => KeyKind::Field(F_URL as u8, 2),
        b"link" => KeyKind::Field(F_URL as u8, 3),
        b"href" => KeyKind::Field(F_URL as u8, 4),
        b"uri" => KeyKind::Field(F_URL as u8, 5),
        b"eyeglassurl" => KeyKind::Field(F_URL as u8, 6),
        b"detailsurl" => KeyKind::Field(F_URL as u8, 7),
        b"protectionmode" => KeyKind::Field(F_MODE as u8, 0),
        b"mode" => KeyKind::Field(F_MODE as u8, 1),
        b"snapshots" => KeyKind::Field(F_SNAPSHOT as u8, 0),
        b"snapshotstaken" => KeyKind::Field(F_SNAPSHOT as u8, 1),
        b"snapshot" => KeyKind::Field(F_SNAPSHOT as u8, 2),
        b"snapshotnames" => KeyKind::Field(F_SNAPSHOT as u8, 3),
        b"event" => KeyKind::Wrapper,
        b"data" => KeyKind::Wrapper,
        b"alert" => KeyKind::Wrapper,
        b"payload" => KeyKind::Wrapper,
        b"zerotrustevent" => KeyKind::Wrapper,
        b"details" => KeyKind::Wrapper,
        _ => KeyKind::Other,
    }
}

/// A value found under a candidate key during the scan.
struct Candidate<'de> {
    field: u8,
    preference: u8,
    /// Position of the wrapper's key among the top-level keys (`None`: the
    /// key is at the top level).
    wrapper: Option<u32>,
    /// Position of the key in its object (first occurrence: a repeated key
    /// keeps its first place and takes its last value, as in a DOM).
    position: u32,
    key: Cow<'de, str>,
    value: Value,
}

impl Candidate<'_> {
    /// Lookup order: top level first, then the field's preference, then
    /// the order of the keys (as a DOM lookup would find them).
    fn rank(&self) -> (bool, u8, u32, u32) {
        (
            self.wrapper.is_some(),
            self.preference,
            self.wrapper.unwrap_or(0),
            self.position,
        )
    }
}

/// The scan's state: candidates so far and the wrappers seen.
#[derive(Default)]
struct Scan<'de> {
    candidates: Vec<Candidate<'de>>,
    /// Wrapper keys at the top level with their first position.
    wrappers: Vec<(Cow<'de, str>, u32)>,
}

impl<'de> Scan<'de> {
    /// Records a value under a candidate key; a repeated key replaces the
    /// value in place.
    fn add(&mut self, c: Candidate<'de>) {
        if let Some(old) = self
            .candidates
            .iter_mut()
            .find(|o| o.wrapper == c.wrapper && o.key == c.key)
        {
            old.value = c.value;
        } else {
            self.candidates.push(c);
        }
    }

    /// The best non-null value per field.
    fn finish(self) -> Fields {
        let mut best: [Option<Candidate<'de>>; FIELDS.len()] = Default::default();
        for c in self.candidates {
            if c.value.is_null() {
                continue;
            }
            let slot = &mut best[c.field as usize];
            if slot.as_ref().is_none_or(|b| c.rank() < b.rank()) {
                *slot = Some(c);
            }
        }
        best.map(|c| c.map(|c| c.value))
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Scans an object's members into `scan`: the top level (`wrapper` None)
/// or one wrapper object (`wrapper` its position).
struct ObjectSeed<'a, 'de> {
    scan: &'a mut Scan<'de>,
    wrapper: Option<u32>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut position = 0u32;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let here = position;
            position += 1;
            match classify_key(&key) {
                KeyKind::Field(field, preference) => {
                    let value = map.next_value::<Value>()?;
                    self.scan.add(Candidate {
                        field,
                        preference,
                        wrapper: self.wrapper,
                        position: here,
                        key,
                        value,
                    });
                }
                KeyKind::Wrapper if self.wrapper.is_none() => {
                    // A repeated wrapper keeps its first place and its last
                    // value: forget what the earlier one held.
                    let at = match self.scan.wrappers.iter().find(|(k, _)| *k == key) {
                        Some(&(_, at)) => {
                            self.scan.candidates.retain(|c| c.wrapper != Some(at));
                            at
                        }
                        None => {
                            self.scan.wrappers.push((key, here));
                            here
                        }
                    };
                    map.next_value_seed(ObjectSeed {
                        scan: self.scan,
                        wrapper: Some(at),
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    // Anything but an object has no fields.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

impl Event {
    /// Parses the webhook body.  Any JSON value is accepted; only objects
    /// have fields.
    pub fn parse(body: &str) -> Result<Event, serde_json::Error> {
        let mut scan = Scan::default();
        let mut de = serde_json::Deserializer::from_str(body);
        ObjectSeed {
            scan: &mut scan,
            wrapper: None,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(Event {
            fields: scan.finish(),
            raw: Raw::Text {
                text: body.to_string(),
                value: OnceLock::new(),
            },
        })
    }

    /// Wraps an already parsed value.
    pub fn from_value(raw: Value) -> Event {
        let mut scan = Scan::default();
        // Reading a `Value` cannot fail.
        let _ = ObjectSeed {
            scan: &mut scan,
            wrapper: None,
        }
        .deserialize(&raw);
        let fields = scan.finish();
        Event {
            fields,
            raw: Raw::Value(raw),
        }
    }

    /// The JSON exactly as received.
    pub fn raw(&self) -> &Value {
        match &self.raw {
            Raw::Value(v) => v,
            // The text was parsed once already: it is valid JSON.
            Raw::Text { text, value } => {
                value.get_or_init(|| serde_json::from_str(text).unwrap_or(Value::Null))
            }
        }
    }

    /// The JSON exactly as received, by value.
    pub fn into_raw(self) -> Value {
        match self.raw {
            Raw::Value(v) => v,
            Raw::Text { text, value } => value
                .into_inner()
                .unwrap_or_else(|| serde_json::from_str(&text).unwrap_or(Value::Null)),
        }
    }

    /// The JSON text as received, when the event was parsed from text
    /// ([`Event::parse`]); valid JSON.
    pub fn raw_text(&self) -> Option<&str> {
        match &self.raw {
            Raw::Text { text, .. } => Some(text),
            Raw::Value(_) => None,
        }
    }

    /// The value of a field: the first of its candidate keys at the top
    /// level, then in a wrapper object; null values count as absent.
    fn find(&self, field: usize) -> Option<&Value> {
        self.fields[field].as_ref()
    }

    fn text(&self, field: usize) -> Option<String> {
        self.find(field)
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
    }

    fn list(&self, field: usize) -> Vec<String> {
        self.find(field).map(list_text).unwrap_or_default()
    }

    /// Superna's event ID, stable across updates of one alert.
    pub fn id(&self) -> Option<String> {
        self.text(F_ID)
    }

    /// Severity (`Other("")` when absent).
    pub fn severity(&self) -> Severity {
        self.text(F_SEVERITY)
            .map(|s| Severity::parse(&s))
            .unwrap_or(Severity::Other(String::new()))
    }

    /// The state as received (e.g. "LOCKED_OUT").
    pub fn state(&self) -> Option<String> {
        self.text(F_STATE)
    }

    /// What the state means.
    pub fn state_kind(&self) -> StateKind {
        self.state()
            .map(|s| StateKind::classify(&s))
            .unwrap_or(StateKind::Other)
    }

    /// The acting user (domain account, or an NFS client IP).
    pub fn user(&self) -> Option<String> {
        self.text(F_USER)
    }

    pub fn client_ips(&self) -> Vec<String> {
        self.list(F_IP)
    }

    pub fn shares(&self) -> Vec<String> {
        self.list(F_SHARE)
    }

    pub fn files(&self) -> Vec<String> {
        self.list(F_FILE)
    }

    /// Number of items of the file list, without copying them.
    pub fn file_count(&self) -> usize {
        match self.find(F_FILE) {
            Some(Value::Array(a)) => a
                .iter()
                .filter(|v| scalar_text(v).is_some_and(|s| !s.is_empty()))
                .count(),
            Some(other) => usize::from(scalar_text(other).is_some_and(|s| !s.is_empty())),
            None => 0,
        }
    }

    pub fn detectors(&self) -> Vec<String> {
        self.list(F_DETECTOR)
    }

    /// Number of detectors triggered, as text.
    pub fn signal_strength(&self) -> Option<String> {
        self.text(F_STRENGTH)
    }

    /// NAS cluster name(s) ("prod-cluster-01").
    pub fn clusters(&self) -> Vec<String> {
        self.list(F_CLUSTER)
    }

    /// Event source type ("ISILON_CLUSTER").
    pub fn event_source(&self) -> Option<String> {
        self.text(F_SOURCE)
    }

    /// Detection time as RFC 3339, when present and readable.
    pub fn detected(&self) -> Option<String> {
        self.find(F_TIME).and_then(time_rfc3339)
    }

    /// Last update time as RFC 3339, when present and readable.
    pub fn updated(&self) -> Option<String> {
        self.find(F_UPDATED).and_then(time_rfc3339)
    }

    /// Link to the event in the Superna console, when it is an http(s) URL.
    pub fn console_url(&self) -> Option<String> {
        self.text(F_URL)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    }

    pub fn protection_mode(&self) -> Option<String> {
        self.text(F_MODE)
    }

    pub fn snapshots(&self) -> Vec<String> {
        self.list(F_SNAPSHOT)
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

    /// The DOM lookup the scan replaced: index every key (and those of
    /// wrapper objects) by normalised name, then search in preference order.
    fn reference_find<'a>(raw: &'a Value, keys: &[&str]) -> Option<&'a Value> {
        let top = raw.as_object()?;
        let mut index: Vec<(String, String, Option<String>)> = Vec::new();
        for (k, v) in top {
            let norm = normalize(k);
            if WRAPPER_KEYS.contains(&norm.as_str()) {
                if let Some(inner) = v.as_object() {
                    for ik in inner.keys() {
                        index.push((normalize(ik), ik.clone(), Some(k.clone())));
                    }
                }
            }
            index.push((norm, k.clone(), None));
        }
        for wrapped in [false, true] {
            for want in keys {
                for (_, key, wrapper) in index
                    .iter()
                    .filter(|e| e.2.is_some() == wrapped && e.0 == *want)
                {
                    let v = match wrapper {
                        None => top.get(key),
                        Some(w) => top.get(w).and_then(|o| o.get(key)),
                    };
                    if let Some(v) = v.filter(|v| !v.is_null()) {
                        return Some(v);
                    }
                }
            }
        }
        None
    }

    #[test]
    fn scan_finds_what_a_dom_lookup_finds() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/events");
        let mut bodies: Vec<String> = std::fs::read_dir(fixtures)
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        bodies.extend(
            [
                SAMPLE,
                // Repeated keys: first place, last value.
                r#"{"id": 1, "ID": 2, "id": null, "event_id": 3}"#,
                r#"{"user": "a", "user": "b"}"#,
                r#"{"data": {"id": 1}, "event": {"id": 2}, "data": {"user": "u"}}"#,
                r#"{"data": {"id": 1}, "data": 5, "alert": {"id": "x"}}"#,
                r#"{"data": 5, "event": {"id": 9}, "data": {"id": 4}}"#,
                // Wrapped and top level: the top level wins whatever the order.
                r#"{"event": {"id": "inner", "severity": "major"}, "id": "outer"}"#,
                r#"{"event": {"id": null}, "id": null, "alertId": "a"}"#,
                // Non-ASCII keys (the Kelvin sign lower-cases to ASCII k).
                "{\"\u{212A}ey\": 1, \"st\u{e4}te\": \"x\", \"m\u{f6}de\": 2, \"pac\u{212A}age\": 3}",
                r#"{"Lock-Out State": "LOCKED", "Detected At": 1749636903, "Ne": {"name": "c1"}}"#,
                r#"{"\u0069d": "escaped key", "us\u0065r": "e"}"#,
                r#"{"files": [{"path": "/a"}, "", null, 3, true, ["x", "y"]], "ips": "1.2.3.4"}"#,
                r#"{"aVeryLongKeyNameThatIsLongerThanAnyKnownKey": 1, "id": {"value": {"name": 7}}}"#,
                r#"{"details": [1, 2], "payload": {"severity": "warn", "details": {"id": 3}}}"#,
                r#"[{"id": 1}]"#,
                r#""id""#,
                "null",
                "12.5",
                "{}",
            ]
            .map(String::from),
        );
        for body in &bodies {
            let scanned = Event::parse(body).unwrap();
            let from_value = Event::from_value(serde_json::from_str(body).unwrap());
            let raw: Value = serde_json::from_str(body).unwrap();
            assert_eq!(scanned.raw(), &raw, "{body}");
            for (f, keys) in FIELDS.iter().enumerate() {
                let want = reference_find(&raw, keys);
                assert_eq!(scanned.find(f), want, "field {f} of {body}");
                assert_eq!(from_value.find(f), want, "field {f} of {body} (from_value)");
            }
            assert_eq!(scanned.file_count(), scanned.files().len(), "{body}");
        }
    }

    #[test]
    fn key_lookup_agrees_with_the_lists() {
        for (f, keys) in FIELDS.iter().enumerate() {
            for (p, k) in keys.iter().enumerate() {
                assert_eq!(
                    lookup_key(k.as_bytes()),
                    KeyKind::Field(f as u8, p as u8),
                    "{k}"
                );
            }
        }
        for k in WRAPPER_KEYS {
            assert_eq!(lookup_key(k.as_bytes()), KeyKind::Wrapper, "{k}");
        }
        assert_eq!(classify_key("Client-IPs"), KeyKind::Field(F_IP as u8, 0));
        assert_eq!(classify_key("Zero_Trust_Event"), KeyKind::Wrapper);
        assert_eq!(classify_key("\u{212A}"), KeyKind::Other);
        assert_eq!(classify_key("clientipaddresses_and_more_x"), KeyKind::Other);
    }

    #[test]
    fn non_objects_have_no_fields() {
        let e = Event::parse("[1,2]").unwrap();
        assert_eq!(e.id(), None);
        assert_eq!(e.severity().name(), "unknown");
    }
}
