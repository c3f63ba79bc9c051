//! Running external tools (`ip`, ...) with errors that carry the command line and its stderr.

use std::io;
use std::process::{Command, ExitStatus, Output};

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program could not be started (often: the tool is not installed).
    #[error("cannot start `{command}`: {source} (is the tool installed and on PATH?)")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// The command line of `cmd`, for error messages and logs.
pub fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<Output, CmdError> {
    let command = describe(cmd);
    tracing::debug!(%command, "run");
    let output = cmd.output().map_err(|source| CmdError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(CmdError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Runs `ip [-n NETNS] ARGS...` and returns its stdout.
pub fn ip(netns: Option<&str>, args: &[&str]) -> Result<String, CmdError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(args);
    let output = run(&mut cmd)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_joins_program_and_args() {
        let mut cmd = Command::new("ip");
        cmd.args(["link", "show"]);
        assert_eq!(describe(&cmd), "ip link show");
    }

    #[test]
    fn failure_carries_stderr() {
        let err =
            run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("boom") && msg.contains("sh -c"), "{msg}");
    }

    #[test]
    fn missing_tool_is_spawn_error() {
        let err = run(&mut Command::new("porin-no-such-tool")).expect_err("must fail");
        assert!(matches!(err, CmdError::Spawn { .. }));
    }
}
