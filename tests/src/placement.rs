//! Placing a child process into a network namespace and a cgroup before it
//! executes, with `setns(2)` and a write to `cgroup.procs` in a `pre_exec`
//! hook. Unlike `ip netns exec`, this does not remount /sys, so bpffs stays
//! visible to the child.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A namespace or cgroup file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {path} to place a process: {source}")]
pub struct PlacementError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Makes `cmd` run inside `netns` (a path like /run/netns/NAME) and the cgroup
/// directory `cgroup`, each when given. The files are opened now, so errors
/// surface here rather than as an opaque spawn failure.
pub fn place(
    cmd: &mut Command,
    netns: Option<&Path>,
    cgroup: Option<&Path>,
) -> Result<(), PlacementError> {
    let ns_fd: Option<OwnedFd> = match netns {
        Some(path) => Some(open(path, false)?),
        None => None,
    };
    let cg_fd: Option<OwnedFd> = match cgroup {
        Some(dir) => Some(open(&dir.join("cgroup.procs"), true)?),
        None => None,
    };
    if ns_fd.is_none() && cg_fd.is_none() {
        return Ok(());
    }
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls here: we are between fork and exec.
        if let Some(fd) = &cg_fd {
            let pid = b"0";
            // SAFETY: fd is an open descriptor owned by this closure; the
            // buffer is valid for its length.
            let n = unsafe { libc::write(fd.as_raw_fd(), pid.as_ptr().cast(), pid.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(fd) = &ns_fd {
            // SAFETY: fd refers to a network namespace file opened above.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls write(2) and setns(2), which are
    // async-signal-safe, and does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
    Ok(())
}

fn open(path: &Path, write: bool) -> Result<OwnedFd, PlacementError> {
    let file: io::Result<File> = if write {
        OpenOptions::new().write(true).open(path)
    } else {
        File::open(path)
    };
    file.map(OwnedFd::from).map_err(|source| PlacementError {
        path: path.to_owned(),
        source,
    })
}
