//! Real traffic for the scenarios: curl and dig run inside the test pods (or on the
//! external client), retried until they give the expected answer or time runs out.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::sandbox_deploy::TestSandbox;

/// Where a request starts.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    Pod(&'a str),
    /// The external client on the underlay, outside the cluster.
    External,
}

/// What an HTTP request got: the status (0: no answer) and the body or curl's error.
#[derive(Debug, Clone)]
pub struct HttpResult {
    pub code: u16,
    pub body: String,
    pub error: String,
}

impl HttpResult {
    /// `200 "echo-other-node"`, or `no answer (curl: ...)`.
    pub fn observed(&self) -> String {
        if self.code == 0 {
            let why = if self.error.contains("(28)") {
                "timed out"
            } else if self.error.contains("(7)") {
                "connection refused"
            } else {
                self.error.as_str()
            };
            format!("no answer ({why})")
        } else {
            format!("HTTP {} {:?}", self.code, self.body.trim())
        }
    }
}

/// One `curl` (2 s at most).
pub fn http(sandbox: &TestSandbox, origin: Origin<'_>, url: &str) -> Result<HttpResult> {
    let [curl, silent, max, two, write, format] = CURL;
    let args = [curl, silent, max, two, write, format, url];
    let out = match origin {
        Origin::Pod(pod) => sandbox.exec(pod, &args)?,
        Origin::External => sandbox.exec_external(&args)?,
    };
    Ok(http_result(&out))
}

/// The curl command of [`http`], wherever it runs.
pub const CURL: [&str; 6] = ["curl", "-sS", "-m", "2", "-w", "\n%{http_code}"];

/// What the output of [`CURL`] says.
pub fn http_result(out: &std::process::Output) -> HttpResult {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    HttpResult {
        code: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        error: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// `curl` until `done` holds for the answer or `within` passes; returns the last answer.
pub fn http_until(
    sandbox: &TestSandbox,
    origin: Origin<'_>,
    url: &str,
    within: Duration,
    done: impl Fn(&HttpResult) -> bool,
) -> Result<HttpResult> {
    let deadline = Instant::now() + within;
    loop {
        let result = http(sandbox, origin, url)?;
        if done(&result) || Instant::now() > deadline {
            return Ok(result);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a DNS query got: the status (`NOERROR`, `REFUSED`, ... or `no answer`) and the
/// A records.
#[derive(Debug, Clone)]
pub struct DnsResult {
    pub status: String,
    pub addresses: Vec<String>,
}

impl DnsResult {
    pub fn observed(&self) -> String {
        if self.addresses.is_empty() {
            self.status.clone()
        } else {
            format!("{} {}", self.status, self.addresses.join(","))
        }
    }
}

/// `dig @server name` from a pod (UDP, 2 s, 2 tries).
pub fn dig(sandbox: &TestSandbox, pod: &str, server: &str, name: &str) -> Result<DnsResult> {
    let at = format!("@{server}");
    let out = sandbox.exec(pod, &["dig", &at, name, "+time=2", "+tries=2"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| "no answer (timed out)".to_string());
    let addresses = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect();
    Ok(DnsResult { status, addresses })
}

/// `dig` until `done` holds or `within` passes; returns the last answer.
pub fn dig_until(
    sandbox: &TestSandbox,
    pod: &str,
    server: &str,
    name: &str,
    within: Duration,
    done: impl Fn(&DnsResult) -> bool,
) -> Result<DnsResult> {
    let deadline = Instant::now() + within;
    loop {
        let result = dig(sandbox, pod, server, name)?;
        if done(&result) || Instant::now() > deadline {
            return Ok(result);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
