//! What reading an event at intake costs: zt-event's validating scanner
//! (one pass, no tree) against serde_json, on the fixture events and on a
//! 1 MB event, in the same run.  `cargo bench --bench intake_parse`.
//!
//! Rows: `scanner` = `zt_event::Event::parse` (checks the JSON and notes
//! where each field lies); `serde check` = serde_json deserialising into
//! `IgnoredAny` (checks only); `serde Value` = serde_json building a tree;
//! `serde check + scanner` = what intake does; `record` = the scanner plus
//! `Event::record`, the typed event every transform is given.

use std::hint::black_box;
use std::time::Instant;

fn time_per_op(iters: usize, mut f: impl FnMut()) -> f64 {
    // Median of 7 batches, in ns per call.
    let mut batches: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[3]
}

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events");
    let mut events: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    events.sort();
    let mut big: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    big["paths"] = serde_json::Value::Array(
        (0..20_000)
            .map(|i| serde_json::Value::String(format!("/ifs/data/share{i}/file-{i}.docx")))
            .collect(),
    );
    events.push(("1 MB event".into(), serde_json::to_string(&big).unwrap()));
    println!(
        "{:<36} {:>9} {:>12} {:>12} {:>12} {:>14} {:>12}",
        "event", "bytes", "scanner", "serde check", "serde Value", "check+scanner", "record"
    );
    for (name, text) in &events {
        let iters = (2_000_000 / text.len().max(1)).clamp(20, 20_000);
        let scanner = time_per_op(iters, || {
            black_box(zt_event::Event::parse(black_box(text)).unwrap());
        });
        let check = time_per_op(iters, || {
            black_box(serde_json::from_str::<serde::de::IgnoredAny>(black_box(text)).unwrap());
        });
        let value = time_per_op(iters, || {
            black_box(serde_json::from_str::<serde_json::Value>(black_box(text)).unwrap());
        });
        let both = time_per_op(iters, || {
            serde_json::from_str::<serde::de::IgnoredAny>(black_box(text)).unwrap();
            black_box(zt_event::Event::parse(black_box(text)).unwrap());
        });
        let record = time_per_op(iters, || {
            black_box(zt_event::Event::parse(black_box(text)).unwrap().record());
        });
        let us = |ns: f64| format!("{:.2} µs", ns / 1000.0);
        println!(
            "{:<36} {:>9} {:>12} {:>12} {:>12} {:>14} {:>12}",
            name,
            text.len(),
            us(scanner),
            us(check),
            us(value),
            us(both),
            us(record)
        );
    }
}
