//! A datapath loaded under its own pin root, for the lb plugin's tests against the real
//! kernel; removed on drop.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::PathBuf;

// Core's BPF_PROG_TEST_RUN helpers: packet builders and the hashes the programs use.
#[path = "../../../../core/tests/common/lb_hash.rs"]
pub mod lb_hash;
#[path = "../../../../core/tests/common/packet.rs"]
pub mod packet;
#[path = "../../../../core/tests/common/packet6.rs"]
pub mod packet6;
use std::sync::atomic::{AtomicU32, Ordering};

use porin_core::datapath::{Datapath, DatapathConfig, remove_node_pins};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Node name every test datapath uses.
pub const NODE: &str = "node-1";

pub struct TestDatapath {
    pub dp: Datapath,
    pub pin_root: PathBuf,
}

impl TestDatapath {
    /// Loads `pod.o` with `switches` under a fresh pin root named after `tag`.
    pub fn load(tag: &str, switches: &[(&str, u32)]) -> Self {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "these tests must run as root (they load eBPF programs)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/porin-lbplugin-{tag}-{}-{n}",
            std::process::id()
        ));
        let dp = Self::reload(&pin_root, switches);
        Self { dp, pin_root }
    }

    /// Loads `pod.o` again under the same pin root (a restarted agent).
    pub fn reload(pin_root: &std::path::Path, switches: &[(&str, u32)]) -> Datapath {
        let config = DatapathConfig {
            node_name: NODE.into(),
            pin_root: pin_root.to_path_buf(),
            switches: switches
                .iter()
                .map(|(name, value)| ((*name).to_string(), *value))
                .collect(),
        };
        Datapath::load(&config).unwrap_or_else(|e| panic!("loading the datapath: {e}"))
    }

    /// `<pin_root>/<node>/maps`.
    pub fn maps_dir(&self) -> PathBuf {
        self.pin_root.join(NODE).join("maps")
    }
}

impl Drop for TestDatapath {
    fn drop(&mut self) {
        let _ = remove_node_pins(&self.pin_root, NODE);
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}
