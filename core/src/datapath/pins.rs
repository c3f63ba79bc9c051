//! bpffs helpers: make sure it is mounted, and remove a node's pins.

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::info;

use super::error::DatapathError;

/// Where bpffs is expected.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Mounts bpffs at /sys/fs/bpf when it is not already a bpffs (`mount -t bpf bpf /sys/fs/bpf`).
pub fn ensure_bpffs() -> Result<(), DatapathError> {
    let path = Path::new(BPFFS_ROOT);
    let err = |source: io::Error| DatapathError::Bpffs {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(fs) = statfs(path)
        && fs.filesystem_type() == BPF_FS_MAGIC
    {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(err)?;
    mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| err(e.into()))?;
    info!(path = BPFFS_ROOT, "mounted bpffs");
    Ok(())
}

/// `<pin_root>/<node>`: everything a node's agent pins.
pub fn node_pin_dir(pin_root: &Path, node: &str) -> PathBuf {
    pin_root.join(node)
}

/// Removes every pin of a node (maps, links). Unpinning a link that nobody else holds detaches
/// it. Used by sandbox teardown; a missing directory is not an error.
pub fn remove_node_pins(pin_root: &Path, node: &str) -> Result<(), DatapathError> {
    let dir = node_pin_dir(pin_root, node);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            info!(dir = %dir.display(), "removed node pins");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::PinPath {
            action: "removing",
            path: dir,
            source,
        }),
    }
}
