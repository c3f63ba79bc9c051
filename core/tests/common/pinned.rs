//! A datapath loaded under a pin root of its own and unpinned when dropped: what every
//! fixture of these tests starts from.

use std::{
    ops::Deref,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use porin_core::datapath::{Datapath, DatapathConfig, remove_node_pins};

/// The node every test datapath is.
pub const NODE: &str = "node-1";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct PinnedDatapath {
    dp: Datapath,
    pin_root: PathBuf,
}

impl PinnedDatapath {
    /// Loads `pod.o` with `switches` under `/sys/fs/bpf/porin-<tag>-<pid>-<n>`; `tag`
    /// also names the tests in the message when they do not run as root.
    pub fn load(tag: &str, switches: Vec<(String, u32)>) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "{tag} tests must run as root (they load eBPF programs)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/porin-{tag}-{}-{n}",
            std::process::id()
        ));
        let dp = Datapath::load(&DatapathConfig {
            node_name: NODE.into(),
            pin_root: pin_root.clone(),
            switches,
        })
        .unwrap_or_else(|e| panic!("loading the pod datapath: {e}"));
        Self { dp, pin_root }
    }
}

impl Deref for PinnedDatapath {
    type Target = Datapath;

    fn deref(&self) -> &Datapath {
        &self.dp
    }
}

impl Drop for PinnedDatapath {
    fn drop(&mut self) {
        let _ = remove_node_pins(&self.pin_root, NODE);
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}
