//! The signature-section reader (`trust::signing`): `verify` against a
//! trusted key, `signers`, `strip_signatures`, `sign`.  Properties: no
//! panic; stripping leaves no signer and is idempotent; whatever `sign`
//! accepts then verifies with the key that signed it.
//!
//! Seeds (`seeds/signature`) are small modules and components signed by
//! the key in `seeds/signature-key.pub` (trusted here), once and twice.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ztbridge_runtime::trust::signing::{
    KeyPair, TrustedKeys, load_public_keys, sign, signers, strip_signatures, verify,
};

/// The seeds' key and one made here (for sign → verify), both trusted.
fn keys() -> &'static (KeyPair, TrustedKeys) {
    static KEYS: OnceLock<(KeyPair, TrustedKeys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair = KeyPair::generate();
        let (sk, pk) = (dir.path().join("fuzz.key"), dir.path().join("fuzz.pub"));
        pair.write(&sk, &pk).expect("write key");
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/signature-key.pub");
        let trusted = load_public_keys(&[std::path::PathBuf::from(seeds), pk]).expect("keys");
        (pair, trusted)
    })
}

fuzz_target!(|data: &[u8]| {
    let (pair, trusted) = keys();
    let _ = verify(data, trusted);
    let _ = signers(data);
    if let Ok(stripped) = strip_signatures(data) {
        assert_eq!(
            signers(&stripped).map(|s| s.len()).ok(),
            Some(0),
            "signers left after stripping"
        );
        assert_eq!(
            strip_signatures(&stripped).ok().as_deref(),
            Some(&stripped[..]),
            "stripping is not idempotent"
        );
    }
    if let Ok(signed) = sign(data, &pair.secret, None) {
        if let Err(e) = verify(&signed, trusted) {
            panic!("signed here, then refused: {e}");
        }
    }
});
