//! The endpoints of this node: ids, addresses and their record on disk.
//!
//! The record (`<state_dir>/endpoints.json`, written atomically) is how a
//! restarted agent finds its pods again: it restores IPAM from it and re-attaches
//! programs to the recorded interfaces.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::api::{EndpointInfo, EndpointState};
use crate::ipam::{Ipam, IpamError};

/// What the agent remembers about one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: u32,
    pub namespace: String,
    pub pod: String,
    pub ipv4: Ipv4Addr,
    /// Dual stack only (`enable_ipv6`): derived from `ipv4` (crate::ipam_v6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub host_ifname: String,
    pub ifindex: u32,
    pub netns: String,
    pub identity: u32,
    pub labels: Vec<String>,
    pub state: EndpointState,
    /// CNI_CONTAINERID of the sandbox the endpoint was made for (CNI-made endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

impl EndpointRecord {
    /// The pod's addresses: IPv4, then IPv6 with dual stack.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + use<> {
        std::iter::once(IpAddr::V4(self.ipv4)).chain(self.ipv6.map(IpAddr::V6))
    }

    /// The API view of the record.
    pub fn info(&self) -> EndpointInfo {
        EndpointInfo {
            id: self.id,
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            host_ifname: self.host_ifname.clone(),
            ifindex: self.ifindex,
            identity: self.identity,
            labels: self.labels.clone(),
            state: self.state,
            netns: self.netns.clone(),
            container_id: self.container_id.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    next_id: u32,
    endpoints: Vec<EndpointRecord>,
}

/// Endpoint ids, addresses and the on-disk record.
#[derive(Debug)]
pub struct EndpointManager {
    file: PathBuf,
    records: BTreeMap<(String, String), EndpointRecord>,
    next_id: u32,
    ipam: Ipam,
    /// The IPv6 pod CIDR when dual stack is on.
    pod_cidr_v6: Option<Ipv6Net>,
}

impl EndpointManager {
    /// A manager for `pod_cidr` keeping its record in `state_dir`.
    pub fn new(state_dir: &Path, pod_cidr: Ipv4Net) -> Result<Self, IpamError> {
        Ok(Self {
            file: state_dir.join("endpoints.json"),
            records: BTreeMap::new(),
            next_id: 1,
            ipam: Ipam::new(pod_cidr)?,
            pod_cidr_v6: None,
        })
    }

    /// Dual stack: endpoints also get an address of `cidr` (see [`Self::ipv6_of`]).
    #[must_use]
    pub fn with_ipv6(mut self, cidr: Option<Ipv6Net>) -> Self {
        self.pod_cidr_v6 = cidr;
        self
    }

    /// The IPv6 address going with the pod address `ipv4`; `None` without dual stack.
    pub fn ipv6_of(&self, ipv4: Ipv4Addr) -> Option<Ipv6Addr> {
        self.pod_cidr_v6
            .map(|v6| crate::ipam_v6::ipv6_of(ipv4, self.ipam.cidr(), v6))
    }

    /// Read the previous run's record. Records whose address no longer fits the
    /// pod CIDR are returned separately so the caller can remove their interfaces.
    pub fn load(&mut self) -> (Vec<EndpointRecord>, Vec<EndpointRecord>) {
        let on_disk: OnDisk = match std::fs::read(&self.file) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    warn!(file = %self.file.display(), error = %e, "endpoint record unreadable; starting without it");
                    OnDisk::default()
                }
            },
            Err(_) => OnDisk::default(),
        };
        self.next_id = on_disk.next_id.max(1);
        let mut kept = Vec::new();
        let mut stale = Vec::new();
        for record in on_disk.endpoints {
            let owner = owner(&record.namespace, &record.pod);
            match self.ipam.restore(record.ipv4, &owner) {
                Ok(()) => {
                    self.next_id = self.next_id.max(record.id + 1);
                    self.records.insert(
                        (record.namespace.clone(), record.pod.clone()),
                        record.clone(),
                    );
                    kept.push(record);
                }
                Err(e) => {
                    warn!(endpoint = %owner, error = %e, "recorded endpoint cannot be restored");
                    stale.push(record);
                }
            }
        }
        (kept, stale)
    }

    /// Write the record atomically.
    pub fn persist(&self) -> std::io::Result<()> {
        let on_disk = OnDisk {
            next_id: self.next_id,
            endpoints: self.records.values().cloned().collect(),
        };
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&on_disk)?)?;
        std::fs::rename(&tmp, &self.file)
    }

    /// An id and an address for a new endpoint.
    pub fn allocate(&mut self, namespace: &str, pod: &str) -> Result<(u32, Ipv4Addr), IpamError> {
        let ip = self.ipam.allocate(&owner(namespace, pod))?;
        let id = self.next_id;
        self.next_id += 1;
        Ok((id, ip))
    }

    /// Give back an address that was allocated but not used.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Err(e) = self.ipam.release(ip) {
            warn!(%ip, error = %e, "releasing an address that was not allocated");
        }
    }

    /// Remember an endpoint (replacing one of the same pod).
    pub fn insert(&mut self, record: EndpointRecord) {
        self.records
            .insert((record.namespace.clone(), record.pod.clone()), record);
    }

    /// Forget an endpoint and release its address.
    pub fn remove(&mut self, namespace: &str, pod: &str) -> Option<EndpointRecord> {
        let record = self
            .records
            .remove(&(namespace.to_string(), pod.to_string()))?;
        self.release(record.ipv4);
        Some(record)
    }

    pub fn get(&self, namespace: &str, pod: &str) -> Option<&EndpointRecord> {
        self.records.get(&(namespace.to_string(), pod.to_string()))
    }

    pub fn get_mut(&mut self, namespace: &str, pod: &str) -> Option<&mut EndpointRecord> {
        self.records
            .get_mut(&(namespace.to_string(), pod.to_string()))
    }

    pub fn by_ip(&self, ip: IpAddr) -> Option<&EndpointRecord> {
        self.records
            .values()
            .find(|r| IpAddr::V4(r.ipv4) == ip || r.ipv6.map(IpAddr::V6) == Some(ip))
    }

    pub fn iter(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.records.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut EndpointRecord> {
        self.records.values_mut()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The node's router address in the pod CIDR.
    pub fn router_ip(&self) -> Ipv4Addr {
        self.ipam.router_ip()
    }

    /// The pod CIDR.
    pub fn pod_cidr(&self) -> Ipv4Net {
        self.ipam.cidr()
    }
}

fn owner(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u32, pod: &str, ip: Ipv4Addr) -> EndpointRecord {
        EndpointRecord {
            id,
            namespace: "payments".to_string(),
            pod: pod.to_string(),
            ipv4: ip,
            ipv6: None,
            host_ifname: format!("lxc{id}"),
            ifindex: 10 + id,
            netns: format!("/run/netns/{pod}"),
            identity: 300,
            labels: vec![],
            state: EndpointState::Ready,
            container_id: None,
        }
    }

    #[test]
    fn records_survive_a_restart_and_addresses_are_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cidr: Ipv4Net = "10.200.1.0/24".parse().expect("cidr");
        let mut first = EndpointManager::new(dir.path(), cidr).expect("ipam");
        let (id_a, ip_a) = first.allocate("payments", "a").expect("ip");
        first.insert(record(id_a, "a", ip_a));
        let (id_b, ip_b) = first.allocate("payments", "b").expect("ip");
        first.insert(record(id_b, "b", ip_b));
        first.persist().expect("persist");

        let mut second = EndpointManager::new(dir.path(), cidr).expect("ipam");
        let (kept, stale) = second.load();
        assert_eq!(kept.len(), 2);
        assert!(stale.is_empty());
        let (id_c, ip_c) = second.allocate("payments", "c").expect("ip");
        assert!(id_c > id_b, "ids keep growing across restarts");
        assert!(ip_c != ip_a && ip_c != ip_b, "restored addresses are taken");
        assert_eq!(
            second.by_ip(IpAddr::V4(ip_b)).map(|r| r.pod.as_str()),
            Some("b")
        );
    }

    #[test]
    fn records_outside_a_new_cidr_are_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first =
            EndpointManager::new(dir.path(), "10.200.1.0/24".parse().expect("cidr")).expect("ipam");
        let (id, ip) = first.allocate("payments", "a").expect("ip");
        first.insert(record(id, "a", ip));
        first.persist().expect("persist");
        let mut second =
            EndpointManager::new(dir.path(), "10.200.9.0/24".parse().expect("cidr")).expect("ipam");
        let (kept, stale) = second.load();
        assert!(kept.is_empty());
        assert_eq!(stale.len(), 1);
    }
}
