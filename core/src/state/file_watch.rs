//! Polling directories for changed YAML files.
//!
//! Polling (stat every file, re-read when size or mtime moved, or when the
//! mtime is too recent to trust) is simple and works on every filesystem.

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::debug;

/// Files modified this recently are re-read even if their size and mtime did
/// not move: a second write within the mtime granularity would be missed.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// A change found by [`DirPoller::poll`].
#[derive(Debug)]
pub enum FileEvent {
    /// New or changed file, with its content.
    Changed { path: PathBuf, text: String },
    /// The file is gone.
    Removed { path: PathBuf },
    /// The file exists but cannot be read.
    Unreadable { path: PathBuf, error: io::Error },
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    hash: u64,
}

/// Watches `*.yaml` and `*.yml` files under some directories, recursively.
/// Hidden files and directories (`.name`) are ignored, which also hides the
/// temporary files of atomic writes.
pub struct DirPoller {
    roots: Vec<PathBuf>,
    files: BTreeMap<PathBuf, Fingerprint>,
}

impl DirPoller {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        DirPoller {
            roots,
            files: BTreeMap::new(),
        }
    }

    /// Changes since the previous poll (everything on the first one).
    /// Blocking: run it off the async executor.
    pub fn poll(&mut self) -> Vec<FileEvent> {
        let mut found = Vec::new();
        for root in &self.roots {
            collect_yaml(root, &mut found);
        }
        found.sort();
        found.dedup();

        let mut events = Vec::new();
        let mut seen = BTreeMap::new();
        for path in found {
            let previous = self.files.get(&path).copied();
            match read_if_changed(&path, previous) {
                Ok(Some((fingerprint, text))) => {
                    seen.insert(path.clone(), fingerprint);
                    if previous.map(|p| p.hash) != Some(fingerprint.hash) {
                        events.push(FileEvent::Changed { path, text });
                    }
                }
                Ok(None) => {
                    if let Some(previous) = previous {
                        seen.insert(path, previous);
                    }
                }
                // Vanished between listing and reading: reported as removed below.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    // Remember it so a fixed file is re-read, and keep the old
                    // objects in force meanwhile.
                    if let Some(previous) = previous {
                        seen.insert(
                            path.clone(),
                            Fingerprint {
                                modified: None,
                                ..previous
                            },
                        );
                    }
                    events.push(FileEvent::Unreadable { path, error });
                }
            }
        }
        for path in self.files.keys() {
            if !seen.contains_key(path) {
                events.push(FileEvent::Removed { path: path.clone() });
            }
        }
        self.files = seen;
        events
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            debug!(dir = %dir.display(), %error, "cannot list directory");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        // Follows symlinks, as ConfigMap volumes are made of them.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            collect_yaml(&path, out);
        } else if meta.is_file() && is_yaml(&path) {
            out.push(path);
        }
    }
}

/// Reads `path` unless its size and an old-enough mtime match `previous`.
fn read_if_changed(
    path: &Path,
    previous: Option<Fingerprint>,
) -> io::Result<Option<(Fingerprint, String)>> {
    let meta = std::fs::metadata(path)?;
    let modified = meta.modified().ok();
    if let (Some(previous), Some(modified)) = (previous, modified) {
        let settled = SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age > RACY_WINDOW);
        if previous.modified == Some(modified) && previous.len == meta.len() && settled {
            return Ok(None);
        }
    }
    let text = std::fs::read_to_string(path)?;
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    Ok(Some((
        Fingerprint {
            modified,
            len: meta.len(),
            hash: hasher.finish(),
        },
        text,
    )))
}
