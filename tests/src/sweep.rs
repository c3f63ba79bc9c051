//! Crash-proof cleanup: remove everything a state file lists, or every
//! namespace with our prefix.

use std::io;
use std::path::{Component, Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cgroup;
use crate::netns;
use crate::state::{self, State, StateError};

/// Root under which pin directories may be removed.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Errors that stop a sweep before it starts.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("refusing to sweep with prefix {prefix:?}: it must have at least 3 characters")]
    PrefixTooShort { prefix: String },
    #[error(transparent)]
    NetNs(#[from] netns::NetNsError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}

/// What a sweep did. Individual failures do not stop a sweep; they are
/// collected in `errors`.
#[derive(Debug, Default, Clone)]
pub struct SweepReport {
    pub killed: Vec<u32>,
    pub netns_deleted: Vec<String>,
    pub cgroups_removed: Vec<PathBuf>,
    pub dirs_removed: Vec<PathBuf>,
    pub errors: Vec<String>,
}

impl SweepReport {
    /// Whether everything listed was removed.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Removes everything listed in the state file at `state_file`, then the
/// file itself (kept if something could not be removed, so a second sweep
/// can retry). A missing file means there is nothing to do.
pub fn sweep(state_file: &Path) -> Result<SweepReport, SweepError> {
    if !state_file.exists() {
        return Ok(SweepReport::default());
    }
    let state = state::load(state_file)?;
    let report = sweep_state(&state);
    if report.is_clean()
        && let Err(e) = std::fs::remove_file(state_file)
        && e.kind() != io::ErrorKind::NotFound
    {
        return Err(StateError::Io {
            op: "remove",
            path: state_file.to_owned(),
            source: e,
        }
        .into());
    }
    Ok(report)
}

/// Removes everything listed in `state`: kills pids (only if their start
/// time still matches), kills and removes cgroups bottom-up, kills whatever
/// still runs in the namespaces and deletes them, removes pin directories
/// (only under /sys/fs/bpf/porin*) and socket directories.
pub fn sweep_state(state: &State) -> SweepReport {
    let mut report = SweepReport::default();
    for record in &state.pids {
        let alive = crate::process::start_time(record.pid);
        if alive.is_some()
            && (record.start_time.is_none() || alive == record.start_time)
            && let Ok(raw) = i32::try_from(record.pid)
            && kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok()
        {
            report.killed.push(record.pid);
        }
    }
    let mut cgroups = state.cgroups.clone();
    cgroups.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in cgroups {
        let existed = dir.exists();
        match cgroup::remove_tree(&dir) {
            Ok(()) if existed => report.cgroups_removed.push(dir),
            Ok(()) => {}
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    for name in &state.netns {
        delete_netns(name, &mut report);
    }
    for dir in &state.pin_dirs {
        if is_porin_pin_dir(dir) {
            remove_dir(dir, &mut report);
        } else {
            report.errors.push(format!(
                "not removing pin directory {}: not under {BPFFS_ROOT}/porin*",
                dir.display()
            ));
        }
    }
    for dir in &state.socket_dirs {
        if is_safe_dir(dir) {
            remove_dir(dir, &mut report);
        } else {
            report.errors.push(format!(
                "not removing socket directory {}: too close to /",
                dir.display()
            ));
        }
    }
    tracing::info!(
        killed = report.killed.len(),
        netns = report.netns_deleted.len(),
        cgroups = report.cgroups_removed.len(),
        errors = report.errors.len(),
        "swept"
    );
    report
}

/// Deletes every namespace whose name starts with `prefix` (killing what
/// runs in it) and every top-level cgroup with that prefix. Meant for the
/// CLI after a crash that also lost the state file; do not call it from a
/// test with a prefix other tests share.
pub fn sweep_prefix(prefix: &str) -> Result<SweepReport, SweepError> {
    if prefix.len() < 3 {
        return Err(SweepError::PrefixTooShort {
            prefix: prefix.to_owned(),
        });
    }
    let mut report = SweepReport::default();
    let root = cgroup::cgroup2_root()?;
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(prefix) && path.is_dir() {
                match cgroup::remove_tree(&path) {
                    Ok(()) => report.cgroups_removed.push(path),
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
        }
    }
    for name in netns::list()? {
        if name.starts_with(prefix) {
            delete_netns(&name, &mut report);
        }
    }
    Ok(report)
}

fn delete_netns(name: &str, report: &mut SweepReport) {
    if !Path::new(netns::NETNS_DIR).join(name).exists() {
        return;
    }
    // Processes keep a namespace's links alive after `ip netns del`.
    match netns::pids(name) {
        Ok(pids) => {
            for pid in pids {
                if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    report.killed.push(pid.unsigned_abs());
                }
            }
        }
        Err(e) => report.errors.push(e.to_string()),
    }
    match netns::delete_by_name(name) {
        Ok(()) => report.netns_deleted.push(name.to_owned()),
        Err(e) => report.errors.push(e.to_string()),
    }
}

fn remove_dir(dir: &Path, report: &mut SweepReport) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => report.dirs_removed.push(dir.to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => report.errors.push(format!("remove {}: {e}", dir.display())),
    }
}

/// Whether `dir` is /sys/fs/bpf/porin*/... (no `..`).
pub fn is_porin_pin_dir(dir: &Path) -> bool {
    if dir.components().any(|c| matches!(c, Component::ParentDir)) {
        return false;
    }
    match dir.strip_prefix(BPFFS_ROOT) {
        Ok(rest) => rest
            .components()
            .next()
            .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with("porin")),
        Err(_) => false,
    }
}

fn is_safe_dir(dir: &Path) -> bool {
    dir.is_absolute()
        && !dir.components().any(|c| matches!(c, Component::ParentDir))
        && dir.components().count() >= 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dir_guard() {
        assert!(is_porin_pin_dir(Path::new("/sys/fs/bpf/porin/node-1")));
        assert!(is_porin_pin_dir(Path::new("/sys/fs/bpf/porin-x")));
        assert!(!is_porin_pin_dir(Path::new("/sys/fs/bpf/cilium")));
        assert!(!is_porin_pin_dir(Path::new("/sys/fs/bpf")));
        assert!(!is_porin_pin_dir(Path::new("/sys/fs/bpf/porin/../tc")));
    }

    #[test]
    fn socket_dir_guard() {
        assert!(is_safe_dir(Path::new("/var/run/porin/x")));
        assert!(!is_safe_dir(Path::new("/var/run")));
        assert!(!is_safe_dir(Path::new("relative/a/b/c")));
    }

    #[test]
    fn short_prefix_refused() {
        assert!(matches!(
            sweep_prefix("po"),
            Err(SweepError::PrefixTooShort { .. })
        ));
    }

    #[test]
    fn missing_state_file_is_nothing_to_do() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let report = sweep(&dir.path().join("none.json"))?;
        assert!(report.is_clean() && report.netns_deleted.is_empty());
        Ok(())
    }
}
