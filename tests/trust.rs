//! Signed transforms: the CLI signs and verifies; the service refuses
//! unsigned, untrusted, tampered and stripped files at load with an error
//! naming the file and the reason, and runs a correctly signed one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ztbridge_runtime::app::App;
use ztbridge_runtime::config::Config;

struct Keys {
    dir: tempfile::TempDir,
    trusted_id: String,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let (code, trusted, err) =
            ztbridge(&["keys", "generate", "--out", out, "--name", "trusted"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = ztbridge(&["keys", "generate", "--out", out, "--name", "stranger"]);
        assert_eq!(code, 0, "{err}");
        Keys {
            trusted_id: trusted["key_id"].as_str().unwrap().to_string(),
            dir,
        }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    /// A copy of the hostile test component, optionally signed.
    fn component(&self, name: &str, signer: Option<&str>) -> String {
        let p = self.path(name);
        std::fs::copy(wasm_path("hostile"), &p).unwrap();
        if let Some(s) = signer {
            let (code, _, err) = ztbridge(&[
                "transform",
                "sign",
                &p,
                "--key",
                &self.path(&format!("{s}.key")),
            ]);
            assert_eq!(code, 0, "{err}");
        }
        p
    }
}

fn build_app(keys: &Keys, file: &str, target: &str) -> Result<App, String> {
    let data = keys.dir.path().join(format!("data-{}", file.len()));
    let text = format!(
        "data_dir = {:?}\n[trust]\nkeys = [{:?}]\n[[route]]\nname = \"h\"\ntransform = {file:?}\nallow_http = true\nprivate_networks = [\"127.0.0.1/32\"]\n[route.config]\nmode = \"ok\"\nurl = {target:?}\n",
        data.display().to_string(),
        keys.path("trusted.pub"),
    );
    let config = Config::parse(&text, "test").map_err(|e| e.to_string())?;
    App::build(config, &builtins(), true).map_err(|e| ztbridge_runtime::text::error_chain(&e))
}

#[test]
fn cli_signs_verifies_and_inspects() {
    let keys = Keys::new();
    let signed = keys.component("signed.wasm", Some("trusted"));
    let (code, v, _) = ztbridge(&[
        "transform",
        "verify",
        &signed,
        "--trusted",
        &keys.path("trusted.pub"),
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["trusted_signers"][0], keys.trusted_id.as_str());
    // A directory of keys works too.
    let (code, _, _) = ztbridge(&[
        "transform",
        "verify",
        &signed,
        "--trusted",
        keys.dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    // Two signers are both listed.
    let (code, _, err) = ztbridge(&[
        "transform",
        "sign",
        &signed,
        "--key",
        &keys.path("stranger.key"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, info, _) = ztbridge(&["transform", "inspect", &signed]);
    assert_eq!(code, 0);
    assert_eq!(info["signers"].as_array().unwrap().len(), 2, "{info}");
    assert_eq!(info["name"], "hostile");
    assert!(
        info["egress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "allowed.example")
    );
    let (code, v, _) = ztbridge(&[
        "transform",
        "verify",
        &signed,
        "--trusted",
        &keys.path("trusted.pub"),
    ]);
    assert_eq!(code, 0, "{v}");

    let unsigned = keys.component("unsigned.wasm", None);
    let (code, v, stderr) = ztbridge(&[
        "transform",
        "verify",
        &unsigned,
        "--trusted",
        &keys.path("trusted.pub"),
    ]);
    assert_eq!(code, 1);
    assert_eq!(v["trusted"], false);
    assert!(
        stderr.contains("unsigned.wasm") && stderr.contains("not signed"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_loads_only_trusted_intact_files() {
    let keys = Keys::new();
    let pd = StubPagerDuty::start().await;
    let target = pd.url();

    let unsigned = keys.component("unsigned.wasm", None);
    let err = build_app(&keys, &unsigned, &target)
        .err()
        .expect("unsigned must be refused");
    assert!(
        err.contains("unsigned.wasm") && err.contains("not signed"),
        "{err}"
    );

    let stranger = keys.component("stranger.wasm", Some("stranger"));
    let err = build_app(&keys, &stranger, &target)
        .err()
        .expect("unknown signer must be refused");
    assert!(
        err.contains("stranger.wasm") && err.to_lowercase().contains("key"),
        "{err}"
    );

    let flipped = keys.component("flipped.wasm", Some("trusted"));
    let mut bytes = std::fs::read(&flipped).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&flipped, &bytes).unwrap();
    let err = build_app(&keys, &flipped, &target)
        .err()
        .expect("a flipped byte must be refused");
    assert!(
        err.contains("flipped.wasm") && err.contains("tampered"),
        "{err}"
    );

    let stripped = keys.component("stripped.wasm", Some("trusted"));
    let bytes =
        ztbridge_runtime::trust::signing::strip_signatures(&std::fs::read(&stripped).unwrap())
            .unwrap();
    std::fs::write(&stripped, &bytes).unwrap();
    let err = build_app(&keys, &stripped, &target)
        .err()
        .expect("a stripped file must be refused");
    assert!(
        err.contains("stripped.wasm") && err.contains("not signed"),
        "{err}"
    );

    // The correctly signed file loads and delivers.
    let good = keys.component("good.wasm", Some("trusted"));
    let app = Arc::new(build_app(&keys, &good, &target).expect("signed file loads"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(app.serve(listener, std::future::pending()));
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .body(fixture("events/critical-lockout.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let got = pd.wait_for(1, Duration::from_secs(20)).await;
    assert!(got[0].body.contains("RSW-20250611-000123"));
}
