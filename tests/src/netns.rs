//! Named network namespaces (`ip netns add`, /run/netns/NAME), RAII.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use nix::sched::{CloneFlags, setns};

use crate::cmd::{self, CmdError};
use crate::placement::{self, PlacementError};

/// Directory where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Errors about network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("invalid namespace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("network namespace {name}: {source}")]
    Command {
        name: String,
        #[source]
        source: CmdError,
    },
    #[error("network namespace {name} does not exist at {path}")]
    Missing { name: String, path: PathBuf },
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("setns into {name}: {source}")]
    Setns {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("helper thread for namespace {name} panicked")]
    ThreadPanicked { name: String },
}

/// A named network namespace. Deleted on drop unless it was opened with
/// [`NetNs::open`] or released with [`NetNs::keep`].
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    owned: bool,
}

/// Restores the thread's original network namespace on drop. Not `Send`:
/// namespaces belong to threads.
#[derive(Debug)]
pub struct NetNsGuard {
    original: OwnedFd,
    name: String,
    _not_send: PhantomData<*const ()>,
}

impl NetNs {
    /// Creates /run/netns/NAME with `ip netns add NAME`.
    pub fn create(name: &str) -> Result<Self, NetNsError> {
        validate(name)?;
        cmd::ip(None, &["netns", "add", name]).map_err(|source| NetNsError::Command {
            name: name.to_owned(),
            source,
        })?;
        tracing::debug!(name, "created network namespace");
        let ns = Self {
            name: name.to_owned(),
            path: Path::new(NETNS_DIR).join(name),
            owned: true,
        };
        // Each namespace starts with lo down; almost everything wants it up.
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Opens an existing namespace without taking ownership (not deleted on drop).
    pub fn open(name: &str) -> Result<Self, NetNsError> {
        validate(name)?;
        let path = Path::new(NETNS_DIR).join(name);
        if !path.exists() {
            return Err(NetNsError::Missing {
                name: name.to_owned(),
                path,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            path,
            owned: false,
        })
    }

    /// The namespace's name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, /run/netns/NAME.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases ownership: the namespace outlives this value. Returns its name.
    pub fn keep(mut self) -> String {
        self.owned = false;
        std::mem::take(&mut self.name)
    }

    /// A `Command` for `program` that will run inside this namespace.
    pub fn command(&self, program: &str) -> Result<Command, NetNsError> {
        let mut cmd = Command::new(program);
        placement::place(&mut cmd, Some(&self.path), None)?;
        Ok(cmd)
    }

    /// Runs `program args...` inside the namespace; a non-zero exit is an error.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, NetNsError> {
        let mut cmd = self.command(program)?;
        cmd.args(args);
        cmd::run(&mut cmd).map_err(|source| NetNsError::Command {
            name: self.name.clone(),
            source,
        })
    }

    /// Spawns `cmd` inside the namespace (its stdio is left as configured).
    pub fn spawn(&self, mut cmd: Command) -> Result<Child, NetNsError> {
        placement::place(&mut cmd, Some(&self.path), None)?;
        let command = cmd::describe(&cmd);
        cmd.spawn().map_err(|source| NetNsError::Command {
            name: self.name.clone(),
            source: CmdError::Spawn { command, source },
        })
    }

    /// Runs `ip -n NAME args...` and returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetNsError> {
        cmd::ip(Some(&self.name), args).map_err(|source| NetNsError::Command {
            name: self.name.clone(),
            source,
        })
    }

    /// Moves the calling thread into this namespace until the guard drops.
    pub fn enter_on_this_thread(&self) -> Result<NetNsGuard, NetNsError> {
        let self_path = PathBuf::from("/proc/thread-self/ns/net");
        let original = File::open(&self_path).map_err(|source| NetNsError::Io {
            op: "open",
            path: self_path,
            source,
        })?;
        let target = File::open(&self.path).map_err(|source| NetNsError::Io {
            op: "open",
            path: self.path.clone(),
            source,
        })?;
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|source| NetNsError::Setns {
            name: self.name.clone(),
            source,
        })?;
        Ok(NetNsGuard {
            original: original.into(),
            name: self.name.clone(),
            _not_send: PhantomData,
        })
    }

    /// Writes a per-namespace sysctl, e.g. `("net.ipv4.ip_forward", "1")`,
    /// from a helper thread that enters the namespace (the caller's thread
    /// never changes namespace).
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), NetNsError> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _guard = self.enter_on_this_thread()?;
                    std::fs::write(&path, value).map_err(|source| NetNsError::Io {
                        op: "write",
                        path: path.clone(),
                        source,
                    })
                })
                .join()
                .map_err(|_| NetNsError::ThreadPanicked {
                    name: self.name.clone(),
                })?
        })
    }

    /// Deletes the namespace now (idempotent for owned namespaces).
    pub fn delete(mut self) -> Result<(), NetNsError> {
        self.owned = false;
        delete_by_name(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned
            && let Err(error) = delete_by_name(&self.name)
        {
            tracing::warn!(name = %self.name, %error, "cannot delete network namespace");
        }
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(error) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            tracing::error!(netns = %self.name, %error, "cannot restore the thread's network namespace");
        }
    }
}

/// Deletes a named namespace; a namespace that is already gone is not an error.
pub fn delete_by_name(name: &str) -> Result<(), NetNsError> {
    validate(name)?;
    if !Path::new(NETNS_DIR).join(name).exists() {
        return Ok(());
    }
    cmd::ip(None, &["netns", "del", name]).map_err(|source| NetNsError::Command {
        name: name.to_owned(),
        source,
    })?;
    tracing::debug!(name, "deleted network namespace");
    Ok(())
}

/// Names of all namespaces in /run/netns.
pub fn list() -> Result<Vec<String>, NetNsError> {
    let dir = Path::new(NETNS_DIR);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetNsError::Io {
                op: "read_dir",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Pids of processes whose network namespace is NAME (`ip netns pids`).
pub fn pids(name: &str) -> Result<Vec<i32>, NetNsError> {
    validate(name)?;
    let out = cmd::ip(None, &["netns", "pids", name]).map_err(|source| NetNsError::Command {
        name: name.to_owned(),
        source,
    })?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

fn validate(name: &str) -> Result<(), NetNsError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.contains('/') || name == "." || name == ".." {
        Some("must be a plain file name")
    } else if name.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetNsError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        assert!(validate("a/b").is_err());
        assert!(validate("").is_err());
        assert!(validate("..").is_err());
        assert!(validate("porin-1a-node-1").is_ok());
    }
}
