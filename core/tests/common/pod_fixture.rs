//! One loaded datapath for the BPF_PROG_TEST_RUN tests of the pod programs' policy paths
//! (policy enforcement, policy verdicts, proxy redirection): pins under a unique root,
//! local endpoints in the endpoints map and the ipcache, the policy maps and the flow
//! event ring open, and everything unpinned when dropped.

use std::net::IpAddr;

use porin_core::datapath::{
    EndpointInfo, EventReader, PodProgram, PolicyMaps,
    abi::{FlowEvent, PolicyEpKey, PolicyKey, PolicyValue},
    test_run,
};

use super::pinned::PinnedDatapath;

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const INGRESS: u8 = 1;
pub const EGRESS: u8 = 2;

/// A local endpoint: its address, endpoint id and security identity.
pub struct LocalEndpoint {
    pub addr: IpAddr,
    pub endpoint_id: u32,
    pub identity: u32,
}

/// A [`LocalEndpoint`] of either family.
pub fn endpoint(addr: impl Into<IpAddr>, endpoint_id: u32, identity: u32) -> LocalEndpoint {
    LocalEndpoint {
        addr: addr.into(),
        endpoint_id,
        identity,
    }
}

/// A datapath loaded with the given load-time switches.
pub struct PodFixture {
    pub dp: PinnedDatapath,
    pub policy: PolicyMaps,
    events: EventReader,
    _rt: tokio::runtime::Runtime,
}

impl PodFixture {
    /// Loads the programs (`tag` names the pin root and the assertion message) and puts
    /// `endpoints` in the endpoints map and the ipcache.
    pub fn load(tag: &str, switches: &[(&str, u32)], endpoints: &[LocalEndpoint]) -> Self {
        let dp = PinnedDatapath::load(
            &format!("{tag}test"),
            switches
                .iter()
                .map(|(name, value)| ((*name).to_string(), *value))
                .collect(),
        );
        let mut endpoint_map = dp.endpoints().expect("endpoints map");
        let mut ipcache = dp.ipcache().expect("ipcache");
        for ep in endpoints {
            let info = EndpointInfo {
                endpoint_id: ep.endpoint_id,
                ifindex: 100 + ep.endpoint_id,
                identity: ep.identity,
            };
            endpoint_map.upsert(ep.addr, info).expect("endpoint");
            ipcache
                .upsert(ep.addr.into(), ep.identity, 0)
                .expect("ipcache");
        }
        let policy = PolicyMaps::open(|name| dp.map_pin_path(name)).expect("policy maps");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let events = {
            let _guard = rt.enter();
            dp.event_reader().expect("event reader")
        };
        Self {
            dp,
            policy,
            events,
            _rt: rt,
        }
    }

    /// Turns default deny on for one endpoint and direction.
    pub fn default_deny(&mut self, endpoint_id: u32, direction: u8) {
        let key = PolicyEpKey {
            endpoint_id,
            direction,
            pad: [0; 3],
        };
        self.policy
            .set_default_deny(key, true)
            .expect("default deny");
    }

    /// Puts a remote address in the ipcache with `identity`.
    pub fn identity_of(&mut self, addr: IpAddr, identity: u32) {
        self.dp
            .ipcache()
            .expect("ipcache")
            .upsert(addr.into(), identity, 0)
            .expect("ipcache");
    }

    /// Packets dropped so far with `reason`, both directions.
    pub fn drops(&self, reason: u8) -> u64 {
        self.dp
            .counters()
            .expect("counters")
            .iter()
            .filter(|c| c.reason == reason)
            .map(|c| c.packets)
            .sum()
    }

    /// Writes one policy map entry.
    pub fn entry(&mut self, key: PolicyKey, value: PolicyValue) {
        self.policy.upsert(key, value).expect("policy entry");
    }

    /// Runs `program` on `packet`: its return code and the packet as it left.
    pub fn run_packet(&self, program: PodProgram, packet: &[u8]) -> (u32, Vec<u8>) {
        let fd = self.dp.program_fd(program).expect("program fd");
        let out = test_run(fd, packet).expect("BPF_PROG_TEST_RUN");
        (out.retval, out.packet)
    }

    /// Runs `program` on `packet`: its return code.
    pub fn run(&self, program: PodProgram, packet: &[u8]) -> u32 {
        self.run_packet(program, packet).0
    }

    /// The flow events emitted since the last drain.
    pub fn drain(&mut self) -> Vec<FlowEvent> {
        std::iter::from_fn(|| self.events.try_next()).collect()
    }
}

/// A policy map key.
pub fn key(endpoint_id: u32, direction: u8, identity: u32, proto: u8, dport: u16) -> PolicyKey {
    PolicyKey {
        endpoint_id,
        identity,
        dport,
        proto,
        direction,
    }
}

/// A policy map value.
pub fn value(policy_id: u32, action: u8, proxy_port: u16) -> PolicyValue {
    PolicyValue {
        policy_id,
        action,
        pad: 0,
        proxy_port,
    }
}
