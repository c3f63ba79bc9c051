//! Long-running commands inside a network namespace and a cgroup, with
//! stdout and stderr appended to a log file; killed (whole process group)
//! on drop.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::cmd;
use crate::placement::{self, PlacementError};

/// Errors about managed processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for pid {pid}: {source}")]
    Wait {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// A running child process in its own process group.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    pid: u32,
    command: String,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` in `netns` (a namespace file, e.g. /run/netns/NAME) and
    /// `cgroup` (a cgroup directory), each when given, in a new process
    /// group, with stdin from /dev/null and stdout + stderr appended to `log`
    /// (parent directories are created).
    pub fn spawn(
        mut cmd: Command,
        netns: Option<&Path>,
        cgroup: Option<&Path>,
        log: &Path,
    ) -> Result<Self, ProcessError> {
        let log_err = |source| ProcessError::Log {
            path: log.to_owned(),
            source,
        };
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(log_err)?;
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        placement::place(&mut cmd, netns, cgroup)?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let command = cmd::describe(&cmd);
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            command: command.clone(),
            source,
        })?;
        let pid = child.id();
        tracing::info!(pid, %command, log = %log.display(), "spawned");
        Ok(Self {
            child: Some(child),
            pid,
            command,
            log: log.to_owned(),
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().map_err(|source| ProcessError::Wait {
                pid: self.pid,
                source,
            }),
            None => Ok(None),
        }
    }

    /// Kills the process group with SIGKILL and reaps the process.
    pub fn kill(&mut self) -> Result<(), ProcessError> {
        if let Some(mut child) = self.child.take() {
            if let Ok(raw) = i32::try_from(self.pid) {
                // ESRCH: already gone.
                let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            }
            child.wait().map_err(|source| ProcessError::Wait {
                pid: self.pid,
                source,
            })?;
            tracing::debug!(pid = self.pid, "killed");
        }
        Ok(())
    }

    /// Leaves the process running after this value is gone (e.g. the sandbox
    /// CLI exits while pods keep running). Returns its pid.
    pub fn detach(mut self) -> u32 {
        self.child = None;
        self.pid
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            tracing::warn!(pid = self.pid, %error, "cannot kill process");
        }
    }
}

/// The start time of `pid` in clock ticks since boot (field 22 of
/// /proc/PID/stat), to tell a recorded process from a later one that reused
/// its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self() {
        let t = start_time(std::process::id());
        assert!(t.is_some());
        assert_eq!(t, start_time(std::process::id()));
    }

    #[test]
    fn spawn_logs_and_kills() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("logs/p.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; exec sleep 30"]);
        let mut p = Process::spawn(cmd, None, None, &log)?;
        let pid = p.pid();
        for _ in 0..100 {
            if std::fs::read_to_string(&log)?.contains("hello") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(std::fs::read_to_string(&log)?.contains("hello"));
        assert!(p.try_wait()?.is_none());
        drop(p);
        assert!(start_time(pid).is_none(), "pid {pid} survived drop");
        Ok(())
    }
}
