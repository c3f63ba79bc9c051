//! The named container ports the proxy resolves `toPorts` port names against
//! (`port: http`), as the policy engine does for the datapath: ingress rules
//! against the destination pod's own ports, egress rules against the names
//! that have one number on every pod of the cluster declaring them.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;
use porin_plugin_sdk::ClusterState;

use crate::compute::L4;
use crate::enforce::desired::{IdentityInput, NamedPorts, unique_named_ports};
use crate::model::Protocol;

/// Port names of the cluster's pods, by pod address, and the cluster-wide ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedPortView {
    /// Each pod address's named container ports (`http` -> 8080).
    pub by_address: HashMap<IpAddr, BTreeMap<String, u16>>,
    /// The names with one number wherever a pod declares them (egress rules).
    pub cluster: BTreeMap<String, u16>,
}

impl NamedPortView {
    /// The view of the cluster state: every pod address with the named ports of its pod,
    /// and the unambiguous names over the identities' named ports.
    pub fn of_cluster(
        state: &dyn ClusterState,
        pods: &[Pod],
        identities: &[IdentityInput],
    ) -> Self {
        let mut by_pod: HashMap<(&str, &str), BTreeMap<String, u16>> = HashMap::new();
        for pod in pods {
            let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name)
            else {
                continue;
            };
            let ports = container_ports(pod);
            if !ports.is_empty() {
                by_pod.insert((namespace.as_str(), name.as_str()), ports);
            }
        }
        let by_address = state
            .pod_addresses()
            .into_iter()
            .filter_map(|a| {
                let ports = by_pod.get(&(a.namespace.as_str(), a.pod_name.as_str()))?;
                Some((a.ip, ports.clone()))
            })
            .collect();
        let mut all = NamedPorts::new();
        for identity in identities {
            for (name, ports) in &identity.named_ports {
                all.entry(name.clone()).or_default().extend(ports);
            }
        }
        Self {
            by_address,
            cluster: unique_named_ports(&all),
        }
    }

    /// The L4 view of a TCP connection to `dst`, with the port names that resolve there.
    pub fn l4(&self, dst: SocketAddr) -> L4 {
        L4 {
            port: Some((dst.port(), Protocol::Tcp)),
            named_ports: self.by_address.get(&dst.ip()).cloned().unwrap_or_default(),
            cluster_named_ports: self.cluster.clone(),
        }
    }
}

/// A pod's named container ports.
pub fn container_ports(pod: &Pod) -> BTreeMap<String, u16> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|port| Some((port.name.clone()?, u16::try_from(port.container_port).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l4_of_a_connection_carries_the_destinations_names() {
        let pod: IpAddr = "10.0.0.7".parse().expect("ip");
        let view = NamedPortView {
            by_address: HashMap::from([(pod, BTreeMap::from([("http".to_owned(), 8080)]))]),
            cluster: BTreeMap::from([("metrics".to_owned(), 9090)]),
        };
        let l4 = view.l4(SocketAddr::new(pod, 8080));
        assert_eq!(l4.port, Some((8080, Protocol::Tcp)));
        assert_eq!(l4.named_ports.get("http"), Some(&8080));
        assert_eq!(l4.cluster_named_ports.get("metrics"), Some(&9090));
        let elsewhere = view.l4("10.0.0.8:8080".parse().expect("addr"));
        assert!(elsewhere.named_ports.is_empty());
    }
}
