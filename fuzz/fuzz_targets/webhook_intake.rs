//! `POST /webhook` intake: content type, encoding, size and inflate
//! limits, UTF-8, JSON depth and syntax, the event scanner
//! (`ztbridge_runtime::fuzzing::intake` checks the properties).
//!
//! Input: one selector byte, then the body.  Selector bits 0-2 pick the
//! Content-Type, bits 3-5 the Content-Encoding, bit 7 gzips the body
//! first (so JSON mutations also reach the gzip path).

#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ztbridge_runtime::fuzzing;
use ztbridge_runtime::http::intake::Intake;

const TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/vnd.superna+json"),
    Some("text/plain"),
    None,
    Some("APPLICATION/JSON ;"),
];

const ENCODINGS: [Option<&str>; 6] = [
    None,
    Some("gzip"),
    Some("identity"),
    Some("x-gzip"),
    Some("br"),
    Some(" GZIP "),
];

static INTAKE: OnceLock<Intake> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[usize::from(selector & 7) % TYPES.len()];
    let encoding = ENCODINGS[usize::from((selector >> 3) & 7) % ENCODINGS.len()];
    let intake = INTAKE.get_or_init(fuzzing::new_intake);
    if selector & 0x80 != 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if gz.write_all(body).is_err() {
            return;
        }
        let Ok(zipped) = gz.finish() else {
            return;
        };
        fuzzing::intake(intake, content_type, encoding, &zipped);
    } else {
        fuzzing::intake(intake, content_type, encoding, body);
    }
});
