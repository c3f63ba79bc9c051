//! Support of the UI test: `porin relay --ui` as a child process, the Playwright
//! driver (tests/e2e/ui_support/driver.py) and the synthetic flow source.

pub mod synthetic;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `porin relay ... --ui 127.0.0.1:0`, killed on drop.
pub struct Relay {
    child: Child,
    pub ui_url: String,
}

impl Relay {
    /// Start the relay with `args` (plus `--listen-address` and `--ui`) and wait
    /// for the UI's URL.
    pub fn start(porin: &str, sandbox_dir: Option<&Path>, args: &[&str]) -> Self {
        let mut cmd = Command::new(porin);
        cmd.args([
            "relay",
            "--listen-address",
            "127.0.0.1:0",
            "--ui",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if let Some(dir) = sandbox_dir {
            cmd.env("PORIN_SANDBOX_DIR", dir);
        }
        let mut child = cmd.spawn().expect("start porin relay");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut relay = Self {
            child,
            ui_url: String::new(),
        };
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("ui listening on ") {
                        relay.ui_url = url.trim().to_owned();
                        return relay;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("porin relay printed no UI address");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the test keeps its screenshots (CI keeps the folder as an artifact).
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/ui");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Run the Playwright driver in `mode` with `args`; its last stdout line is JSON.
pub fn driver(mode: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/ui_support/driver.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(mode)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run python3 driver.py (make deps installs playwright)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "driver.py {mode} failed:\n{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("driver.py printed no JSON ({e}):\n{stdout}"))
}
