//! The pod datapath and the node device program (`bpf/host.c`) of one node, loaded under a
//! unique pin root for the NodePort BPF_PROG_TEST_RUN tests (IPv4 and IPv6), and
//! everything unpinned when dropped.

use std::net::IpAddr;

use porin_core::datapath::{
    EndpointInfo, Endpoints, HostDatapath, MAP_ENDPOINTS, PodProgram, test_run,
};

use super::pinned::PinnedDatapath;

pub struct HostFixture {
    pub dp: PinnedDatapath,
    pub host: HostDatapath,
}

impl HostFixture {
    /// Loads both program sets with `switches`; `tag` names the pin root.
    pub fn load(tag: &str, switches: &[(String, u32)]) -> Self {
        let dp = PinnedDatapath::load(tag, switches.to_vec());
        let host = HostDatapath::load(dp.node_pin_dir(), switches)
            .unwrap_or_else(|e| panic!("loading host.o: {e:?}"));
        Self { dp, host }
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
