//! cgroup v2 directories: create (nested), add pids, kill everything inside,
//! remove bottom-up on drop.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Errors about cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 file system in /proc/self/mounts")]
    NoCgroup2,
    #[error("invalid cgroup name {name:?}: must be a plain directory name")]
    InvalidName { name: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} still has processes after {waited:?}")]
    StillPopulated { path: PathBuf, waited: Duration },
}

/// A cgroup v2 directory. Killed and removed (with its descendants) on drop
/// unless released with [`Cgroup::keep`].
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    owned: bool,
}

impl Cgroup {
    /// Creates `relative` (possibly nested, e.g. `porin-x/node-1`) under the
    /// cgroup2 mount.
    pub fn create(relative: &Path) -> Result<Self, CgroupError> {
        let root = cgroup2_root()?;
        let path = root.join(relative);
        if !path.starts_with(&root) || relative.is_absolute() {
            return Err(CgroupError::InvalidName {
                name: relative.display().to_string(),
            });
        }
        Self::create_at(path)
    }

    /// Wraps an existing cgroup directory without owning it.
    pub fn open(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            owned: false,
        }
    }

    /// Creates a child cgroup `name`.
    pub fn create_child(&self, name: &str) -> Result<Self, CgroupError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(CgroupError::InvalidName {
                name: name.to_owned(),
            });
        }
        Self::create_at(self.path.join(name))
    }

    fn create_at(path: PathBuf) -> Result<Self, CgroupError> {
        std::fs::create_dir_all(&path).map_err(|source| CgroupError::Io {
            op: "mkdir",
            path: path.clone(),
            source,
        })?;
        tracing::debug!(path = %path.display(), "created cgroup");
        Ok(Self { path, owned: true })
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases ownership: the cgroup outlives this value. Returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.owned = false;
        std::mem::take(&mut self.path)
    }

    /// Moves a process into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        let file = self.path.join("cgroup.procs");
        std::fs::write(&file, pid.to_string()).map_err(|source| CgroupError::Io {
            op: "write",
            path: file,
            source,
        })
    }

    /// Pids directly in this cgroup.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        read_pids(&self.path)
    }

    /// Kills every process in this cgroup and its descendants, and waits
    /// until they are gone.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        kill_all(&self.path)
    }

    /// Kills everything inside and removes the directory tree now.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.owned = false;
        remove_tree(&self.path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.owned
            && let Err(error) = remove_tree(&self.path)
        {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove cgroup");
        }
    }
}

/// The cgroup2 mount point, read from /proc/self/mounts (it is
/// /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones).
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mounts_path = Path::new("/proc/self/mounts");
    let mounts = std::fs::read_to_string(mounts_path).map_err(|source| CgroupError::Io {
        op: "read",
        path: mounts_path.to_owned(),
        source,
    })?;
    parse_cgroup2_mount(&mounts).ok_or(CgroupError::NoCgroup2)
}

fn parse_cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(target))
    })
}

/// Kills every process under `path` (recursively) and waits up to 5 s for
/// the cgroup to empty. Uses `cgroup.kill` (Linux 5.14) when present, else
/// SIGKILLs each pid listed in `cgroup.procs`.
pub fn kill_all(path: &Path) -> Result<(), CgroupError> {
    if !path.exists() {
        return Ok(());
    }
    let kill_file = path.join("cgroup.kill");
    if kill_file.exists() {
        std::fs::write(&kill_file, "1").map_err(|source| CgroupError::Io {
            op: "write",
            path: kill_file.clone(),
            source,
        })?;
    }
    let timeout = Duration::from_secs(5);
    let start = Instant::now();
    loop {
        let mut alive = Vec::new();
        for dir in descendants(path)? {
            alive.extend(read_pids(&dir)?);
        }
        if alive.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(CgroupError::StillPopulated {
                path: path.to_owned(),
                waited: timeout,
            });
        }
        for pid in alive {
            if let Ok(raw) = i32::try_from(pid) {
                // ESRCH is fine: it died between reading and killing.
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills everything under `path` and removes the directories bottom-up. A
/// missing directory is not an error.
pub fn remove_tree(path: &Path) -> Result<(), CgroupError> {
    if !path.exists() {
        return Ok(());
    }
    kill_all(path)?;
    let mut dirs = descendants(path)?;
    // Deepest first.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        rmdir_retry(&dir)?;
    }
    tracing::debug!(path = %path.display(), "removed cgroup");
    Ok(())
}

fn rmdir_retry(dir: &Path) -> Result<(), CgroupError> {
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // A dying process can keep the cgroup busy for a moment.
            Err(e) if attempts < 50 && e.raw_os_error() == Some(libc::EBUSY) => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "rmdir",
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

/// `path` and every cgroup directory below it.
fn descendants(path: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "read_dir",
                    path: dir,
                    source,
                });
            }
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(entry.path());
            }
        }
        out.push(dir);
    }
    Ok(out)
}

fn read_pids(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let file = dir.join("cgroup.procs");
    match std::fs::read_to_string(&file) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Io {
            op: "read",
            path: file,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            parse_cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(parse_cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }
}
