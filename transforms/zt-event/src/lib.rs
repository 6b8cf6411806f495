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
//! * times accept RFC 3339 / ISO 8601 strings (`T` or a space, with or
//!   without a zone) or epoch seconds / milliseconds, and are checked to
//!   exist ([`text_to_rfc3339`]);
//! * severities and states compare case-insensitively;
//! * the raw JSON is always kept ([`Event::raw`]) so that nothing received is
//!   lost when a key is spelled differently from what we expect.
//!
//! The crate is plain Rust with two dependencies (serde_json, and `time` to
//! read dates) so that the host (route filters) and the guest transforms
//! (mapping) read events the same way.

use std::borrow::Cow;
use std::sync::OnceLock;

use serde_json::Value;

pub mod json;
mod time;

pub use json::ParseError;
use json::{KeyIndex, Scanner, Span, elements, name_member, string_value};
pub use time::{epoch_to_rfc3339, text_to_rfc3339};

/// One parsed webhook event.
///
/// Parsing builds no DOM: one pass over the JSON text ([`json`]) checks
/// it, and keeps, per field, where the value that field reads lies in the
/// text (the best candidate, chosen exactly as a lookup in the full DOM
/// would choose it).  Accessors decode only what they are asked for;
/// [`Event::raw`] builds the full value on first use.
#[derive(Debug, Clone)]
pub struct Event {
    /// The JSON text as received.
    text: String,
    /// The whole value, built on first use of [`Event::raw`].
    value: OnceLock<Value>,
    /// Per field (indexed by `F_*`), where its value lies in `text`.
    fields: Fields,
    /// The scan met a key naming an alert ID (`ALERT_KEYS`) at the top
    /// level or in a wrapper: without one, [`Event::alert_id`] answers
    /// `None` without building the DOM (which cost about half of
    /// [`Event::record`]).
    alert_key: bool,
}

type Fields = [Option<Span>; FIELDS.len()];

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
        let kind = with_normalized(s, |n| {
            if n.starts_with(b"crit") {
                Some(Severity::Critical)
            } else if n.starts_with(b"maj") {
                Some(Severity::Major)
            } else if n.starts_with(b"warn") {
                Some(Severity::Warning)
            } else {
                None
            }
        });
        kind.unwrap_or_else(|| Severity::Other(s.trim().to_string()))
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
        with_normalized(state, StateKind::classify_normalized)
    }

    fn classify_normalized(n: &[u8]) -> StateKind {
        let has = |needle: &[u8]| {
            n.windows(needle.len())
                .any(|w| w[0] == needle[0] && w == needle)
        };
        if has(b"falsepositive") {
            StateKind::FalsePositive
        } else if has(b"recover") || has(b"archiv") {
            StateKind::Recovered
        } else if has(b"restor") || has(b"unlock") {
            StateKind::AccessRestored
        } else if has(b"delayed") {
            StateKind::DelayedLockout
        } else if has(b"lock") {
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
    with_normalized(state, |n| {
        let kind = normalize(StateKind::classify_normalized(n).name());
        entries
            .iter()
            .any(|e| with_normalized(e, |e| !e.is_empty() && (e == kind.as_bytes() || e == n)))
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

/// Calls `f` with [`normalize`]`(s)`, without allocating for short ASCII
/// text (the normal case).
pub(crate) fn with_normalized<R>(s: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; 64];
    let mut n = 0;
    for &b in s.as_bytes() {
        if !b.is_ascii() || n == buf.len() {
            return f(normalize(s).as_bytes());
        }
        if b.is_ascii_alphanumeric() {
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
    }
    f(&buf[..n])
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
const POLICY_KEYS: &[&str] = &[
    "policy",
    "policyname",
    "rule",
    "rulename",
    "triggeredpolicy",
    "triggeredrule",
    "securitypolicy",
];
/// Keys of an alert or incident ID beside the event ID (also event ID
/// candidates: [`Event::alert_id`] reads them only when they differ).
const ALERT_KEYS: &[&str] = &["incidentid", "alertid", "caseid"];
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
const F_POLICY: usize = 16;
/// Candidate keys of every field, indexed by `F_*`.
const FIELDS: [&[&str]; 17] = [
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
    POLICY_KEYS,
];

/// What a key is, once normalised.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyKind {
    /// A candidate of field `.0` with preference `.1` (lower is better).
    Field(u8, u8),
    /// A wrapper object's name.
    Wrapper,
    /// An alert ID key that is no field's candidate (read only by
    /// [`Event::alert_id`]).
    Alert,
    Other,
}

/// FNV-1a (64-bit) of normalised key bytes, one byte at a time.
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;
const fn fnv_step(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
}
const fn fnv(bytes: &[u8]) -> u64 {
    let (mut h, mut i) = (FNV_START, 0);
    while i < bytes.len() {
        h = fnv_step(h, bytes[i]);
        i += 1;
    }
    h
}

/// Slots of [`KEY_TABLE`] (a power of two, over twice the known keys).
const SLOTS: usize = 256;
type Slot = Option<(u64, &'static [u8], KeyKind)>;

/// Every known key (`FIELDS` and `WRAPPER_KEYS`) by its hash, open
/// addressing with linear probing: one probe or two per key read, instead
/// of comparing a key with a hundred names.  Built at compile time.
static KEY_TABLE: [Slot; SLOTS] = {
    const fn same(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    /// Adds `key` unless it is there already (the first kind stays).
    const fn insert(table: &mut [Slot; SLOTS], key: &'static str, kind: KeyKind) {
        let h = fnv(key.as_bytes());
        let mut i = h as usize & (SLOTS - 1);
        while let Some((_, k, _)) = table[i] {
            if same(k, key.as_bytes()) {
                return;
            }
            i = (i + 1) & (SLOTS - 1);
        }
        table[i] = Some((h, key.as_bytes(), kind));
    }
    let mut table: [Slot; SLOTS] = [None; SLOTS];
    let mut f = 0;
    while f < FIELDS.len() {
        let mut p = 0;
        while p < FIELDS[f].len() {
            insert(&mut table, FIELDS[f][p], KeyKind::Field(f as u8, p as u8));
            p += 1;
        }
        f += 1;
    }
    let mut w = 0;
    while w < WRAPPER_KEYS.len() {
        insert(&mut table, WRAPPER_KEYS[w], KeyKind::Wrapper);
        w += 1;
    }
    let mut a = 0;
    while a < ALERT_KEYS.len() {
        insert(&mut table, ALERT_KEYS[a], KeyKind::Alert);
        a += 1;
    }
    table
};

/// Whether a key of this kind names an alert ID (`ALERT_KEYS`).
fn is_alert_key(kind: KeyKind) -> bool {
    match kind {
        KeyKind::Alert => true,
        KeyKind::Field(f, p) if f as usize == F_ID => ALERT_KEYS.contains(&ID_KEYS[p as usize]),
        _ => false,
    }
}

/// Classifies a key by its normalised form, without allocating for ASCII
/// keys (the normal case).
fn classify_key(key: &str) -> KeyKind {
    let mut buf = [0u8; 24];
    let (mut n, mut h) = (0, FNV_START);
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
            let b = b.to_ascii_lowercase();
            buf[n] = b;
            h = fnv_step(h, b);
            n += 1;
        }
    }
    lookup_hashed(&buf[..n], h)
}

/// The kind of a normalised key.
fn lookup_key(norm: &[u8]) -> KeyKind {
    lookup_hashed(norm, fnv(norm))
}

/// [`lookup_key`] with the key's hash already computed.
fn lookup_hashed(norm: &[u8], h: u64) -> KeyKind {
    let mut i = h as usize & (SLOTS - 1);
    loop {
        match KEY_TABLE[i] {
            None => return KeyKind::Other,
            Some((kh, k, kind)) if kh == h && k == norm => return kind,
            Some(_) => i = (i + 1) & (SLOTS - 1),
        }
    }
}

/// A value found under a candidate key during the scan.
struct Candidate<'a> {
    field: u8,
    preference: u8,
    /// Position of the wrapper's key among the top-level keys (`None`: the
    /// key is at the top level).
    wrapper: Option<u32>,
    /// Index of that wrapper in `Scan::wrappers`, and its generation when
    /// the value was seen: a repeated wrapper starts a new generation and
    /// what the older ones held no longer counts.
    wrapper_slot: u32,
    generation: u32,
    /// Position of the key in its object (first occurrence: a repeated key
    /// keeps its first place and takes its last value, as in a DOM).
    position: u32,
    key: Cow<'a, str>,
    /// Where the value lies in the text.
    value: Span,
    /// The value is `null` (null values count as absent).
    null: bool,
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
///
/// Repeated keys are found through [`KeyIndex`]es, not by comparing every
/// key with every other: an event with thousands of spellings of `id` (or
/// of `event`) costs linear time, not quadratic.
struct Scan<'a> {
    candidates: Vec<Candidate<'a>>,
    /// (wrapper slot, key) of each candidate, to its index.
    candidate_index: KeyIndex<(u32, Cow<'a, str>)>,
    /// Wrapper keys at the top level: (first position, generation).
    wrappers: Vec<(u32, u32)>,
    /// Wrapper key to its index in `wrappers`.
    wrapper_index: KeyIndex<Cow<'a, str>>,
    /// A key naming an alert ID was met (see `Event::alert_key`).
    alert_key: bool,
}

/// `wrapper_slot` of top-level candidates.
const TOP: u32 = u32::MAX;

impl<'a> Scan<'a> {
    fn new() -> Scan<'a> {
        Scan {
            candidates: Vec::with_capacity(16),
            candidate_index: KeyIndex::default(),
            wrappers: Vec::new(),
            wrapper_index: KeyIndex::default(),
            alert_key: false,
        }
    }

    /// Whether a candidate belongs to the latest value of its wrapper.
    fn current(&self, c: &Candidate) -> bool {
        c.wrapper_slot == TOP || self.wrappers[c.wrapper_slot as usize].1 == c.generation
    }

    /// Records a value under a candidate key; a repeated key replaces the
    /// value in place (and keeps its first position, unless what it
    /// replaces belonged to an earlier value of its wrapper).
    fn add(&mut self, c: Candidate<'a>) {
        let next = self.candidates.len();
        match self
            .candidate_index
            .get_or_insert((c.wrapper_slot, c.key.clone()), next)
        {
            Some(i) if self.current(&self.candidates[i]) => {
                let old = &mut self.candidates[i];
                old.value = c.value;
                old.null = c.null;
            }
            Some(i) => self.candidates[i] = c,
            None => self.candidates.push(c),
        }
    }

    /// The best non-null value per field.
    fn finish(self) -> Fields {
        let mut best: [Option<&Candidate<'a>>; FIELDS.len()] = Default::default();
        for c in &self.candidates {
            if c.null || !self.current(c) {
                continue;
            }
            let slot = &mut best[c.field as usize];
            if slot.is_none_or(|b| c.rank() < b.rank()) {
                *slot = Some(c);
            }
        }
        best.map(|c| c.map(|c| c.value))
    }

    /// Reads the members of the object the scanner is at (its `{`): the
    /// top level (`wrapper` None) or one wrapper object (`wrapper` its
    /// index in `wrappers`).
    fn object(&mut self, sc: &mut Scanner<'a>, wrapper: Option<u32>) -> Result<(), ParseError> {
        sc.at += 1; // `{`
        sc.outer += 1;
        let read = self.members(sc, wrapper);
        sc.outer -= 1;
        read
    }

    fn members(&mut self, sc: &mut Scanner<'a>, wrapper: Option<u32>) -> Result<(), ParseError> {
        sc.skip_ws();
        if sc.eat(b'}') {
            return Ok(());
        }
        let mut position = 0u32;
        loop {
            let key = sc.key()?;
            let here = position;
            position += 1;
            let kind = classify_key(&key);
            self.alert_key |= is_alert_key(kind);
            match kind {
                KeyKind::Field(field, preference) => {
                    let value = sc.value()?;
                    let (slot, generation) = match wrapper {
                        Some(slot) => (slot, self.wrappers[slot as usize].1),
                        None => (TOP, 0),
                    };
                    self.add(Candidate {
                        field,
                        preference,
                        wrapper: wrapper.map(|slot| self.wrappers[slot as usize].0),
                        wrapper_slot: slot,
                        generation,
                        position: here,
                        key,
                        null: sc.is_null(value),
                        value,
                    });
                }
                KeyKind::Wrapper if wrapper.is_none() => {
                    // A repeated wrapper keeps its first place and its last
                    // value: forget what the earlier one held.
                    let next = self.wrappers.len();
                    let slot = match self.wrapper_index.get_or_insert(key, next) {
                        Some(slot) => {
                            self.wrappers[slot].1 += 1;
                            slot
                        }
                        None => {
                            self.wrappers.push((here, 0));
                            next
                        }
                    };
                    sc.skip_ws();
                    if sc.peek() == Some(b'{') {
                        self.object(sc, Some(slot as u32))?;
                    } else {
                        sc.value()?;
                    }
                }
                _ => {
                    sc.value()?;
                }
            }
            if !sc.next_member()? {
                return Ok(());
            }
        }
    }
}

impl Event {
    /// Parses the webhook body.  Any JSON value is accepted; only objects
    /// have fields.
    pub fn parse(body: impl Into<String>) -> Result<Event, ParseError> {
        let text: String = body.into();
        let (fields, alert_key) = {
            let mut scan = Scan::new();
            let mut sc = Scanner::new(&text);
            sc.skip_ws();
            if sc.peek() == Some(b'{') {
                scan.object(&mut sc, None)?;
            } else {
                sc.value()?;
            }
            sc.end()?;
            let alert_key = scan.alert_key;
            (scan.finish(), alert_key)
        };
        Ok(Event {
            text,
            value: OnceLock::new(),
            fields,
            alert_key,
        })
    }

    /// Wraps an already parsed value.  Its fields are read from the
    /// value's serde_json text, so a float that is not exactly
    /// representable may read one unit in the last place away from what
    /// [`Event::parse`] of the original text reads (serde_json's default
    /// float parsing does not round-trip; found by fuzzing, `fuzz/`
    /// `zt_event`).  Use [`Event::parse`] when the text is at hand.
    pub fn from_value(raw: Value) -> Event {
        // serde_json writes valid JSON, which `parse` accepts.
        let mut event = Event::parse(raw.to_string()).unwrap_or_else(|_| Event {
            text: "null".into(),
            value: OnceLock::new(),
            fields: Default::default(),
            alert_key: false,
        });
        event.value = OnceLock::from(raw);
        event
    }

    /// The JSON exactly as received.
    pub fn raw(&self) -> &Value {
        // The text was checked once already: it is valid JSON.
        self.value
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or(Value::Null))
    }

    /// The JSON exactly as received, by value.
    pub fn into_raw(self) -> Value {
        let Event { text, value, .. } = self;
        value
            .into_inner()
            .unwrap_or_else(|| serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The JSON text as received; valid JSON.
    pub fn raw_text(&self) -> &str {
        &self.text
    }

    /// The JSON text of a field's value: the first of its candidate keys
    /// at the top level, then in a wrapper object; null values count as
    /// absent.
    fn find(&self, field: usize) -> Option<&str> {
        self.fields[field].map(|s| &self.text[s.start..s.end])
    }

    fn text(&self, field: usize) -> Option<Cow<'_, str>> {
        self.find(field)
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
    }

    fn list(&self, field: usize) -> Vec<Cow<'_, str>> {
        self.find(field).map(list_text).unwrap_or_default()
    }

    /// Superna's event ID, stable across updates of one alert.  A string
    /// is trimmed; a number is kept exactly as written (an ID is a name,
    /// not a quantity: `1.5e3` stays `1.5e3` and a 20-digit ID keeps every
    /// digit, so two alerts never share a key through rounding).
    pub fn id(&self) -> Option<Cow<'_, str>> {
        self.find(F_ID).and_then(id_text)
    }

    /// An alert or incident ID the event carries besides its event ID
    /// (`incidentId`, `alertId`, `caseId`, at the top level or in a
    /// wrapper object), when it differs from [`Event::id`].
    pub fn alert_id(&self) -> Option<String> {
        if !self.alert_key {
            return None;
        }
        let id = self.id();
        let top = self.raw().as_object()?;
        let wrapper = top.iter().find_map(|(k, v)| {
            WRAPPER_KEYS
                .contains(&normalize(k).as_str())
                .then(|| v.as_object())
                .flatten()
        });
        for obj in std::iter::once(top).chain(wrapper) {
            for want in ALERT_KEYS {
                for (k, v) in obj {
                    if normalize(k) != *want {
                        continue;
                    }
                    let text = match v {
                        Value::String(s) => s.trim().to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => continue,
                    };
                    if !text.is_empty() && id.as_deref() != Some(text.as_str()) {
                        return Some(text);
                    }
                }
            }
        }
        None
    }

    /// The policy or rule that fired.
    pub fn policy(&self) -> Option<Cow<'_, str>> {
        self.text(F_POLICY)
    }

    /// Severity (`Other("")` when absent).
    pub fn severity(&self) -> Severity {
        self.find(F_SEVERITY)
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
            .map(|s| Severity::parse(&s))
            .unwrap_or(Severity::Other(String::new()))
    }

    /// The state as received (e.g. "LOCKED_OUT").
    pub fn state(&self) -> Option<Cow<'_, str>> {
        self.text(F_STATE)
    }

    /// What the state means.
    pub fn state_kind(&self) -> StateKind {
        self.find(F_STATE)
            .and_then(scalar_text)
            .map(|s| StateKind::classify(&s))
            .unwrap_or(StateKind::Other)
    }

    /// The acting user (domain account, or an NFS client IP).
    pub fn user(&self) -> Option<Cow<'_, str>> {
        self.text(F_USER)
    }

    pub fn client_ips(&self) -> Vec<Cow<'_, str>> {
        self.list(F_IP)
    }

    pub fn shares(&self) -> Vec<Cow<'_, str>> {
        self.list(F_SHARE)
    }

    pub fn files(&self) -> Vec<Cow<'_, str>> {
        self.list(F_FILE)
    }

    /// Number of items of the file list, without copying them.
    pub fn file_count(&self) -> usize {
        self.find(F_FILE).map_or(0, |raw| list_text(raw).len())
    }

    pub fn detectors(&self) -> Vec<Cow<'_, str>> {
        self.list(F_DETECTOR)
    }

    /// Number of detectors triggered, as text.
    pub fn signal_strength(&self) -> Option<Cow<'_, str>> {
        self.text(F_STRENGTH)
    }

    /// NAS cluster name(s) ("prod-cluster-01").
    pub fn clusters(&self) -> Vec<Cow<'_, str>> {
        self.list(F_CLUSTER)
    }

    /// Event source type ("ISILON_CLUSTER").
    pub fn event_source(&self) -> Option<Cow<'_, str>> {
        self.text(F_SOURCE)
    }

    /// Detection time in normalised RFC 3339 ([`text_to_rfc3339`]), when
    /// present, readable and a date and time that exists.
    pub fn detected(&self) -> Option<String> {
        self.find(F_TIME).and_then(time_rfc3339)
    }

    /// Detection time as received, readable or not (a string's text,
    /// trimmed; any other value's JSON text): what to keep when
    /// [`Event::detected`] cannot read it.
    pub fn detected_raw(&self) -> Option<Cow<'_, str>> {
        self.find(F_TIME).and_then(value_text)
    }

    /// Last update time in normalised RFC 3339, when present, readable and
    /// a date and time that exists.
    pub fn updated(&self) -> Option<String> {
        self.find(F_UPDATED).and_then(time_rfc3339)
    }

    /// Last update time as received, readable or not (see
    /// [`Event::detected_raw`]).
    pub fn updated_raw(&self) -> Option<Cow<'_, str>> {
        self.find(F_UPDATED).and_then(value_text)
    }

    /// Link to the event in the Superna console, when it is an http(s) URL.
    pub fn console_url(&self) -> Option<Cow<'_, str>> {
        self.text(F_URL)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    }

    pub fn protection_mode(&self) -> Option<Cow<'_, str>> {
        self.text(F_MODE)
    }

    pub fn snapshots(&self) -> Vec<Cow<'_, str>> {
        self.list(F_SNAPSHOT)
    }
}

/// Where an alert stands, coarsely: what a transform decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A new alert: a lockout, immediate or delayed, or no state at all.
    Open,
    /// A change that neither opens nor closes it.
    Update,
    /// Over: access restored, recovered or a false positive.
    Closed,
}

/// Everything the host hands a transform about an event (contract 0.2's
/// `event` record, without the receipt fields): read here, once, so the
/// host and every guest language see the same values.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// [`Event::id`].
    pub event_id: Option<String>,
    /// [`Event::alert_id`].
    pub alert_id: Option<String>,
    /// [`Event::severity`].
    pub severity: Severity,
    /// [`Severity::label`]: as written, `Unknown` when absent.
    pub severity_text: String,
    /// [`Event::state`].
    pub state: Option<String>,
    /// [`Phase`] of the state.
    pub phase: Phase,
    /// [`Event::state_kind`].
    pub state_kind: StateKind,
    /// [`Event::detected`] and [`Event::detected_raw`].
    pub detected_at: Option<String>,
    pub detected_text: Option<String>,
    /// [`Event::updated`] and [`Event::updated_raw`].
    pub updated_at: Option<String>,
    pub updated_text: Option<String>,
    /// [`Event::user`].
    pub user: Option<String>,
    /// [`Event::files`].
    pub paths: Vec<String>,
    /// [`Event::shares`].
    pub shares: Vec<String>,
    /// [`Event::client_ips`].
    pub client_ips: Vec<String>,
    /// [`Event::policy`].
    pub policy: Option<String>,
    /// [`Event::clusters`].
    pub clusters: Vec<String>,
    /// [`Event::detectors`].
    pub detectors: Vec<String>,
    /// [`Event::signal_strength`].
    pub signal_strength: Option<String>,
    /// [`Event::event_source`].
    pub event_source: Option<String>,
    /// [`Event::console_url`].
    pub console_url: Option<String>,
    /// [`Event::protection_mode`].
    pub protection_mode: Option<String>,
    /// [`Event::snapshots`].
    pub snapshots: Vec<String>,
}

impl Default for Record {
    /// The record of an event that carries nothing recognisable.
    fn default() -> Record {
        Record {
            event_id: None,
            alert_id: None,
            severity: Severity::Other(String::new()),
            severity_text: Severity::Other(String::new()).label(),
            state: None,
            phase: Phase::Open,
            state_kind: StateKind::Other,
            detected_at: None,
            detected_text: None,
            updated_at: None,
            updated_text: None,
            user: None,
            paths: vec![],
            shares: vec![],
            client_ips: vec![],
            policy: None,
            clusters: vec![],
            detectors: vec![],
            signal_strength: None,
            event_source: None,
            console_url: None,
            protection_mode: None,
            snapshots: vec![],
        }
    }
}

impl Event {
    /// The event as the host hands it to transforms.
    pub fn record(&self) -> Record {
        let text = |c: Option<Cow<'_, str>>| c.map(Cow::into_owned);
        let list =
            |v: Vec<Cow<'_, str>>| -> Vec<String> { v.into_iter().map(Cow::into_owned).collect() };
        let severity = self.severity();
        let state = text(self.state());
        let state_kind = self.state_kind();
        let phase = match (&state, state_kind) {
            (None, _) => Phase::Open,
            (Some(_), StateKind::Lockout | StateKind::DelayedLockout) => Phase::Open,
            (Some(_), k) if k.is_end() => Phase::Closed,
            (Some(_), _) => Phase::Update,
        };
        Record {
            event_id: text(self.id()),
            alert_id: self.alert_id(),
            severity_text: severity.label(),
            severity,
            state,
            phase,
            state_kind,
            detected_at: self.detected(),
            detected_text: text(self.detected_raw()),
            updated_at: self.updated(),
            updated_text: text(self.updated_raw()),
            user: text(self.user()),
            paths: list(self.files()),
            shares: list(self.shares()),
            client_ips: list(self.client_ips()),
            policy: text(self.policy()),
            clusters: list(self.clusters()),
            detectors: list(self.detectors()),
            signal_strength: text(self.signal_strength()),
            event_source: text(self.event_source()),
            console_url: text(self.console_url()),
            protection_mode: text(self.protection_mode()),
            snapshots: list(self.snapshots()),
        }
    }
}

/// Members that name an object standing where a text is expected
/// (`{"name": "bob"}` as a user), normalised, in order of preference.
const NAME_KEYS: &[&str] = &[
    "name",
    "displayname",
    "value",
    "path",
    "id",
    "ip",
    "address",
    "username",
];

/// A value (JSON text) as text; objects give their name-like member,
/// arrays their items joined.
fn scalar_text(raw: &str) -> Option<Cow<'_, str>> {
    match raw.as_bytes().first()? {
        b'"' => Some(match string_value(raw) {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) => Cow::Owned(s.trim().to_string()),
        }),
        b'-' | b'0'..=b'9' => Some(number_text(raw)),
        b't' => Some(Cow::Borrowed("true")),
        b'f' => Some(Cow::Borrowed("false")),
        b'{' => name_member(raw, NAME_KEYS)
            .and_then(scalar_text)
            .map(|s| Cow::Owned(s.into_owned())),
        b'[' => {
            let parts: Vec<Cow<str>> = elements(raw).into_iter().filter_map(scalar_text).collect();
            (!parts.is_empty()).then(|| Cow::Owned(parts.join(", ")))
        }
        _ => None,
    }
}

/// An ID's text: numbers exactly as written, anything else as
/// [`scalar_text`] reads it; `None` when empty.
fn id_text(raw: &str) -> Option<Cow<'_, str>> {
    match raw.as_bytes().first()? {
        b'-' | b'0'..=b'9' => Some(Cow::Borrowed(raw)),
        _ => scalar_text(raw).filter(|s| !s.is_empty()),
    }
}

/// A number as serde_json writes it: integers as received, anything else
/// through serde_json (`1.50` is `1.5`, `1e2` is `100.0`).
fn number_text(raw: &str) -> Cow<'_, str> {
    if is_plain_integer(raw) {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(
        serde_json::from_str::<serde_json::Number>(raw)
            .map(|n| n.to_string())
            .unwrap_or_else(|_| raw.to_string()),
    )
}

/// `0` or `-?[1-9][0-9]*`, short enough to be an i64.
fn is_plain_integer(raw: &str) -> bool {
    let digits = raw.strip_prefix('-').unwrap_or(raw).as_bytes();
    raw == "0"
        || (!digits.is_empty()
            && digits.len() <= 18
            && digits[0] != b'0'
            && digits.iter().all(u8::is_ascii_digit))
}

/// A scalar or an array as a list of texts; a comma-separated string stays
/// one item (file names may contain commas).
fn list_text(raw: &str) -> Vec<Cow<'_, str>> {
    if !raw.starts_with('[') {
        return scalar_text(raw)
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect();
    }
    // Strings (the usual item) are decoded as they are read.
    let mut out = Vec::new();
    let mut sc = Scanner::new(raw);
    sc.at = 1;
    loop {
        sc.skip_ws();
        let item = match sc.peek() {
            Some(b'"') => match sc.string() {
                Ok(Cow::Borrowed(s)) => Some(Cow::Borrowed(s.trim())),
                Ok(Cow::Owned(s)) => Some(Cow::Owned(s.trim().to_string())),
                Err(_) => break,
            },
            Some(b']') | None => break,
            Some(_) => match sc.value() {
                Ok(span) => scalar_text(&raw[span.start..span.end]),
                Err(_) => break,
            },
        };
        if let Some(item) = item.filter(|s| !s.is_empty()) {
            out.push(item);
        }
        sc.skip_ws();
        if !sc.eat(b',') {
            break;
        }
    }
    out
}

/// A value (JSON text) as received: a string's text, trimmed; any other
/// value's JSON text.  `None` for an empty string.
fn value_text(raw: &str) -> Option<Cow<'_, str>> {
    let text = if raw.starts_with('"') {
        match string_value(raw) {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) => Cow::Owned(s.trim().to_string()),
        }
    } else {
        Cow::Borrowed(raw)
    };
    (!text.is_empty()).then_some(text)
}

/// Reads a time value (JSON text): epoch seconds or milliseconds as a
/// number, or a string [`text_to_rfc3339`] reads.
fn time_rfc3339(raw: &str) -> Option<String> {
    match raw.as_bytes().first()? {
        b'-' | b'0'..=b'9' if is_plain_integer(raw) => {
            raw.parse::<i64>().ok().and_then(epoch_to_rfc3339)
        }
        b'"' => text_to_rfc3339(&string_value(raw)),
        _ => None,
    }
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

    /// The example events of the end-to-end tests.
    fn fixture_events() -> Vec<String> {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/events");
        let bodies: Vec<String> = std::fs::read_dir(fixtures)
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(bodies.len() >= 8, "fixtures missing from {fixtures}");
        bodies
    }

    #[test]
    fn scan_finds_what_a_dom_lookup_finds() {
        let mut bodies = fixture_events();
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
                let value = |e: &Event| {
                    e.find(f)
                        .map(|t| serde_json::from_str::<Value>(t).expect("a value's text"))
                };
                assert_eq!(value(&scanned).as_ref(), want, "field {f} of {body}");
                assert_eq!(
                    value(&from_value).as_ref(),
                    want,
                    "field {f} of {body} (from_value)"
                );
            }
            assert_eq!(scanned.file_count(), scanned.files().len(), "{body}");
        }
    }

    /// The accessors' decoding before the scanner: from a serde_json DOM.
    mod dom {
        use serde_json::{Map, Value};

        /// `Event::alert_id` read from the DOM alone (what it did before
        /// the scan remembered whether an alert key was there).
        pub fn alert_id(raw: &Value, id: Option<&str>) -> Option<String> {
            let top = raw.as_object()?;
            let wrapper = top.iter().find_map(|(k, v)| {
                super::WRAPPER_KEYS
                    .contains(&super::normalize(k).as_str())
                    .then(|| v.as_object())
                    .flatten()
            });
            for obj in std::iter::once(top).chain(wrapper) {
                for want in super::ALERT_KEYS {
                    for (k, v) in obj {
                        if super::normalize(k) != *want {
                            continue;
                        }
                        let text = match v {
                            Value::String(s) => s.trim().to_string(),
                            Value::Number(n) => n.to_string(),
                            _ => continue,
                        };
                        if !text.is_empty() && id != Some(text.as_str()) {
                            return Some(text);
                        }
                    }
                }
            }
            None
        }

        fn find_in<'a>(obj: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
            keys.iter().find_map(|want| {
                obj.iter()
                    .find(|(k, v)| !v.is_null() && super::normalize(k) == *want)
                    .map(|(_, v)| v)
            })
        }

        pub fn scalar_text(v: &Value) -> Option<String> {
            match v {
                Value::String(s) => Some(s.trim().to_string()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Object(o) => find_in(o, super::NAME_KEYS).and_then(scalar_text),
                Value::Array(a) => {
                    let parts: Vec<String> = a.iter().filter_map(scalar_text).collect();
                    (!parts.is_empty()).then(|| parts.join(", "))
                }
                Value::Null => None,
            }
        }

        pub fn list_text(v: &Value) -> Vec<String> {
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

        pub fn time(v: &Value) -> Option<String> {
            match v {
                Value::Number(n) => n.as_i64().and_then(super::epoch_to_rfc3339),
                Value::String(s) => super::text_to_rfc3339(s),
                _ => None,
            }
        }
    }

    #[test]
    fn values_decode_as_from_a_dom() {
        let values = [
            r#""  padded  ""#,
            r#""CORP\\jsmith""#,
            r#""\u00e9t\u00e9 \ud83d\ude00""#,
            r#""say \"hi\" \\u0041 \/ \t""#,
            r#""""#,
            "0",
            "-17",
            "123456789012345678",
            "1234567890123456789",
            "99999999999999999999",
            "1.50",
            "-0",
            "1e2",
            "2.5E-3",
            "true",
            "false",
            "null",
            "[]",
            r#"["a", " b ", "", null, 3, true, ["x", ["y"]], {"name": "n"}]"#,
            r#"{"Name": "first", "name": "second"}"#,
            r#"{"value": null, "path": "/p", "id": 4}"#,
            r#"{"other": 1}"#,
            r#"{"display_name": {"value": {"ip": "10.0.0.1"}}}"#,
            r#"[{"address": "a"}, {"user-name": "u"}, {}]"#,
            r#""2025-06-11T10:15:03Z""#,
            r#""2025-06-11 10:15""#,
            r#"" 1749636903 ""#,
            "1749636903",
            "1749636903250",
            "1749636903.5",
            r#""yesterday""#,
        ];
        for raw in values {
            let dom: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(
                scalar_text(raw).map(Cow::into_owned),
                dom::scalar_text(&dom),
                "scalar {raw}"
            );
            assert_eq!(list_text(raw), dom::list_text(&dom), "list {raw}");
            assert_eq!(time_rfc3339(raw), dom::time(&dom), "time {raw}");
        }
    }

    /// Mutated events (bytes inserted, deleted, replaced and duplicated,
    /// from an alphabet of JSON's own characters and their neighbours)
    /// must be accepted exactly when serde_json accepts them, and then read
    /// exactly as a DOM lookup reads them.  Deterministic (a fixed seed);
    /// `ZT_EVENT_MUTATIONS=300000` runs more.
    #[test]
    fn mutated_events_are_judged_and_read_as_serde_json_does() {
        let rounds: usize = std::env::var("ZT_EVENT_MUTATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6000);
        let mut seeds = fixture_events();
        seeds.push(SAMPLE.to_string());
        seeds.push(r#"{"id": "e", "Case-ID": 7, "data": {"alert_id": "A", "caseId": "C"}}"#.into());
        seeds.push(
            r##"{"event": {"id": "w", "user": {"name": "n"}}, "files": ["a", "#b", "\\]"]}"##
                .into(),
        );
        const ALPHABET: &[&str] = &[
            "1.7976931348623158e308",
            "[[[[[[[[[[[[[[[[",
            "\"",
            "\\",
            "#",
            "]",
            "[",
            "{",
            "}",
            ":",
            ",",
            " ",
            "\n",
            "\t",
            "\u{1f}",
            "!",
            "-",
            "+",
            ".",
            "e",
            "E",
            "0",
            "1",
            "9",
            "u",
            "\\u",
            "\\ud800",
            "\\udc00",
            "d8",
            "null",
            "true",
            "\u{e9}",
            "\u{1f600}",
            "a",
            "id",
            "\"id\":",
            "1e400",
            "\u{0}",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..rounds {
            let mut text = seeds[round % seeds.len()].clone();
            for _ in 0..=next(3) {
                let mut at = next(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let piece = ALPHABET[next(ALPHABET.len())];
                match next(4) {
                    0 => text.insert_str(at, piece),
                    1 => {
                        let mut end = (at + 1 + next(4)).min(text.len());
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        text.replace_range(at..end, "");
                    }
                    2 => {
                        let mut end = (at + 1).min(text.len());
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        text.replace_range(at..end, piece);
                    }
                    _ => {
                        let copy = text[at..].chars().take(8).collect::<String>();
                        text.insert_str(at, &copy);
                    }
                }
            }
            let dom = serde_json::from_str::<Value>(&text);
            let ours = Event::parse(text.as_str());
            assert_eq!(
                ours.is_ok(),
                dom.is_ok(),
                "{text:?}: {:?} / {:?}",
                ours.err(),
                dom.err()
            );
            let (Ok(ev), Ok(dom)) = (ours, dom) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            assert_eq!(ev.raw(), &dom, "{text:?}");
            for (f, keys) in FIELDS.iter().enumerate() {
                let got = ev
                    .find(f)
                    .map(|t| serde_json::from_str::<Value>(t).expect("a value"));
                assert_eq!(
                    got.as_ref(),
                    reference_find(&dom, keys),
                    "field {f} of {text:?}"
                );
            }
            for field in [F_ID, F_USER, F_STATE] {
                let want = reference_find(&dom, FIELDS[field]).and_then(dom::scalar_text);
                let got = ev.find(field).and_then(scalar_text).map(Cow::into_owned);
                assert_eq!(got, want, "text of field {field} of {text:?}");
            }
            // The ID as the DOM reads it, except that a number keeps its
            // literal text (which parses to the same number).
            match reference_find(&dom, FIELDS[F_ID]) {
                Some(Value::Number(n)) => {
                    let got = ev.id().expect("a number ID");
                    assert_eq!(
                        serde_json::from_str::<Value>(&got).ok(),
                        Some(Value::Number(n.clone())),
                        "ID of {text:?}"
                    );
                }
                other => assert_eq!(
                    ev.id().map(Cow::into_owned),
                    other.and_then(dom::scalar_text).filter(|s| !s.is_empty()),
                    "ID of {text:?}"
                ),
            }
            for field in [F_FILE, F_IP, F_DETECTOR] {
                let want = reference_find(&dom, FIELDS[field])
                    .map(dom::list_text)
                    .unwrap_or_default();
                assert_eq!(ev.list(field), want, "list {field} of {text:?}");
            }
            assert_eq!(
                ev.alert_id(),
                dom::alert_id(&dom, ev.id().as_deref()),
                "alert ID of {text:?}"
            );
        }
        // Both outcomes are exercised.
        assert!(
            accepted > 500 && refused > 500,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn ids_keep_every_digit_and_alert_ids_and_policies_are_read() {
        let e = Event::parse(
            r#"{"id": 12345678901234567890, "incidentId": "INC-7", "ruleName": "Mass rename"}"#,
        )
        .unwrap();
        assert_eq!(e.id().as_deref(), Some("12345678901234567890"));
        assert_eq!(e.alert_id().as_deref(), Some("INC-7"));
        assert_eq!(e.policy().as_deref(), Some("Mass rename"));
        let e = Event::parse(r#"{"event": {"eventId": 1.5e3, "alert_id": 9}}"#).unwrap();
        assert_eq!(e.id().as_deref(), Some("1.5e3"));
        assert_eq!(e.alert_id().as_deref(), Some("9"));
        // An alert ID that is the event ID is not repeated.
        let e = Event::parse(r#"{"alertId": " A-1 "}"#).unwrap();
        assert_eq!(e.id().as_deref(), Some("A-1"));
        assert_eq!(e.alert_id(), None);
        // A case ID (no field's candidate) counts, in a wrapper too; an
        // event without an alert key has none.
        let e = Event::parse(r#"{"id": "e", "details": {"Case_Id": "C-3"}}"#).unwrap();
        assert_eq!(e.alert_id().as_deref(), Some("C-3"));
        let e = Event::parse(r#"{"id": "e", "other": {"caseId": "C-3"}}"#).unwrap();
        assert_eq!(e.alert_id(), None);
    }

    #[test]
    fn nesting_inside_the_event_and_its_wrapper_counts_as_serde_json_counts_it() {
        for d in 123..=129 {
            let inner = format!("{}1{}", "[".repeat(d), "]".repeat(d));
            for text in [
                format!(r#"{{"event": {{"id": {inner}}}}}"#),
                format!(r#"{{"other": {{"id": {inner}}}}}"#),
                format!(r#"{{"id": {inner}}}"#),
                inner.clone(),
            ] {
                let serde = serde_json::from_str::<Value>(&text).is_ok();
                assert_eq!(Event::parse(text.as_str()).is_ok(), serde, "{d}: {text}");
            }
        }
    }

    /// A key spelled the `n`th way: `n` in base 3 as `_`, `-` and ` `
    /// after the first letter of `word` (all one key once normalised).
    fn spelling(word: &str, mut n: usize) -> String {
        let mut chars = word.chars();
        let mut out: String = chars.next().into_iter().collect();
        while n > 0 {
            out.push(['_', '-', ' '][n % 3]);
            n /= 3;
        }
        out.extend(chars);
        out
    }

    #[test]
    fn thousands_of_spellings_of_one_key_are_read_in_linear_time() {
        // Hostile shapes that a comparison of every key with every other
        // would make quadratic: many spellings of a field, of a wrapper,
        // and of an object's `name`.  (Correctness is asserted; a
        // quadratic version would take minutes here, not milliseconds.)
        let n = 20_000;
        let keys: Vec<String> = (0..n).map(|i| spelling("id", i)).collect();
        let members: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                format!(
                    "{:?}: {}",
                    k,
                    if i + 1 == keys.len() {
                        "\"last\""
                    } else {
                        "null"
                    }
                )
            })
            .collect();
        let e = Event::parse(format!("{{{}}}", members.join(","))).unwrap();
        assert_eq!(e.id().as_deref(), Some("last"));

        let wrappers: Vec<String> = (0..n)
            .map(|i| format!("{:?}: {{\"user\": \"u{i}\"}}", spelling("event", i)))
            .collect();
        let e = Event::parse(format!("{{{}}}", wrappers.join(","))).unwrap();
        assert_eq!(e.user().as_deref(), Some("u0"));

        let names: Vec<String> = (0..n)
            .map(|i| format!("{:?}: null", spelling("name", i)))
            .collect();
        let e = Event::parse(format!(
            "{{\"user\": {{{}, \"name\": \"n\"}}}}",
            names.join(",")
        ))
        .unwrap();
        assert_eq!(e.user().as_deref(), Some("n"));
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
