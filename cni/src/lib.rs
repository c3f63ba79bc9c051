//! `porin-cni`: the CNI plugin container runtimes call for every pod.
//!
//! It holds no state and touches no kernel object: each command is one request
//! to the node's agent (`POST`/`DELETE /v1/endpoints`, `GET /v1/status`), which
//! makes the veth, address and endpoint exactly as for the sandbox's pods. The
//! runtime reads the result or the error JSON on stdout (CNI spec 1.1.0, with
//! results for 0.3.0 to 1.1.0). See docs/cni.md.

pub mod agent;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod pod;
pub mod result;
pub mod version;

use std::io::Read;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::config::NetConf;
use crate::env::{CniEnv, Command};
use crate::error::{CniError, ErrorCode};

/// Run one CNI command; `Ok(Some(json))` is printed on stdout, `Ok(None)` prints nothing.
pub fn run(env: &CniEnv, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(version_answer(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                "cannot start the I/O runtime",
                e.to_string(),
            )
        })?;
    runtime.block_on(async {
        match env.command {
            Command::Add => {
                let result = commands::add(env, &conf).await?;
                serde_json::to_value(result).map(Some).map_err(|e| {
                    CniError::new(
                        ErrorCode::IoFailure,
                        "cannot encode the result",
                        e.to_string(),
                    )
                })
            }
            Command::Del => commands::del(env, &conf).await.map(|()| None),
            Command::Check => commands::check(env, &conf).await.map(|()| None),
            Command::Status => commands::status(&conf).await.map(|()| None),
            Command::Gc => commands::gc(&conf).await.map(|()| None),
            Command::Version => Ok(Some(version_answer(stdin))),
        }
    })
}

/// The binary's whole life: read the environment and stdin, run, print, exit.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let cni_version = stated_version(&stdin);
    let outcome = read
        .map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                "cannot read the network config from stdin",
                e.to_string(),
            )
        })
        .and_then(|_| CniEnv::from_process())
        .and_then(|env| run(&env, &stdin));
    match outcome {
        Ok(Some(value)) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json(&cni_version));
            eprintln!("porin-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

/// VERSION: the versions this plugin speaks, answered in the caller's version.
fn version_answer(stdin: &[u8]) -> Value {
    json!({
        "cniVersion": stated_version(stdin),
        "supportedVersions": version::supported(),
    })
}

/// The `cniVersion` of stdin when it has one that we speak, else the latest.
fn stated_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::LATEST.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_answers_in_the_callers_version() {
        let v = version_answer(br#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(5));
        assert_eq!(version_answer(b"")["cniVersion"], "1.1.0");
    }
}
