//! The built-in transforms, compiled from `transforms/` by build.rs and
//! embedded in the binary.

use std::sync::Arc;

use ztbridge_runtime::Builtins;

const PAGERDUTY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wasm/pagerduty.wasm"));
const JITBIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wasm/jitbit.wasm"));
const OPSGENIE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wasm/opsgenie.wasm"));
const SPLUNK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wasm/splunk.wasm"));
const TEMPLATE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wasm/template.wasm"));

/// name -> component bytes.
pub fn all() -> Builtins {
    let mut b = Builtins::new();
    b.insert("pagerduty".to_string(), Arc::from(PAGERDUTY));
    b.insert("jitbit".to_string(), Arc::from(JITBIT));
    b.insert("opsgenie".to_string(), Arc::from(OPSGENIE));
    b.insert("splunk".to_string(), Arc::from(SPLUNK));
    b.insert("template".to_string(), Arc::from(TEMPLATE));
    b
}
