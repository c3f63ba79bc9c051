//! Running `wg`, `ip` and friends in the agent's network namespace.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::WgError;

/// Run `program args`, feeding `stdin` if given; its stdout on success.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, WgError> {
    let command = format!("{program} {}", args.join(" "));
    let fail = |message: String| WgError::Command {
        command: command.clone(),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
