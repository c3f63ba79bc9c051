//! The JSON state file: every object the testbed makes is written here as
//! it is made, so [`crate::sweep`] can remove it even after a crash.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Errors about the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} state file {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Everything recorded in a state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Network namespace names (/run/netns/NAME).
    pub netns: Vec<String>,
    /// cgroup directories (absolute).
    pub cgroups: Vec<PathBuf>,
    /// Processes we started.
    pub pids: Vec<PidRecord>,
    /// bpffs pin directories (only removed under /sys/fs/bpf/porin*).
    pub pin_dirs: Vec<PathBuf>,
    /// Directories holding sockets, removed recursively.
    pub socket_dirs: Vec<PathBuf>,
    /// Nodes of a cluster.
    pub nodes: Vec<NodeRecord>,
    /// Pods of a sandbox.
    pub pods: Vec<PodRecord>,
}

/// A process we started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PidRecord {
    pub pid: u32,
    /// Start time from /proc/PID/stat, so a reused pid is never killed.
    pub start_time: Option<u64>,
    pub label: String,
}

/// A node: where it lives and how the CLI reaches its agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    pub name: String,
    pub netns: String,
    pub cgroup: Option<PathBuf>,
    pub underlay_ip: Option<Ipv4Addr>,
    pub pod_cidr: Option<ipnet::Ipv4Net>,
    pub pin_dir: Option<PathBuf>,
    pub config_path: Option<PathBuf>,
    pub agent_socket: Option<PathBuf>,
    /// `ip:port` of the agent's metrics, inside the node's namespace.
    pub metrics_addr: Option<String>,
    pub agent_pid: Option<u32>,
}

/// A pod of the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodRecord {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub netns: String,
    pub cgroup: Option<PathBuf>,
    pub ip: Option<Ipv4Addr>,
    pub pid: Option<u32>,
    pub log: Option<PathBuf>,
}

/// A state file kept in memory and rewritten (atomically) on each change.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: Mutex<State>,
}

impl StateFile {
    /// Opens `path`, keeping what an earlier run recorded there, or starts
    /// an empty one; the file is written immediately.
    pub fn open_or_create(path: &Path) -> Result<Self, StateError> {
        let state = if path.exists() {
            load(path)?
        } else {
            State::default()
        };
        let file = Self {
            path: path.to_owned(),
            state: Mutex::new(state),
        };
        file.update(|_| ())?;
        Ok(file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> State {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the state and writes it out before returning.
    pub fn update(&self, change: impl FnOnce(&mut State)) -> Result<(), StateError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut state);
        write(&self.path, &state)
    }

    /// Records a network namespace.
    pub fn record_netns(&self, name: &str) -> Result<(), StateError> {
        self.update(|s| push_unique(&mut s.netns, name.to_owned()))
    }

    /// Records a cgroup directory.
    pub fn record_cgroup(&self, path: &Path) -> Result<(), StateError> {
        self.update(|s| push_unique(&mut s.cgroups, path.to_owned()))
    }

    /// Records a process (with its start time).
    pub fn record_pid(&self, pid: u32, label: &str) -> Result<(), StateError> {
        let record = PidRecord {
            pid,
            start_time: crate::process::start_time(pid),
            label: label.to_owned(),
        };
        self.update(|s| push_unique(&mut s.pids, record))
    }

    /// Records a bpffs pin directory.
    pub fn record_pin_dir(&self, path: &Path) -> Result<(), StateError> {
        self.update(|s| push_unique(&mut s.pin_dirs, path.to_owned()))
    }

    /// Records a socket directory.
    pub fn record_socket_dir(&self, path: &Path) -> Result<(), StateError> {
        self.update(|s| push_unique(&mut s.socket_dirs, path.to_owned()))
    }

    /// Deletes the file (after a clean teardown).
    pub fn remove_file(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                op: "remove",
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Reads a state file.
pub fn load(path: &Path) -> Result<State, StateError> {
    let text = std::fs::read_to_string(path).map_err(|source| StateError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| StateError::Parse {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, state: &State) -> Result<(), StateError> {
    let io_err = |op| {
        move |source| StateError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create directory of"))?;
    }
    let json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Io {
        op: "serialize",
        path: path.to_owned(),
        source: e.into(),
    })?;
    // Write then rename, so a crash never leaves a half-written file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, json).map_err(io_err("write"))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename"))
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub/state.json");
        let file = StateFile::open_or_create(&path)?;
        file.record_netns("porin-x-node-1")?;
        file.record_netns("porin-x-node-1")?;
        file.record_cgroup(Path::new("/sys/fs/cgroup/porin-x"))?;
        let again = StateFile::open_or_create(&path)?;
        assert_eq!(again.snapshot().netns, vec!["porin-x-node-1".to_owned()]);
        assert_eq!(again.snapshot().cgroups.len(), 1);
        again.remove_file()?;
        assert!(!path.exists());
        Ok(())
    }
}
