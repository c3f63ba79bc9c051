//! A tcpdump capture on the underlay bridge, for the encryption scenario: what crosses
//! between nodes, read back raw (to look for plaintext) and decoded (to name protocols).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running capture; stopped (and its process reaped) when dropped.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

/// What a capture saw.
pub struct Captured {
    pub raw: Vec<u8>,
    /// tcpdump's one-line decoding of every packet.
    pub text: String,
}

impl Capture {
    /// Starts tcpdump on `iface` inside `netns`, writing to `file`.
    pub fn start(netns: &Path, iface: &str, file: PathBuf) -> Result<Self> {
        // `ip netns exec` rather than setns alone: it also mounts the namespace's /sys,
        // without which libpcap captures nothing on the bridge.
        let name = netns
            .file_name()
            .with_context(|| format!("{} is not a named network namespace", netns.display()))?;
        let mut cmd = Command::new("ip");
        cmd.arg("netns")
            .arg("exec")
            .arg(name)
            // Immediate mode: packets reach the file as they come, not when a kernel
            // buffer block fills or times out (the capture is short and then killed).
            .args([
                "tcpdump",
                "--immediate-mode",
                "-i",
                iface,
                "-n",
                "-s",
                "0",
                "-U",
                "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().context("starting tcpdump (is it installed?)")?;
        let capture = Self { child, file };
        // tcpdump creates the file once it listens.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !capture.file.exists() {
            if Instant::now() > deadline {
                bail!("tcpdump on {iface} did not start within 5s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(capture)
    }

    /// Stops the capture and reads it.
    pub fn stop(mut self) -> Result<Captured> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let raw = std::fs::read(&self.file)
            .with_context(|| format!("reading the capture {}", self.file.display()))?;
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&self.file)
            .output()
            .context("decoding the capture with tcpdump -r")?;
        Ok(Captured {
            raw,
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Captured {
    /// Whether the raw packets hold `needle` in clear.
    pub fn contains(&self, needle: &str) -> bool {
        self.raw
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }
}
