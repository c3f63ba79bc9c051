//! The success result of ADD (and the `prevResult` CHECK compares with).

use std::net::Ipv4Addr;

use porin_core::api::EndpointInfo;
use porin_core::endpoint::links::{POD_GATEWAY, POD_GATEWAY_V6};
use serde::{Deserialize, Serialize};

use crate::config::Dns;
use crate::version;

/// A CNI result, as the spec lays it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

/// One interface the plugin made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The container's network namespace, for interfaces inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address the plugin assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in results before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

impl CniResult {
    /// The result for a pod endpoint: the node side of the veth, the pod side in
    /// its namespace with the pod's /32, and the default route via the link-local
    /// gateway the agent pins (see `porin_core::endpoint::links`).
    pub fn for_endpoint(
        cni_version: &str,
        endpoint: &EndpointInfo,
        ifname: &str,
        netns: &str,
        dns: Option<&Dns>,
    ) -> Self {
        let gateway = POD_GATEWAY.to_string();
        let mut ips = vec![IpConfig {
            version: version::ips_carry_version(cni_version).then(|| "4".to_string()),
            address: format!("{}/32", endpoint.ipv4),
            gateway: Some(gateway.clone()),
            interface: Some(1),
        }];
        let mut routes = vec![Route {
            dst: "0.0.0.0/0".to_string(),
            gw: Some(gateway),
        }];
        // Dual stack: the IPv6 address and default route after the IPv4 ones.
        if let Some(v6) = endpoint.ipv6 {
            let gateway = POD_GATEWAY_V6.to_string();
            ips.push(IpConfig {
                version: version::ips_carry_version(cni_version).then(|| "6".to_string()),
                address: format!("{v6}/128"),
                gateway: Some(gateway.clone()),
                interface: Some(1),
            });
            routes.push(Route {
                dst: "::/0".to_string(),
                gw: Some(gateway),
            });
        }
        Self {
            cni_version: cni_version.to_string(),
            interfaces: vec![
                Interface {
                    name: endpoint.host_ifname.clone(),
                    mac: None,
                    sandbox: None,
                },
                Interface {
                    name: ifname.to_string(),
                    mac: None,
                    sandbox: Some(netns.to_string()),
                },
            ],
            ips,
            routes,
            dns: dns.cloned().unwrap_or_default(),
        }
    }

    /// The IPv4 addresses of the interface named `ifname` (or of any interface
    /// when the IP configs name none).
    pub fn ipv4_of(&self, ifname: &str) -> Vec<Ipv4Addr> {
        self.ips
            .iter()
            .filter(|ip| {
                ip.interface
                    .and_then(|i| self.interfaces.get(i))
                    .is_none_or(|iface| iface.name == ifname)
            })
            .filter_map(|ip| ip.address.split('/').next()?.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use porin_core::api::EndpointState;

    use super::*;

    fn endpoint() -> EndpointInfo {
        EndpointInfo {
            id: 7,
            namespace: "shop".to_string(),
            pod: "web".to_string(),
            ipv4: Ipv4Addr::new(10, 200, 1, 5),
            ipv6: None,
            host_ifname: "lxc0123456789a".to_string(),
            ifindex: 12,
            identity: 300,
            labels: vec![],
            state: EndpointState::Ready,
            netns: "/var/run/netns/x".to_string(),
            container_id: Some("c1".to_string()),
        }
    }

    #[test]
    fn the_result_points_the_pod_address_at_the_sandbox_interface() {
        let r = CniResult::for_endpoint("1.0.0", &endpoint(), "eth0", "/var/run/netns/x", None);
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["cniVersion"], "1.0.0");
        assert_eq!(json["interfaces"][1]["sandbox"], "/var/run/netns/x");
        assert_eq!(json["ips"][0]["address"], "10.200.1.5/32");
        assert_eq!(json["ips"][0]["interface"], 1);
        assert!(json["ips"][0].get("version").is_none());
        assert_eq!(json["routes"][0]["gw"], "169.254.1.1");
        assert_eq!(r.ipv4_of("eth0"), vec![Ipv4Addr::new(10, 200, 1, 5)]);
        assert!(r.ipv4_of("net1").is_empty());
    }

    #[test]
    fn results_before_1_0_carry_the_ip_version() {
        let r = CniResult::for_endpoint("0.4.0", &endpoint(), "eth0", "/x", None);
        assert_eq!(r.ips[0].version.as_deref(), Some("4"));
    }

    #[test]
    fn dual_stack_results_list_the_ipv6_address_and_route_second() {
        let mut e = endpoint();
        e.ipv6 = Some("fd00:10:1::5".parse().expect("v6"));
        let r = CniResult::for_endpoint("0.4.0", &e, "eth0", "/x", None);
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["ips"][1]["address"], "fd00:10:1::5/128");
        assert_eq!(json["ips"][1]["version"], "6");
        assert_eq!(json["ips"][1]["gateway"], "fe80::1");
        assert_eq!(json["routes"][1]["dst"], "::/0");
        assert_eq!(r.ipv4_of("eth0"), vec![Ipv4Addr::new(10, 200, 1, 5)]);
    }
}
