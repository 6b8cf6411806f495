//! Turns an HTTP request into an accepted event, or a clear 4xx.
//!
//! Superna's UI sets `Content-Encoding: gzip` as a static header that the
//! administrator types in, so the header is not trusted blindly: the body is
//! sniffed.  A body labelled gzip that is plain JSON is accepted (logged
//! once); an unlabelled gzip body is inflated too.  Inflating is bounded (a
//! gzip bomb stops at the limit, not after filling memory), and JSON nesting
//! is checked with a flat scan before parsing.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::IntakeLimits;
use crate::time::stage_cpu::{self, Stage};

/// Webhooks up to this size, as sent and once inflated, are decoded on the
/// async worker that received them (a few microseconds; a hop to the
/// blocking pool costs about as much); larger ones off the async workers.
pub(crate) const INLINE_BYTES: usize = 64 << 10;

thread_local! {
    /// CPU spent inflating during this thread's current `accept`, which
    /// the parse stage does not count (stage budget only).
    static INFLATE_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Why a webhook was refused.  Each maps to a status and a JSON body
/// `{"error": code, "message": ...}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IntakeError {
    #[error("Content-Type must be application/json (got {0})")]
    ContentType(String),
    #[error("Content-Encoding `{0}` is not supported (use gzip or none)")]
    Encoding(String),
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("decompressed body exceeds {0} bytes")]
    DecodedTooLarge(usize),
    #[error("body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("body is empty")]
    Empty,
    #[error("body is not valid UTF-8 (JSON must be UTF-8)")]
    NotUtf8,
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("JSON nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("JSON body must be an object (got {0})")]
    NotObject(&'static str),
}

impl IntakeError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            IntakeError::ContentType(_) | IntakeError::Encoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IntakeError::TooLarge(_) | IntakeError::DecodedTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Stable machine-readable code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            IntakeError::ContentType(_) => "unsupported_content_type",
            IntakeError::Encoding(_) => "unsupported_content_encoding",
            IntakeError::TooLarge(_) => "body_too_large",
            IntakeError::DecodedTooLarge(_) => "decompressed_too_large",
            IntakeError::BadGzip(_) => "bad_gzip",
            IntakeError::Empty => "empty_body",
            IntakeError::NotUtf8 => "invalid_utf8",
            IntakeError::Json(_) => "malformed_json",
            IntakeError::TooDeep(_) => "json_too_deep",
            IntakeError::NotObject(_) => "not_an_object",
        }
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

/// A webhook that passed intake.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    /// The host's identifier of this delivery (unique per webhook).
    pub receipt_id: String,
    /// When it was accepted, in milliseconds since the epoch.
    pub received_ms: i64,
    /// The JSON text as received (after inflating).
    pub body: Arc<str>,
    /// Parsed view for route filters and logs.
    pub(crate) event: Arc<zt_event::Event>,
}

/// Decodes webhooks.
pub struct Intake {
    /// Size, inflation and depth bounds.
    pub(crate) limits: IntakeLimits,
    /// Set once the "labelled gzip but plain" warning was logged.
    warned_mislabelled: AtomicBool,
    /// Receipt ID sequence; with `boot`, unique per process run.
    seq: AtomicU64,
    /// Process start time (ms), the first part of receipt IDs.
    boot: i64,
}

impl Intake {
    pub(crate) fn new(limits: IntakeLimits) -> Intake {
        Intake {
            limits,
            warned_mislabelled: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            boot: crate::time::now_millis(),
        }
    }

    /// Checks and decodes one request.
    pub(crate) fn accept(&self, headers: &HeaderMap, body: &[u8]) -> Result<Accepted, IntakeError> {
        self.accept_within(headers, body, self.limits.max_decoded_bytes)
    }

    /// `accept` for a small webhook, on the calling (async) thread: `None`
    /// when the body is over [`INLINE_BYTES`] as sent or once inflated;
    /// then `accept` it off the async workers.
    pub(crate) fn accept_inline(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Result<Accepted, IntakeError>> {
        let cap = INLINE_BYTES.min(self.limits.max_decoded_bytes);
        if body.len() > INLINE_BYTES {
            return None;
        }
        match self.accept_within(headers, body, cap) {
            Err(IntakeError::DecodedTooLarge(_)) if cap < self.limits.max_decoded_bytes => None,
            other => Some(other),
        }
    }

    /// `accept`, refusing what inflates to more than `cap` bytes.
    fn accept_within(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        cap: usize,
    ) -> Result<Accepted, IntakeError> {
        let t0 = stage_cpu::enabled().then(stage_cpu::thread_cpu_ns);
        INFLATE_NS.with(|n| n.set(0));
        let accepted = self.decode(headers, body, cap);
        if let Some(t0) = t0 {
            let total = stage_cpu::thread_cpu_ns().saturating_sub(t0);
            let inflate = INFLATE_NS.with(|n| n.get());
            stage_cpu::add(Stage::Parse, total.saturating_sub(inflate));
        }
        accepted
    }

    fn decode(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        cap: usize,
    ) -> Result<Accepted, IntakeError> {
        check_content_type(headers)?;
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if body.len() > self.limits.max_body_bytes {
            return Err(IntakeError::TooLarge(self.limits.max_body_bytes));
        }
        let is_gzip = body.starts_with(&[0x1f, 0x8b]);
        let decoded: Vec<u8> = match encoding.as_str() {
            "" | "identity" | "gzip" | "x-gzip" if is_gzip => self.inflate(body, cap)?,
            "gzip" | "x-gzip" => {
                if looks_like_json(body) {
                    if !self.warned_mislabelled.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "a webhook labelled Content-Encoding: gzip carried plain JSON; accepted (check the header configured in Superna; logged once)"
                        );
                    }
                    body.to_vec()
                } else if body.is_empty() {
                    return Err(IntakeError::Empty);
                } else {
                    return Err(IntakeError::BadGzip(
                        "labelled gzip but neither gzip nor JSON".into(),
                    ));
                }
            }
            "" | "identity" => body.to_vec(),
            other => return Err(IntakeError::Encoding(other.chars().take(40).collect())),
        };
        let text = std::str::from_utf8(&decoded).map_err(|_| IntakeError::NotUtf8)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(IntakeError::Empty);
        }
        check_depth(text, self.limits.max_json_depth)?;
        // serde_json decides what is JSON (checking only: no tree is built,
        // 0.3 µs on a typical event); zt-event's scanner then notes where
        // the fields lie (`cargo bench --bench intake_parse`).
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| IntakeError::Json(e.to_string()))?;
        let event = zt_event::Event::parse(text).map_err(|e| IntakeError::Json(e.to_string()))?;
        let kind = match text.trim_start().as_bytes().first() {
            Some(b'{') => None,
            Some(b'[') => Some("an array"),
            Some(b'"') => Some("a string"),
            Some(b't' | b'f') => Some("a boolean"),
            Some(b'n') => Some("null"),
            _ => Some("a number"),
        };
        if let Some(kind) = kind {
            return Err(IntakeError::NotObject(kind));
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // A random part so receipt IDs cannot be enumerated (RandomState
        // is seeded from the OS per process and per thread).
        let random = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one((seq, self.boot)) as u32
        };
        let received_ms = crate::time::now_millis();
        Ok(Accepted {
            receipt_id: format!("r{:x}-{seq:06x}-{random:08x}", self.boot),
            received_ms,
            body: Arc::from(text),
            event: Arc::new(event),
        })
    }

    /// Inflates at most `limit` bytes, counting the CPU apart.
    fn inflate(&self, body: &[u8], limit: usize) -> Result<Vec<u8>, IntakeError> {
        // Counted apart from the rest of intake: the parse stage's clock
        // gives this back.
        let t0 = stage_cpu::enabled().then(stage_cpu::thread_cpu_ns);
        let inflated = inflate_bounded(body, limit);
        if let Some(t0) = t0 {
            let ns = stage_cpu::thread_cpu_ns().saturating_sub(t0);
            stage_cpu::add(Stage::Decompress, ns);
            INFLATE_NS.with(|n| n.set(n.get().saturating_add(ns)));
        }
        inflated
    }
}

/// Inflates at most `limit` bytes (plus one to detect overflow).
fn inflate_bounded(body: &[u8], limit: usize) -> Result<Vec<u8>, IntakeError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(body)
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| IntakeError::BadGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(IntakeError::DecodedTooLarge(limit));
    }
    Ok(out)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), IntakeError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(IntakeError::ContentType("none".into()));
    };
    let ct = String::from_utf8_lossy(ct.as_bytes()).to_ascii_lowercase();
    let media = ct.split(';').next().unwrap_or("").trim();
    if media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(IntakeError::ContentType(format!(
            "`{}`",
            media.chars().take(60).collect::<String>()
        )))
    }
}

fn looks_like_json(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Nesting depth of arrays/objects, ignoring brackets inside strings.
fn check_depth(text: &str, max: usize) -> Result<(), IntakeError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(IntakeError::TooDeep(max));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn headers(ct: &str, ce: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        if let Some(ce) = ce {
            h.insert(header::CONTENT_ENCODING, ce.parse().unwrap());
        }
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_plain_and_mislabelled() {
        let i = Intake::new(IntakeLimits::default());
        let body = br#"{"id":"RSW-1","severity":"Critical"}"#;
        let a = i
            .accept(&headers("application/json", Some("gzip")), &gzip(body))
            .unwrap();
        assert_eq!(a.event.id().as_deref(), Some("RSW-1"));
        assert_eq!(&*a.body, std::str::from_utf8(body).unwrap());
        let b = i
            .accept(
                &headers("application/json; charset=utf-8", Some("gzip")),
                body,
            )
            .unwrap();
        assert_eq!(&*b.body, std::str::from_utf8(body).unwrap());
        assert_ne!(a.receipt_id, b.receipt_id);
        assert!(
            i.accept(&headers("application/json", None), &gzip(body))
                .is_ok(),
            "unlabelled gzip is sniffed"
        );
    }

    #[test]
    fn refusals() {
        let i = Intake::new(IntakeLimits {
            max_body_bytes: 1 << 20,
            max_decoded_bytes: 1 << 20,
            max_json_depth: 8,
            ..IntakeLimits::default()
        });
        let j = headers("application/json", None);
        let code = |r: Result<Accepted, IntakeError>| r.unwrap_err().code();
        assert_eq!(
            code(i.accept(&headers("text/plain", None), b"{}")),
            "unsupported_content_type"
        );
        assert_eq!(
            code(i.accept(&HeaderMap::new(), b"{}")),
            "unsupported_content_type"
        );
        assert_eq!(
            code(i.accept(&headers("application/json", Some("br")), b"{}")),
            "unsupported_content_encoding"
        );
        assert_eq!(code(i.accept(&j, b"{\"a\":")), "malformed_json");
        assert_eq!(code(i.accept(&j, b"")), "empty_body");
        assert_eq!(code(i.accept(&j, b"\xff\xfe{}")), "invalid_utf8");
        assert_eq!(code(i.accept(&j, b"[1]")), "not_an_object");
        assert_eq!(
            code(i.accept(&j, "[[[[[[[[[[1]]]]]]]]]]".as_bytes())),
            "json_too_deep"
        );
        assert!(i.accept(&j, br#"{"s":"[[[[[[[[[[[[[[[["}"#).is_ok());
        let g = gzip(br#"{"a":1}"#);
        assert_eq!(
            code(i.accept(
                &headers("application/json", Some("gzip")),
                &g[..g.len() - 6]
            )),
            "bad_gzip"
        );
        assert_eq!(
            code(i.accept(&headers("application/json", Some("gzip")), b"garbage")),
            "bad_gzip"
        );
        let bomb = gzip(&vec![b' '; 4 << 20]);
        assert_eq!(
            code(i.accept(&headers("application/json", Some("gzip")), &bomb)),
            "decompressed_too_large"
        );
    }
}
