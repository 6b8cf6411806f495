//! `Config::parse`: TOML, serde (untagged config values, defaults,
//! unknown keys), validation, `private_networks`.  Properties: no panic;
//! a configuration that parses serialises back to TOML that parses to the
//! same configuration.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ztbridge_runtime::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, "fuzz") else {
        return;
    };
    let _ = config.data_dir();
    let Ok(again) = toml::to_string(&config) else {
        // Not every value serialises to TOML (e.g. NaN keys); nothing to
        // compare.
        return;
    };
    let back = Config::parse(&again, "fuzz-roundtrip")
        .unwrap_or_else(|e| panic!("{e}\nre-serialised:\n{again}\nfrom:\n{text:?}"));
    let (a, b) = (
        serde_json::to_string(&config).unwrap_or_default(),
        serde_json::to_string(&back).unwrap_or_default(),
    );
    assert_eq!(a, b, "round trip changed the configuration:\n{again}");
});
