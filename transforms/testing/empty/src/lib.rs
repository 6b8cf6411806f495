//! The smallest possible transform: answers `done` without reading the
//! event.  It is the floor of the per-event benchmark (sandbox creation and
//! one call, nothing else) and the host's own smoke test.

wit_bindgen::generate!({ world: "transform-world", path: "../../../wit" });

use exports::ztbridge::transform::transform::Guest;
use ztbridge::transform::types::{Event, Failure, HttpResponse, Info, Step, TransportError};

struct Empty;

impl Guest for Empty {
    fn describe() -> Info {
        Info {
            name: "empty".into(),
            version: "0.2.0".into(),
            description: "does nothing (benchmark floor)".into(),
            egress: vec![],
            config: vec![],
            needs_random: false,
        }
    }

    fn start(_event: Event) -> Result<Step, Failure> {
        Ok(Step::Done("empty".into()))
    }

    fn resume(_responses: Vec<Result<HttpResponse, TransportError>>) -> Result<Step, Failure> {
        Ok(Step::Done("empty".into()))
    }
}

export!(Empty);
