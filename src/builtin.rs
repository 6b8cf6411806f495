//! The built-in transforms, compiled from `transforms/` by build.rs and
//! embedded in the binary.

use std::sync::Arc;

use ztbridge_runtime::Builtins;

const PAGERDUTY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wasm/pagerduty.wasm"));
const JITBIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wasm/jitbit.wasm"));

/// name -> component bytes.
pub fn all() -> Builtins {
    let mut b = Builtins::new();
    b.insert("pagerduty".to_string(), Arc::from(PAGERDUTY));
    b.insert("jitbit".to_string(), Arc::from(JITBIT));
    b
}
