//! Times as Superna sends them, to normalised RFC 3339.
//!
//! Read (the `time` crate parses and checks; its format description below
//! is the grammar):
//! * `YYYY-MM-DD`, `T` (or `t`, or a space), `hh:mm`, then optionally
//!   `:ss` and a fraction (`.` or `,` and digits);
//! * then `Z` (or `z`), an offset `+hh:mm` / `-hh:mm` (or `+hhmm`, `+hh`),
//!   or nothing, which means UTC;
//! * epoch seconds or milliseconds, as digits ([`epoch_to_rfc3339`]).
//!
//! The date and time must exist: `2025-02-31`, `24:00`, `10:61` and leap
//! seconds (`:60`) are refused, as is anything else (`11/06/2025 10:15`,
//! `yesterday`, a date without a time).
//!
//! Written: `YYYY-MM-DDThh:mm:ss`, then `.mmm` when the milliseconds are
//! not zero (the fraction is cut to milliseconds, as epoch milliseconds
//! are written), then `Z` for UTC (`+00:00` and `-00:00` included) or the
//! offset as received (`+02:00`): the local time the sender gave is kept.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::parsing::Parsed;
use time::{OffsetDateTime, PrimitiveDateTime};

/// A time as text (RFC 3339 / ISO 8601 date and time, or epoch seconds or
/// milliseconds as digits) in normalised RFC 3339; `None` when it is not
/// one of the forms read, or names a date or time that does not exist.
pub fn text_to_rfc3339(text: &str) -> Option<String> {
    let s = text.trim();
    if let Ok(n) = s.parse::<i64>() {
        return epoch_to_rfc3339(n);
    }
    parse(s).map(|(t, offset)| write(t, offset))
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
    let t = OffsetDateTime::from_unix_timestamp(secs).ok()?;
    let t = PrimitiveDateTime::new(t.date(), t.time())
        .replace_millisecond(millis as u16)
        .ok()?;
    Some(write(t, 0))
}

/// The forms read; `[first]` takes the first alternative that matches.
const FORMAT: &[BorrowedFormatItem<'static>] = format_description!(
    version = 2,
    "[year]-[month]-[day][first [T] [t] [ ]][hour]:[minute]\
     [optional [:[second][optional [[first [.] [,]][subsecond]]]]]\
     [optional [[first [Z] [z] \
       [[offset_hour sign:mandatory]:[offset_minute]] \
       [[offset_hour sign:mandatory][offset_minute]] \
       [[offset_hour sign:mandatory]]]]]"
);

/// A date and time that exists, and its offset east of UTC in minutes.
fn parse(s: &str) -> Option<(PrimitiveDateTime, i16)> {
    // `[year]` would take a sign (`+2025`), which RFC 3339 has not.
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut parsed = Parsed::new();
    if !parsed.parse_items(s.as_bytes(), FORMAT).ok()?.is_empty() {
        return None;
    }
    let offset = match parsed.offset_hour() {
        None => 0,
        // RFC 3339 offsets are at most 23:59.
        Some(h) if h.unsigned_abs() > 23 => return None,
        // The minutes carry the sign too (`-00:30`).
        Some(h) => i16::from(h) * 60 + i16::from(parsed.offset_minute_signed().unwrap_or(0)),
    };
    let t = PrimitiveDateTime::try_from(parsed).ok()?;
    // Four digits, as written.
    (0..=9999).contains(&t.year()).then_some((t, offset))
}

/// `YYYY-MM-DDThh:mm:ss[.mmm](Z|+hh:mm)`, digit by digit: `format!`
/// costs a guest thousands of instructions more per event.
fn write(t: PrimitiveDateTime, offset_minutes: i16) -> String {
    let mut out = String::with_capacity(29);
    push_digits(&mut out, t.year() as u32, 4);
    for (sep, n) in [
        ('-', u8::from(t.month())),
        ('-', t.day()),
        ('T', t.hour()),
        (':', t.minute()),
        (':', t.second()),
    ] {
        out.push(sep);
        push_digits(&mut out, u32::from(n), 2);
    }
    if t.millisecond() != 0 {
        out.push('.');
        push_digits(&mut out, u32::from(t.millisecond()), 3);
    }
    if offset_minutes == 0 {
        out.push('Z');
    } else {
        out.push(if offset_minutes < 0 { '-' } else { '+' });
        let m = u32::from(offset_minutes.unsigned_abs());
        push_digits(&mut out, m / 60, 2);
        out.push(':');
        push_digits(&mut out, m % 60, 2);
    }
    out
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for p in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(p) % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_superna_may_send() {
        let mut bad = Vec::new();
        for (text, want) in [
            ("2025-06-11T10:15:03Z", "2025-06-11T10:15:03Z"),
            ("2025-06-11 10:15:03", "2025-06-11T10:15:03Z"),
            ("2025-06-11T10:15:03", "2025-06-11T10:15:03Z"),
            ("2025-06-11t10:15:03z", "2025-06-11T10:15:03Z"),
            ("  2025-06-11 10:15:03  ", "2025-06-11T10:15:03Z"),
            ("2025-06-11T10:15", "2025-06-11T10:15:00Z"),
            ("2025-06-11 10:15Z", "2025-06-11T10:15:00Z"),
            ("2025-06-13T08:00:00+02:00", "2025-06-13T08:00:00+02:00"),
            ("2025-06-13 08:00:00-05:30", "2025-06-13T08:00:00-05:30"),
            ("2025-06-13T08:00:00-00:30", "2025-06-13T08:00:00-00:30"),
            ("2025-06-13T08:00:00+0200", "2025-06-13T08:00:00+02:00"),
            ("2025-06-13T08:00:00+02", "2025-06-13T08:00:00+02:00"),
            ("2025-06-13T08:00:00+00:00", "2025-06-13T08:00:00Z"),
            ("2025-06-13T08:00:00-00:00", "2025-06-13T08:00:00Z"),
            ("2025-06-13T08:00:00+23:59", "2025-06-13T08:00:00+23:59"),
            // Fractions: milliseconds, cut, left out when zero.
            ("2025-06-11T10:15:03.250Z", "2025-06-11T10:15:03.250Z"),
            ("2025-06-11T10:15:03.25Z", "2025-06-11T10:15:03.250Z"),
            ("2025-06-11T10:15:03.5", "2025-06-11T10:15:03.500Z"),
            (
                "2025-06-11 10:15:03,123456789+01:00",
                "2025-06-11T10:15:03.123+01:00",
            ),
            ("2025-06-11T10:15:03.9999Z", "2025-06-11T10:15:03.999Z"),
            ("2025-06-11T10:15:03.000Z", "2025-06-11T10:15:03Z"),
            ("2025-06-11T10:15:03.0001Z", "2025-06-11T10:15:03Z"),
            (
                "2025-06-11T10:15:03.1234567891Z",
                "2025-06-11T10:15:03.123Z",
            ),
            // Calendar edges.
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"),
            ("2000-02-29T23:59:59Z", "2000-02-29T23:59:59Z"),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
            ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
            // Epoch seconds and milliseconds, as digits.
            ("1749636903", "2025-06-11T10:15:03Z"),
            (" 1749636903250 ", "2025-06-11T10:15:03.250Z"),
            ("1749636903000", "2025-06-11T10:15:03Z"),
            ("0", "1970-01-01T00:00:00Z"),
        ] {
            if text_to_rfc3339(text).as_deref() != Some(want) {
                bad.push(format!("{text:?}: {:?}", text_to_rfc3339(text)));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }

    #[test]
    fn refuses_what_does_not_exist_and_what_it_cannot_read() {
        let mut bad = Vec::new();
        for text in [
            // Impossible dates and times.
            "2025-02-31T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2025-04-31T00:00:00Z",
            "2025-00-10T00:00:00Z",
            "2025-13-10T00:00:00Z",
            "2025-06-00T00:00:00Z",
            "2025-06-32T00:00:00Z",
            "2025-06-11T99:99:99Z",
            "2025-06-11T24:00:00Z",
            "2025-06-11T10:60:00Z",
            "2025-06-11T10:15:61Z",
            "2025-06-11T10:15:03+24:00",
            "2025-06-11T10:15:03+02:60",
            // Not a form read.
            "",
            "yesterday",
            "11/06/2025 10:15",
            "2025-06-11",
            "2025-06-11T10",
            "2025-06-11T10:15:03.Z",
            "2025-06-11T23:59:60Z",
            "2025-06-11T10:15:03 Z",
            "2025-06-11T10:15:03+02:",
            "2025-06-11T10:15:03+2:00",
            "2025-06-11T10:15:03+02:00[Europe/Paris]",
            "2025-06-11T10:15:03ZZ",
            "2025-06-11X10:15:03Z",
            "2025-6-11T10:15:03Z",
            "25-06-11T10:15:03Z",
            "+2025-06-11T10:15:03Z",
            "-2025-06-11T10:15:03Z",
            "20250611T101503Z",
            "2025-06-11T1015",
            "２０２５-06-11T10:15:03Z",
            "1749636903.5",
            // Epochs before 1970 or after 9999.
            "-5",
            "253402300800000",
            "99999999999999999",
        ] {
            if let Some(got) = text_to_rfc3339(text) {
                bad.push(format!("{text:?}: {got:?}"));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }
}

/// The grammar and the writing against jiff, an independent reader (a
/// dev-dependency only: it would add ~275 KB to each guest): on many
/// generated times, ours reads exactly those jiff reads (but for leap
/// seconds and offsets of 24 hours or more, which ours refuses), as the
/// date, time and offset jiff reads.
#[cfg(test)]
mod against_jiff {
    use super::*;
    use jiff::civil::DateTime as Civil;
    use jiff::fmt::temporal::{Pieces, PiecesOffset};
    use jiff::tz::Offset;

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len() as u64) as usize]
        }
    }

    /// A time in one of the forms ours reads, fields in and out of range.
    fn generate(r: &mut Rng) -> String {
        let year = match r.below(4) {
            0 => [0, 1, 1900, 1970, 2000, 2024, 2025, 2100, 2400, 9999][r.below(10) as usize],
            _ => r.below(10_000),
        };
        let month = if r.below(8) == 0 {
            r.below(100)
        } else {
            r.below(14)
        };
        let day = match r.below(8) {
            0 => r.below(100),
            1..=4 => 27 + r.below(6),
            _ => r.below(33),
        };
        let hour = if r.below(8) == 0 {
            r.below(100)
        } else {
            r.below(26)
        };
        let minute = if r.below(8) == 0 {
            r.below(100)
        } else {
            r.below(62)
        };
        let mut s = format!(
            "{year:04}-{month:02}-{day:02}{}{hour:02}:{minute:02}",
            r.pick(&["T", "t", " "])
        );
        if r.below(5) > 0 {
            let second = if r.below(8) == 0 {
                r.below(100)
            } else {
                r.below(62)
            };
            s.push_str(&format!(":{second:02}"));
            if r.below(2) == 0 {
                s.push_str(r.pick(&[".", ","]));
                for _ in 0..=r.below(9) {
                    s.push(char::from(b'0' + r.below(10) as u8));
                }
            }
        }
        match r.below(6) {
            0 => {}
            1 => s.push_str(r.pick(&["Z", "z"])),
            n => {
                let (h, m) = (
                    r.below(26),
                    if r.below(6) == 0 {
                        r.below(100)
                    } else {
                        r.below(60)
                    },
                );
                s.push_str(r.pick(&["+", "-"]));
                s.push_str(&match n {
                    2 | 3 => format!("{h:02}:{m:02}"),
                    4 => format!("{h:02}{m:02}"),
                    _ => format!("{h:02}"),
                });
            }
        }
        s
    }

    /// What ours should write for `s`, from jiff: the date and time (the
    /// fraction cut to milliseconds) and the offset in minutes; `None`
    /// where ours refuses.
    fn reference(s: &str) -> Option<(Civil, i32)> {
        let p = Pieces::parse(s).ok()?;
        let offset = match p.offset() {
            None | Some(PiecesOffset::Zulu) => Offset::UTC,
            Some(PiecesOffset::Numeric(n)) => n.offset(),
            Some(_) => unreachable!("{s}"),
        };
        // Ours reads offsets up to 23:59, as RFC 3339 allows.
        if offset.seconds().abs() >= 24 * 3600 {
            return None;
        }
        // jiff reads a leap second as :59; ours refuses it.
        if s.as_bytes().get(17..19) == Some(b"60") {
            return None;
        }
        // The fraction cut to milliseconds.
        let time = p.time()?;
        let ms = time.subsec_nanosecond() / 1_000_000 * 1_000_000;
        let time = time.with().subsec_nanosecond(ms).build().ok()?;
        Some((p.date().to_datetime(time), offset.seconds() / 60))
    }

    /// `2025-06-11T10:15:03[.mmm](Z|+hh:mm)`, read back by jiff.
    fn written(out: &str) -> (Civil, i32) {
        let b = out.as_bytes();
        let fraction = if b.get(19) == Some(&b'.') { 4 } else { 0 };
        assert!(
            b.len() == 20 + fraction || b.len() == 25 + fraction,
            "shape of {out}"
        );
        assert_ne!(&out[19..19 + fraction], ".000", "{out}");
        let dt: Civil = out[..19 + fraction]
            .parse()
            .unwrap_or_else(|e| panic!("{out}: {e}"));
        let offset = match &out[19 + fraction..] {
            "Z" => 0,
            z => {
                let (h, m): (i32, i32) = (z[1..3].parse().unwrap(), z[4..6].parse().unwrap());
                assert_ne!((h, m), (0, 0), "{out}: UTC is written Z");
                if z.starts_with('-') {
                    -(h * 60 + m)
                } else {
                    h * 60 + m
                }
            }
        };
        (dt, offset)
    }

    #[test]
    fn generated_times_read_as_jiff_reads_them() {
        let rounds: usize = std::env::var("ZT_EVENT_TIMES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut read, mut refused) = (0, 0);
        for _ in 0..rounds {
            let s = generate(&mut r);
            let ours = text_to_rfc3339(&s);
            let want = reference(&s);
            assert_eq!(ours.as_deref().map(written), want, "{s} -> {ours:?}");
            if ours.is_some() {
                read += 1;
            } else {
                refused += 1;
            }
        }
        assert!(
            read > rounds / 10 && refused > rounds / 10,
            "{read} read, {refused} refused"
        );
    }

    #[test]
    fn epochs_write_the_instant_jiff_finds() {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        for i in 0..200_000 {
            let n = match i % 3 {
                0 => r.below(100_000_000_000) as i64,
                1 => (100_000_000_000 + r.below(253_402_300_800_000 - 100_000_000_000)) as i64,
                _ => [
                    0,
                    1,
                    59,
                    86_399,
                    86_400,
                    951_782_400,
                    99_999_999_999,
                    253_402_300_799,
                ][r.below(8) as usize],
            };
            let ms = if n >= 100_000_000_000 { n } else { n * 1000 };
            let want = jiff::civil::date(1970, 1, 1)
                .at(0, 0, 0, 0)
                .checked_add(jiff::SignedDuration::from_millis(ms))
                .unwrap();
            let out = epoch_to_rfc3339(n).unwrap();
            assert_eq!(written(&out), (want, 0), "{n}");
            assert_eq!(text_to_rfc3339(&n.to_string()), Some(out), "{n}");
        }
        assert_eq!(epoch_to_rfc3339(253_402_300_800_000), None);
    }
}
