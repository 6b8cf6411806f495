//! A transform built for contract `ztbridge:transform@0.1.0` (the WIT of
//! the first release, kept in `wit/`): the host refuses it at load with a
//! message naming both versions and how to rebuild.  Built in CI so the
//! refusal stays tested.

wit_bindgen::generate!({ world: "transform-world", path: "wit" });

use exports::ztbridge::transform::transform::Guest;
use ztbridge::transform::types::{Event, Failure, HttpResponse, Info, Step};

struct V01;

impl Guest for V01 {
    fn describe() -> Info {
        Info {
            name: "v01".into(),
            version: "0.1.0".into(),
            description: "built for contract 0.1.0 (tests)".into(),
            egress: vec!["config:url".into()],
            config: vec![],
        }
    }

    fn start(event: Event) -> Result<Step, Failure> {
        Ok(Step::Done(format!("{} bytes", event.body.len())))
    }

    fn resume(_responses: Vec<HttpResponse>) -> Result<Step, Failure> {
        Ok(Step::Done("v01".into()))
    }
}

export!(V01);
