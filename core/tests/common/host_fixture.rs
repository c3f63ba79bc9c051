//! The pod datapath and the node device program (`bpf/host.c`) of one node, loaded under a
//! unique pin root for the NodePort BPF_PROG_TEST_RUN tests (IPv4 and IPv6), and
//! everything unpinned when dropped.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use porin_core::datapath::{
    Datapath, DatapathConfig, EndpointInfo, Endpoints, HostDatapath, MAP_ENDPOINTS, PodProgram,
    remove_node_pins, test_run,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct HostFixture {
    pub dp: Datapath,
    pub host: HostDatapath,
    pin_root: PathBuf,
}

impl HostFixture {
    /// Loads both program sets with `switches`; `tag` names the pin root.
    pub fn load(tag: &str, switches: &[(String, u32)]) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "NodePort BPF_PROG_TEST_RUN tests must run as root (they load eBPF programs)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/porin-{tag}-{}-{n}",
            std::process::id()
        ));
        let dp = Datapath::load(&DatapathConfig {
            node_name: "node-1".into(),
            pin_root: pin_root.clone(),
            switches: switches.to_vec(),
        })
        .unwrap_or_else(|e| panic!("loading the pod datapath: {e}"));
        let host = HostDatapath::load(dp.node_pin_dir(), switches)
            .unwrap_or_else(|e| panic!("loading host.o: {e:?}"));
        Self { dp, host, pin_root }
    }

    /// Makes `addr` a local endpoint's address (a local backend).
    pub fn local_endpoint(&self, addr: IpAddr) {
        let mut eps = Endpoints::open(&self.dp.map_pin_path(MAP_ENDPOINTS)).expect("endpoints map");
        eps.upsert(
            addr,
            EndpointInfo {
                endpoint_id: 9,
                ifindex: 1,
                identity: 1000,
            },
        )
        .expect("endpoint");
    }

    /// Runs the node device program on `packet`: (TC verdict, packet after it).
    pub fn host(&self, packet: &[u8]) -> (u32, Vec<u8>) {
        let fd = self.host.program_fd().expect("host program fd");
        let out = test_run(fd, packet).expect("BPF_PROG_TEST_RUN");
        (out.retval, out.packet)
    }

    /// Runs the pod program's from-pod side on `packet`.
    pub fn run_from_pod(&self, packet: &[u8]) -> (u32, Vec<u8>) {
        let fd = self
            .dp
            .program_fd(PodProgram::FromPod)
            .expect("pod program fd");
        let out = test_run(fd, packet).expect("BPF_PROG_TEST_RUN");
        (out.retval, out.packet)
    }
}

impl Drop for HostFixture {
    fn drop(&mut self) {
        let _ = remove_node_pins(&self.pin_root, "node-1");
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}
